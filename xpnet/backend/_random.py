"""The host random number generator: every random parameter starts here."""

from __future__ import annotations

import numpy as np

from ._convert import dtype_name

__all__ = ["host_rng", "host_uniform"]


def host_rng(seed=None) -> np.random.Generator:
    """A ``numpy.random.Generator`` for ``seed`` (an int, ``None`` or a Generator to share)."""
    return np.random.default_rng(seed)


def host_uniform(rng, low, high, shape, xp, *, device=None, dtype):
    """U(low, high) drawn in float64 on the host, rounded to ``dtype`` there, then moved.

    Rounding on the host makes the initial parameters bit-identical on every backend.
    """
    host = rng.uniform(low, high, size=shape).astype(dtype_name(dtype))
    return xp.asarray(host, device=device, dtype=dtype)
