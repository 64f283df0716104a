"""Datasets larger than memory: a folder of ``.npy`` files, read memory-mapped.

The folder holds ``X.npy`` (features, ``(N, F)``, float32 or float64) and ``y.npy`` (class
labels, ``(N,)``), as ``numpy.save`` writes them, and optionally ``X_test.npy`` and
``y_test.npy``. The features stay on disk: training reads one batch at a time from the
map (see :func:`xpnet.data.host_batches`), so memory holds a few batches, not the dataset.
Without test files, the last quarter of the rows is the test split (write the rows in
random order, or write the test files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, DataFileNotFoundError
from ._files import folder_sha256

__all__ = ["NPY_FILES", "is_npy_folder", "npy_folder_sha256", "open_npy_folder"]

#: The files of a ``.npy`` dataset folder; the test pair is optional.
NPY_FILES = ("X.npy", "y.npy", "X_test.npy", "y_test.npy")
_CHUNK_ROWS = 65536


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
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None
    if X.ndim != 2 or X.shape[0] < 1 or X.dtype not in (np.float32, np.float64):
        raise DataError(
            f"{path}: expected float32 or float64 features of shape (N, F), got {X.dtype} "
            f"of shape {X.shape}"
        )
    for start in range(0, X.shape[0], _CHUNK_ROWS):  # finite, checked a chunk at a time
        chunk = X[start : start + _CHUNK_ROWS]
        if not np.all(np.isfinite(chunk)):
            row = start + int(np.argwhere(~np.isfinite(chunk))[0][0])
            raise DataError(f"{path}: row {row} holds a NaN or infinite value")
    return X


def _labels(path, n):
    try:
        y = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFileNotFoundError(f"{path}: no such file", filename=str(path)) from None
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: expected {n} labels of shape ({n},), got shape {y.shape}")
    return y


def open_npy_folder(folder):
    """The folder's features (memory-mapped) and labels, split into train and test.

    Parameters
    ----------
    folder : str or Path
        A folder with ``X.npy`` and ``y.npy`` (and optionally ``X_test.npy``,
        ``y_test.npy``).

    Returns
    -------
    X_train : numpy.memmap
        Training features, on disk.
    y_train : numpy.ndarray
        Training labels.
    X_test : numpy.memmap
        Test features, on disk.
    y_test : numpy.ndarray
        Test labels.

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
    if X.shape[0] < 2:
        raise DataError(f"{folder}: need at least 2 rows to hold out a test split")
    cut = X.shape[0] - max(1, X.shape[0] // 4)
    return X[:cut], y[:cut], X[cut:], y[cut:]
