"""The input scaling a model carries: fitted on the training split, or a dataset's fixed range.

``xpnet train`` puts the result in the model's :class:`~xpnet.nn.Standardize` layer, so the
checkpoint holds it and every later use of the model (evaluate, predict, load, ONNX)
applies it to raw features. The statistics are taken on the host in float64, a block of
rows at a time, so a memory-mapped training set is read twice and never held whole.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCALINGS", "fixed_scaling", "standard_scaling"]

#: The choices of ``xpnet train --scale``: ``auto`` is the dataset's fixed range where it
#: has one (the digits' 0..16, 8-bit images' 0..255), none for MNIST-1D (already at unit
#: scale), and ``standard`` for every data file.
SCALINGS = ("auto", "standard", "none")
_BLOCK_ROWS = 65536


def standard_scaling(X, *, block_rows: int = _BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation, as scikit-learn's ``StandardScaler`` fits them.

    Two passes in float64 over blocks of rows: the mean, then the mean squared deviation
    from it (the population variance, ``ddof=0``). A column whose deviation is zero (a
    constant column) gets a scale of 1, so it maps to zeros instead of dividing by zero.

    Parameters
    ----------
    X : numpy.ndarray
        ``(N, F)`` real features, ``N >= 1`` (a ``numpy.memmap`` is read a block at a time).
    block_rows : int
        Rows per block.

    Returns
    -------
    mean : numpy.ndarray
        ``(1, F)`` float64.
    scale : numpy.ndarray
        ``(1, F)`` float64, every entry positive.

    Examples
    --------
    >>> import numpy as np
    >>> mean, scale = standard_scaling(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> mean.tolist(), scale.tolist()
    ([[2.0, 5.0]], [[1.0, 1.0]])
    """
    n = X.shape[0]
    total = np.zeros((1, X.shape[1]))
    for start in range(0, n, block_rows):
        total += np.sum(np.asarray(X[start : start + block_rows], dtype=np.float64), axis=0)
    mean = total / n
    squares = np.zeros_like(mean)
    for start in range(0, n, block_rows):
        block = np.asarray(X[start : start + block_rows], dtype=np.float64) - mean
        squares += np.sum(block * block, axis=0)
    scale = np.sqrt(squares / n)
    scale[scale == 0] = 1.0
    return mean, scale


def fixed_scaling(n_features: int, divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's fixed range as a scaling: mean 0, every column divided by ``divisor``.

    Parameters
    ----------
    n_features : int
        ``F``.
    divisor : float
        The range's top (16 for the digits, 255 for 8-bit images).

    Returns
    -------
    mean : numpy.ndarray
        ``(1, F)`` zeros.
    scale : numpy.ndarray
        ``(1, F)`` filled with ``divisor``.
    """
    return np.zeros((1, n_features)), np.full((1, n_features), float(divisor))
