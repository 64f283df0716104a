"""Datasets larger than memory: a folder of ``.npy`` files, read memory-mapped.

The folder holds ``X.npy`` (features, ``(N, F)``, float32 or float64) and ``y.npy`` (class
labels, ``(N,)``), as ``numpy.save`` writes them, and optionally ``X_test.npy`` and
``y_test.npy``. The features stay on disk: training reads one batch at a time from the
map (see :func:`xpnet.data.host_batches`), so memory holds a few batches, not the dataset.
Without test files, the rows are split as every other data file is: stratified by class,
seeded (:func:`xpnet.data.stratified_split`); each side is a :class:`RowSubset` of the
map, so the split reads nothing into memory but the labels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import check_finite_rows, folder_sha256, read_npy

__all__ = [
    "NPY_FILES",
    "RowSubset",
    "is_npy_folder",
    "npy_folder_sha256",
    "on_disk",
    "open_npy_folder",
    "row_blocks",
]

#: The files of a ``.npy`` dataset folder; the test pair is optional.
NPY_FILES = ("X.npy", "y.npy", "X_test.npy", "y_test.npy")
_CHUNK_ROWS = 65536


class RowSubset:
    """Some rows of a memory-mapped array, read only when indexed: one side of a split.

    Indexing with a slice gives another subset (nothing is read); indexing with an array of
    row positions, or ``numpy.asarray``, reads those rows from the file.

    Parameters
    ----------
    base : numpy.memmap
        ``(N, F)`` features on disk.
    rows : numpy.ndarray
        Sorted int64 positions in ``base``.

    Attributes
    ----------
    base, rows
        As given.
    shape : tuple of int
        ``(len(rows), F)``.
    dtype : numpy.dtype
        ``base``'s.

    Examples
    --------
    >>> import numpy as np
    >>> view = RowSubset(np.arange(12.0).reshape(6, 2), np.array([1, 4, 5]))
    >>> view.shape, view[1:].rows.tolist(), view[np.array([2, 0])].tolist()
    ((3, 2), [4, 5], [[10.0, 11.0], [2.0, 3.0]])
    """

    def __init__(self, base, rows) -> None:
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *base.shape[1:])
        self.dtype = base.dtype
        self.ndim = base.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # X[start:stop, ...]
            key, *rest = key
            if any(part is not Ellipsis for part in rest):
                raise IndexError("a RowSubset is indexed by rows only")
        if isinstance(key, slice):
            return RowSubset(self.base, self.rows[key])
        return self.base[self.rows[np.asarray(key)]]

    def __array__(self, dtype=None, copy=None):
        out = self.base[self.rows]
        return out if dtype is None else out.astype(dtype, copy=False)


def on_disk(X) -> bool:
    """Whether ``X`` stays on disk and is read a batch at a time (a map or a subset of one).

    Parameters
    ----------
    X : array-like
        Features.

    Returns
    -------
    bool
        True for a ``numpy.memmap`` or a :class:`RowSubset`.
    """
    return isinstance(X, (np.memmap, RowSubset))


def is_npy_folder(path) -> bool:
    """Whether ``path`` is a folder holding ``X.npy``.

    Parameters
    ----------
    path : str or Path
        A dataset spec.

    Returns
    -------
    bool
        True for a folder with ``X.npy``.
    """
    path = Path(path)
    return path.is_dir() and (path / "X.npy").is_file()


def npy_folder_sha256(folder) -> str:
    """One SHA-256 over the folder's ``.npy`` files (names and bytes, read in blocks).

    Parameters
    ----------
    folder : str or Path
        The folder.

    Returns
    -------
    str
        Hexadecimal.
    """
    return folder_sha256(folder, NPY_FILES)


def _features(path):
    X = read_npy(path, mmap=True)
    if X.ndim != 2 or min(X.shape) < 1 or X.dtype not in (np.float32, np.float64):
        raise DataError(
            f"{path}: expected float32 or float64 features of shape (N, F), got {X.dtype} "
            f"of shape {X.shape}"
        )
    for start in range(0, X.shape[0], _CHUNK_ROWS):  # finite, checked a chunk at a time
        chunk = X[start : start + _CHUNK_ROWS]
        check_finite_rows(path, chunk, range(start, start + len(chunk)))
    return X


def _labels(path, n):
    y = read_npy(path)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: expected {n} labels of shape ({n},), got shape {y.shape}")
    return y


def open_npy_folder(folder):
    """The folder's features (memory-mapped) and labels: ``(X, y, X_test, y_test)``.

    Parameters
    ----------
    folder : str or Path
        A folder with ``X.npy`` and ``y.npy`` (and optionally ``X_test.npy``,
        ``y_test.npy``).

    Returns
    -------
    X : numpy.memmap
        Features, on disk.
    y : numpy.ndarray
        Their labels.
    X_test : numpy.memmap or None
        Test features, on disk; None without ``X_test.npy``.
    y_test : numpy.ndarray or None
        Test labels; None without them.

    Raises
    ------
    DataFileNotFoundError
        ``y.npy`` (or ``y_test.npy`` beside ``X_test.npy``) is missing.
    DataError
        A file is malformed, non-finite, or the counts disagree.
    """
    folder = Path(folder)
    X = _features(folder / "X.npy")
    y = _labels(folder / "y.npy", X.shape[0])
    if (folder / "X_test.npy").is_file():
        X_test = _features(folder / "X_test.npy")
        y_test = _labels(folder / "y_test.npy", X_test.shape[0])
        if X_test.shape[1] != X.shape[1]:
            raise DataError(
                f"{folder}: X_test.npy has {X_test.shape[1]} features, X.npy {X.shape[1]}"
            )
        return X, y, X_test, y_test
    return X, y, None, None


def row_blocks(X, chunk_rows):
    """Features as blocks of rows for a lazy library, each read when it is computed.

    A block of data on disk names its file and rows (and re-opens the file to read them),
    so that it travels to another process without the data, and memory holds the blocks
    being computed rather than every page read so far.

    Parameters
    ----------
    X : numpy.ndarray, numpy.memmap or RowSubset
        Features in memory, a whole ``.npy`` file mapped, or rows of one.
    chunk_rows : int
        Rows per block.

    Returns
    -------
    list of Block
        In order (:class:`xpnet.data.parts.Block`).
    """
    from .parts import Block, mapped_rows

    n, blocks = X.shape[0], []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        if isinstance(X, RowSubset):
            read = functools.partial(mapped_rows, X.base.filename, X.rows[start:stop])
        elif isinstance(X, np.memmap):
            read = functools.partial(mapped_rows, X.filename, slice(start, stop))
        else:
            read = functools.partial(np.asarray, X[start:stop])
        blocks.append(Block(read, stop - start))
    return blocks
