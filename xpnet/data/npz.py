"""``.npz`` files with arrays ``X`` and ``y``, read through the input policy of ``_files``."""

from __future__ import annotations

from ..errors import DataError
from ._files import read_npz

__all__ = ["read_arrays"]


def read_arrays(path, label_column=None):
    """The arrays ``X`` and ``y`` of a ``.npz`` file, unchecked.

    Parameters
    ----------
    path : Path
        A regular file.
    label_column : None
        Not applicable (the labels are an array of their own);
        :func:`xpnet.data.read_arrays` refuses one before a file is read.

    Returns
    -------
    X : numpy.ndarray
        The features as stored.
    y : numpy.ndarray
        The labels as stored.
    """
    del label_column
    return _read_npz(path)


def _read_npz(path):
    arrays = read_npz(path, ("X", "y", "X_test", "y_test"))
    missing = {"X", "y"} - set(arrays)
    if missing:
        raise DataError(f"{path}: expected arrays 'X' and 'y', missing {sorted(missing)}")
    extra = sorted({"X_test", "y_test"} & set(arrays))
    if extra:  # a split given in the file is not silently replaced by another
        raise DataError(
            f"{path}: holds {' and '.join(extra)}; xpnet splits X and y itself (stratified, "
            f"seeded), so a file with its own test split is refused rather than read in part: "
            f"use a folder of X.npy, y.npy, X_test.npy and y_test.npy for an official split"
        )
    return arrays["X"], arrays["y"]
