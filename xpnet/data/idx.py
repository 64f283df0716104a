"""MNIST's IDX files (also Fashion-MNIST, KMNIST, EMNIST): the official train and test split.

A folder with the four files under their standard names, gzipped or not::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian 32-bit size per dimension, then the values in C order. The
header is checked against the file's size before anything is allocated.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .._io import NotRegularFileError, open_regular
from ..errors import DataError, DataFileNotFoundError
from ._files import check_claim, folder_sha256, read_exactly

__all__ = [
    "IDX_FILES",
    "idx_folder_sha256",
    "is_idx_folder",
    "load_idx_folder",
    "read_idx",
    "stores_bytes",
]

#: The four files of an IDX dataset folder, by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _find(folder, stem):
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def is_idx_folder(path) -> bool:
    """Whether ``path`` is a folder holding the IDX training images under their standard name.

    Parameters
    ----------
    path : str or Path
        A dataset spec.

    Returns
    -------
    bool
        True for a folder with ``train-images-idx3-ubyte`` (or ``.gz``).
    """
    path = Path(path)
    return path.is_dir() and _find(path, IDX_FILES["train_images"]) is not None


def stores_bytes(folder) -> bool:
    """Whether a folder's IDX training images are 8-bit (type code 0x08), from the header.

    Parameters
    ----------
    folder : str or Path
        An IDX dataset folder.

    Returns
    -------
    bool
        False when the file is missing, unreadable or of another type.
    """
    path = _find(Path(folder), IDX_FILES["train_images"])
    if path is None:
        return False
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(4)[:3] == b"\x00\x00\x08"
    except (OSError, EOFError):
        return False


def read_idx(path) -> np.ndarray:
    """The array stored in one IDX file (gzipped when its name ends in ``.gz``).

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    numpy.ndarray
        Of the file's type (native byte order) and shape.

    Raises
    ------
    DataError
        A bad magic number, an unknown type, or sizes that do not match the data.
    """
    path = Path(path)
    try:
        with open_regular(path) as raw:
            on_disk = os.fstat(raw.fileno()).st_size
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw) as fh:
                    return _read_idx_stream(fh, path, compressed=on_disk)
            return _read_idx_stream(raw, path, on_disk=on_disk)
    except DataError:
        raise
    except (NotRegularFileError, IsADirectoryError):
        raise DataError(f"{path}: not a regular file") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def _read_idx_stream(fh, path, *, on_disk=None, compressed=None):
    """The IDX array at ``fh``: its header read, its claimed size checked (against the
    file's size, or for a gzip stream its expansion and the memory budget), then exactly
    that many bytes read, so that a crafted header allocates or inflates nothing more."""
    magic = fh.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = magic[2], magic[3]
    if code not in _TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
    dims = fh.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise DataError(f"{path}: an IDX header of {ndim} dimensions does not fit the file")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    holds = None if on_disk is None else on_disk - 4 - 4 * ndim
    check_claim(
        f"{path} (shape {shape}, {dtype.name})", expected, holds=holds, compressed=compressed
    )
    try:
        buffer = read_exactly(fh, expected)
    except EOFError:
        buffer = None
    if buffer is None or fh.read(1):
        raise DataError(
            f"{path}: the header says {shape} values of {dtype.name} ({expected} bytes), the "
            f"stream holds {'fewer' if buffer is None else 'more'}"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)  # bytes: no copy


def idx_folder_sha256(folder) -> str:
    """One SHA-256 over the four files of an IDX folder (their names and bytes).

    Parameters
    ----------
    folder : str or Path
        The folder.

    Returns
    -------
    str
        Hexadecimal.
    """
    folder = Path(folder)
    names = [path.name for stem in IDX_FILES.values() if (path := _find(folder, stem))]
    return folder_sha256(folder, names)


def load_idx_folder(folder):
    """The official train and test split: images flattened to rows, values as stored.

    Parameters
    ----------
    folder : str or Path
        A folder with the four IDX files.

    Returns
    -------
    X_train : numpy.ndarray
        ``(N, H·W)`` float64 training features.
    y_train : numpy.ndarray
        ``(N,)`` training labels, in their stored type.
    X_test : numpy.ndarray
        The test features.
    y_test : numpy.ndarray
        The test labels.
    bits8 : bool
        Whether both image files hold 8-bit pixels (0..255), whose scale the model divides
        by.

    Raises
    ------
    DataFileNotFoundError
        One of the four files is missing.
    DataError
        A file is malformed, or images and labels disagree in number.
    """
    folder = Path(folder)
    arrays = {}
    for role, stem in IDX_FILES.items():
        path = _find(folder, stem)
        if path is None:
            raise DataFileNotFoundError(
                f"{folder}: no {stem} (or {stem}.gz); an IDX dataset folder holds "
                f"{', '.join(IDX_FILES.values())}",
                filename=str(folder / stem),
            )
        arrays[role] = read_idx(path)
    out = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{folder}: {images.shape[0]} {part} images but labels of shape {labels.shape}"
            )
        X = images.reshape(images.shape[0], -1).astype(np.float64)
        out += [X, labels]  # as stored: the caller checks them as every reader's labels
    bits8 = arrays["train_images"].dtype == np.uint8 and arrays["test_images"].dtype == np.uint8
    return (*out, bits8)
