"""What a library allows beyond the functions of the standard, decided once per library."""

from __future__ import annotations

import contextlib

from ._namespace import library_name

__all__ = ["flat_views", "inplace_updates", "quiet_float_errors"]

# Libraries whose arrays support the standard's in-place operators (``p -= lr * v``) on
# parameters without copying: all of xpnet's supported libraries. A namespace not listed
# (an immutable-array library) gets the assignment path ``p = p - lr * v``.
_MUTABLE = frozenset({"numpy", "cupy", "torch", "array_api_strict"})
# Libraries whose slices and reshapes of contiguous arrays are views sharing memory, so
# that parameters can live inside one flat array (array-api-strict does not promise it).
_VIEWS = frozenset({"numpy", "cupy", "torch"})

_LIBRARY: dict[int, str | None] = {}  # id(namespace) -> library name (None: unknown)


def _library(xp):
    key = id(xp)
    if key not in _LIBRARY:
        try:
            _LIBRARY[key] = library_name(xp)
        except TypeError:
            _LIBRARY[key] = None
    return _LIBRARY[key]


def inplace_updates(xp) -> bool:
    """Whether optimizers may update ``xp`` arrays in place."""
    return _library(xp) in _MUTABLE


def flat_views(xp) -> bool:
    """Whether ``xp.reshape(flat[a:b], shape)`` is a writable view of ``flat``."""
    return _library(xp) in _VIEWS


def quiet_float_errors(xp):
    """A context manager that silences the library's floating-point warnings (overflow,
    invalid value) where it emits them (NumPy), for code that checks results itself."""
    if _library(xp) == "numpy":
        import numpy as np

        return np.errstate(all="ignore")
    return contextlib.nullcontext()
