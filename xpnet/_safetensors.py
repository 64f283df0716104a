"""A minimal reader and writer for the safetensors format (float32/float64 only).

Layout: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON header mapping
each tensor name to ``{"dtype", "shape", "data_offsets"}`` (plus ``"__metadata__"``, a
string-to-string map), then the raw little-endian tensor bytes. Reading parses JSON and
copies bytes into NumPy arrays: nothing in a file is ever executed.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from .errors import XpnetValueError

_TO_CODE: dict[np.dtype, str] = {np.dtype("<f4"): "F32", np.dtype("<f8"): "F64"}
_FROM_CODE: dict[str, np.dtype] = {code: dtype for dtype, code in _TO_CODE.items()}
#: The longest header read or written, in bytes. A checkpoint's header holds the arrays'
#: entries and the metadata (its probe at most 64 rows): a few hundred kilobytes.
MAX_HEADER = 16 * 1024 * 1024
#: The most JSON values a header may hold (counted from its separators before it is
#: parsed), so that parsing it stays within about 100 MB whatever its bytes.
MAX_HEADER_VALUES = 1 << 20


def header_length(start: bytes, file_size: int) -> int:
    """The header length a file's first 8 bytes give, checked before the rest is read.

    It must fit the file's size and :data:`MAX_HEADER`.

    Parameters
    ----------
    start : bytes
        The file's first 8 bytes (fewer when the file is shorter).
    file_size : int
        The file's size in bytes.

    Returns
    -------
    int
        The header's length in bytes.

    Raises
    ------
    FormatError
        A file too short, or a length that the file or the bound does not allow.
    """
    if len(start) < 8:
        raise FormatError(f"file too short ({file_size} bytes) to hold a safetensors header")
    (n,) = struct.unpack("<Q", start[:8])
    if 8 + n > file_size:
        raise FormatError(f"header length {n} does not fit a file of {file_size} bytes")
    if n > MAX_HEADER:
        raise FormatError(f"a header of {n} bytes, more than the {MAX_HEADER} read")
    return n


def _check_header(raw: bytes) -> None:
    """Refuse a header too long or with too many values to parse cheaply."""
    if len(raw) > MAX_HEADER:
        raise FormatError(f"a header of {len(raw)} bytes, more than the {MAX_HEADER} read")
    values = raw.count(b",") + raw.count(b"[") + raw.count(b":")  # each value follows one
    if values > MAX_HEADER_VALUES:
        raise FormatError(
            f"a header of about {values} JSON values, more than the {MAX_HEADER_VALUES} read"
        )


class FormatError(XpnetValueError):
    """The bytes are not a safetensors file this reader accepts."""


def pack(tensors: dict[str, np.ndarray]) -> tuple[dict[str, dict], bytes]:
    """Lay out float arrays as a safetensors data section.

    Parameters
    ----------
    tensors : dict of str to numpy.ndarray
        Arrays of float32 or float64, by name.

    Returns
    -------
    entries : dict of str to dict
        The header entry of each array: ``dtype``, ``shape``, ``data_offsets``.
    data : bytes
        The arrays' little-endian bytes, one after the other.

    Raises
    ------
    TypeError
        An array is neither float32 nor float64.
    """
    entries = layout(tensors)
    chunks = []
    for array in tensors.values():
        array = np.asarray(array)
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        chunks.append(little.tobytes())  # in C order, whatever the strides
    return entries, b"".join(chunks)


def layout(tensors: dict[str, np.ndarray]) -> dict[str, dict]:
    """The header entries of float arrays laid out one after the other, in the dict's order.

    :func:`decode` returns its arrays in the order of their offsets, so the layout of a
    decoded file is the layout it was written with.

    Parameters
    ----------
    tensors : dict of str to numpy.ndarray
        Arrays of float32 or float64, by name.

    Returns
    -------
    dict of str to dict
        The header entry of each array: ``dtype``, ``shape``, ``data_offsets``.

    Raises
    ------
    TypeError
        An array is neither float32 nor float64.
    """
    entries, offset = {}, 0
    for name, array in tensors.items():
        dtype = np.asarray(array).dtype.newbyteorder("<")
        if dtype not in _TO_CODE:
            raise TypeError(f"tensor {name!r}: dtype {dtype} is not float32/float64")
        size = math.prod(np.shape(array)) * dtype.itemsize
        entries[name] = {
            "dtype": _TO_CODE[dtype],
            "shape": list(np.shape(array)),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    return entries


def assemble(entries: dict[str, dict], data: bytes, metadata: dict[str, str]) -> bytes:
    """The bytes of a safetensors file.

    Parameters
    ----------
    entries : dict of str to dict
        Header entries, as :func:`pack` returns them.
    data : bytes
        The data section, as :func:`pack` returns it.
    metadata : dict of str to str
        Stored as the header's ``__metadata__``.

    Returns
    -------
    bytes
        The header length, the JSON header (padded to 8 bytes) and the data.
    """
    header = json.dumps({"__metadata__": metadata, **entries}, separators=(",", ":")).encode()
    _check_header(header)  # never write what decode would refuse
    header += b" " * (-len(header) % 8)  # align the data section to 8 bytes
    return struct.pack("<Q", len(header)) + header + data


def decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str], bytes]:
    """Parse a safetensors file's bytes, checking every offset and shape.

    Parameters
    ----------
    blob : bytes
        The whole file.

    Returns
    -------
    tensors : dict of str to numpy.ndarray
        The arrays, copied out of ``blob``.
    metadata : dict of str to str
        The header's ``__metadata__``.
    data : bytes
        The data section, for a checksum.

    Raises
    ------
    FormatError
        The bytes are not a well-formed safetensors file of float32/float64 arrays.
    """
    n = header_length(blob[:8], len(blob))
    _check_header(blob[8 : 8 + n])
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise FormatError(f"header is not valid JSON ({err})") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError("__metadata__ must map strings to strings")
    data = blob[8 + n :]
    tensors, end = {}, 0
    # by both offsets: a tensor of no elements ([k, k]) comes before one starting at k
    spans = sorted(((tuple(_offsets(item)), item) for item in header.items()), key=lambda s: s[0])
    for (begin, stop), (name, info) in spans:
        code = info.get("dtype")
        shape = info.get("shape")
        if code not in _FROM_CODE:
            raise FormatError(f"tensor {name!r}: unsupported dtype {code!r}")
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
        ):
            raise FormatError(f"tensor {name!r}: bad shape {shape!r}")
        dtype = _FROM_CODE[code]
        size = math.prod(shape) * dtype.itemsize  # exact: no int64 overflow
        if begin != end or stop - begin != size or stop > len(data):
            raise FormatError(
                f"tensor {name!r}: offsets {[begin, stop]} do not match its shape {shape} "
                f"or the data section ({len(data)} bytes)"
            )
        tensors[name] = (
            np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=begin)
            .reshape(shape)
            .copy()
        )
        end = stop
    if end != len(data):
        raise FormatError(f"data section has {len(data) - end} trailing bytes")
    return tensors, metadata, data


def _offsets(item):
    name, info = item
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}")
    return offsets
