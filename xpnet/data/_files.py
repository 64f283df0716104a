"""What every reader of a data file shares: checksums and the input policy.

The policy: only regular files are opened; the sizes a header claims are checked against
the file and the memory budget before anything is allocated or inflated.
"""

from __future__ import annotations

import hashlib
import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .._io import (
    BOMB_FLOOR,
    MAX_EXPANSION,
    MAX_INPUT_BYTES_ENV,
    NotRegularFileError,
    max_input_bytes,
    open_regular,
)
from ..errors import DataError, DataFileNotFoundError


def _update(digest, path):
    with open_regular(path) as fh:  # a device such as /dev/zero would be hashed forever
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    str
        Hexadecimal.

    Raises
    ------
    OSError
        The file cannot be read, or is not a regular file
        (:class:`xpnet._io.NotRegularFileError`).
    """
    digest = hashlib.sha256()
    _update(digest, path)
    return digest.hexdigest()


def folder_sha256(folder, names) -> str:
    """One SHA-256 over the named files of a folder that exist: each name, then its bytes.

    Parameters
    ----------
    folder : str or Path
        The folder.
    names : iterable of str
        File names, in the order they are hashed.

    Returns
    -------
    str
        Hexadecimal.
    """
    digest = hashlib.sha256()
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode())
            _update(digest, path)
    return digest.hexdigest()


# -- the input policy: every reader of a data file goes through these --------------------
def check_claim(source, claimed, *, holds=None, compressed=None, in_memory=True) -> None:
    """Refuse a header's claimed size before anything of that size is allocated or inflated.

    Parameters
    ----------
    source : str
        What names the file (and member) in the message.
    claimed : int
        Bytes the header says the data take.
    holds : int, optional
        Bytes the file actually holds after the header (uncompressed data): must equal
        ``claimed``.
    compressed : int, optional
        Bytes of the compressed stream (gzip, a zip member): a ``claimed`` above
        :data:`~xpnet._io.BOMB_FLOOR` may be at most :data:`~xpnet._io.MAX_EXPANSION` times
        that.
    in_memory : bool
        Whether the data will be held in memory (then at most
        :func:`~xpnet._io.max_input_bytes`), rather than memory-mapped.

    Raises
    ------
    DataError
        The claim does not match the file, expands beyond :data:`~xpnet._io.MAX_EXPANSION`,
        or exceeds :func:`~xpnet._io.max_input_bytes`.
    """
    if holds is not None and claimed != holds:
        raise DataError(
            f"{source}: the header claims {claimed} bytes of data, the file holds {holds}"
        )
    if compressed is not None and claimed > max(MAX_EXPANSION * compressed, BOMB_FLOOR):
        raise DataError(
            f"{source}: {compressed} compressed bytes claim {claimed} bytes of data, more "
            f"than {MAX_EXPANSION} times as many; refused as a decompression bomb "
            f"(decompress it first if it is genuine: an uncompressed file is checked against "
            f"its size instead)"
        )
    budget = max_input_bytes()
    if in_memory and claimed > budget:
        raise DataError(
            f"{source}: {claimed} bytes of data would not fit the memory budget of {budget} "
            f"bytes (this machine's memory, or {MAX_INPUT_BYTES_ENV}); for data larger than "
            f"memory use a folder of X.npy and y.npy, which is memory-mapped"
        )


def check_finite_rows(source, block, numbers) -> np.ndarray:
    """``block`` if every value is finite, else a DataError naming the first bad row.

    Parameters
    ----------
    source : str or Path
        What names the file in the message.
    block : numpy.ndarray
        ``(rows, F)`` values read from it.
    numbers : range or numpy.ndarray
        The block's row numbers in the file.

    Returns
    -------
    numpy.ndarray
        ``block``.

    Raises
    ------
    DataError
        A NaN or infinite value, named by its row in the file.
    """
    if not np.all(np.isfinite(block)):
        row = int(numbers[int(np.argwhere(~np.isfinite(block))[0][0])])
        raise DataError(f"{source}: row {row} holds a NaN or infinite value")
    return block


def _npy_header(fh, source):
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream at ``fh``, after which
    ``fh`` stands at the first data byte; NumPy's own header reader, which bounds the
    header's length."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f".npy format version {version} is not read here (1.0 and 2.0 are)")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, tokenize.TokenError) as err:
        # NumPy parses the header as a Python literal: a mangled one fails in its tokenizer
        raise DataError(f"{source}: not a readable .npy array ({err})") from None
    if dtype.hasobject:
        raise DataError(f"{source}: holds Python objects, which are never unpickled")
    return shape, fortran, dtype


def read_exactly(fh, size) -> bytearray:
    """``size`` bytes of ``fh`` in one buffer, read 16 MB at a time.

    A compressed stream is never inflated further than its checked claim, and memory
    peaks at ``size`` plus one chunk.

    Parameters
    ----------
    fh : binary file object
        Positioned at the data.
    size : int
        Bytes to read (already checked by :func:`check_claim`).

    Returns
    -------
    bytearray
        The bytes.

    Raises
    ------
    EOFError
        The stream ends first.
    """
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = fh.readinto(view[done : done + (1 << 24)])
        if not got:
            raise EOFError(f"the data end after {done} of the {size} bytes the header claims")
        done += got
    return buffer


def _npy_body(fh, shape, fortran, dtype):
    """The array body at ``fh`` (its size already checked), read into one buffer."""
    buffer = read_exactly(fh, math.prod(shape) * dtype.itemsize)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def read_npy(path, *, mmap=False) -> np.ndarray:
    """A ``.npy`` array, its header checked against the file before anything is read.

    Parameters
    ----------
    path : str or Path
        The file; only a regular file is opened.
    mmap : bool
        Map the data read-only instead of reading them (no memory budget then).

    Returns
    -------
    numpy.ndarray
        The array (a read-only ``numpy.memmap`` with ``mmap``).

    Raises
    ------
    DataFileNotFoundError
        Nothing at ``path``.
    DataError
        Not a regular file, a malformed header, object arrays, a size the file does not
        hold, or more than the memory budget (:func:`check_claim`).
    """
    try:
        with open_regular(path) as fh:
            shape, fortran, dtype = _npy_header(fh, path)
            claimed = math.prod(shape) * dtype.itemsize
            holds = os.fstat(fh.fileno()).st_size - fh.tell()
            check_claim(path, claimed, holds=holds, in_memory=not mmap)
            if mmap:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            return _npy_body(fh, shape, fortran, dtype)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataFileNotFoundError(f"{path}: no such file", filename=str(path)) from None
    except (NotRegularFileError, IsADirectoryError):
        raise DataError(f"{path}: not a regular file") from None
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None


def read_npz(path, names) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` file, each member's sizes checked before it is inflated.

    Parameters
    ----------
    path : str or Path
        The file; only a regular file is opened.
    names : iterable of str
        The arrays to read; those the file does not hold are left out.

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays found, by name.

    Raises
    ------
    DataError
        Not a regular file or not a zip; a member whose ``.npy`` header does not match its
        recorded size, expands more than :data:`~xpnet._io.MAX_EXPANSION` times, or
        exceeds the memory budget.
    """
    found = {}
    try:
        with open_regular(path) as fh, zipfile.ZipFile(fh) as archive:
            members = {info.filename: info for info in archive.infolist()}
            for name in names:
                info = members.get(f"{name}.npy")
                if info is None:
                    continue
                source = f"{path} ({name})"
                compressed = (
                    info.compress_size if info.compress_type != zipfile.ZIP_STORED else None
                )
                check_claim(source, info.file_size, compressed=compressed)
                with archive.open(info) as member:
                    shape, fortran, dtype = _npy_header(member, source)
                    claimed = math.prod(shape) * dtype.itemsize
                    check_claim(source, claimed, holds=info.file_size - member.tell())
                    found[name] = _npy_body(member, shape, fortran, dtype)
    except DataError:
        raise
    except (NotRegularFileError, IsADirectoryError):
        raise DataError(f"{path}: not a regular file") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    return found
