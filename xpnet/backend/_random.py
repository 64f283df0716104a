"""The host random number generator: every random parameter starts here."""

from __future__ import annotations

import numpy as np

from ._convert import dtype_name

__all__ = ["host_rng", "host_uniform"]


def host_rng(seed=None) -> np.random.Generator:
    """The host random number generator for a seed.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        A seed, a generator to share, or None for fresh entropy.

    Returns
    -------
    numpy.random.Generator
        ``numpy.random.default_rng(seed)``.
    """
    return np.random.default_rng(seed)


def host_uniform(rng, low, high, shape, xp, *, device=None, dtype):
    """U(low, high) drawn in float64 on the host, rounded to ``dtype`` there, then moved.

    Rounding on the host makes the initial parameters bit-identical on every backend.

    Parameters
    ----------
    rng : numpy.random.Generator
        The host generator.
    low, high : float
        The interval.
    shape : tuple of int
        The array's shape.
    xp : namespace
        The target namespace.
    device : optional
        The target device (library default when None).
    dtype : dtype
        The target dtype, of ``xp``.

    Returns
    -------
    array
        The draw, on ``xp`` and ``device``.
    """
    host = rng.uniform(low, high, size=shape).astype(dtype_name(dtype))
    return xp.asarray(host, device=device, dtype=dtype)
