"""What a library allows beyond the functions of the standard, decided once per library."""

from __future__ import annotations

from ._namespace import library_name

__all__ = ["flat_views", "inplace_updates", "quiet_float_errors"]

# Libraries whose arrays support the standard's in-place operators (``p -= lr * v``) on
# parameters without copying: all of xpnet's supported libraries. A namespace not listed
# (an immutable-array library) gets the assignment path ``p = p - lr * v``.
_MUTABLE = frozenset({"numpy", "cupy", "torch", "array_api_strict"})
_CACHE: dict[int, bool] = {}


def inplace_updates(xp) -> bool:
    """Whether optimizers may update ``xp`` arrays in place."""
    key = id(xp)
    if key not in _CACHE:
        try:
            _CACHE[key] = library_name(xp) in _MUTABLE
        except TypeError:
            _CACHE[key] = False
    return _CACHE[key]


# Libraries whose slices and reshapes of contiguous arrays are views sharing memory, so
# that parameters can live inside one flat array (array-api-strict does not promise it).
_VIEWS = frozenset({"numpy", "cupy", "torch"})


def flat_views(xp) -> bool:
    """Whether ``xp.reshape(flat[a:b], shape)`` is a writable view of ``flat``."""
    try:
        return library_name(xp) in _VIEWS
    except TypeError:
        return False


def quiet_float_errors(xp):
    """A context manager that silences the library's floating-point warnings (overflow,
    invalid value) where it emits them (NumPy), for code that checks results itself."""
    import contextlib

    if library_name(xp) == "numpy":
        import numpy as np

        return np.errstate(all="ignore")
    return contextlib.nullcontext()
