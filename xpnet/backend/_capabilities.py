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
    """Whether optimizers may update ``xp`` arrays in place.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    bool
        True for libraries whose arrays support the in-place operators on parameters.
    """
    return _library(xp) in _MUTABLE


def flat_views(xp) -> bool:
    """Whether ``xp.reshape(flat[a:b], shape)`` is a writable view of ``flat``.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    bool
        True where parameters can live inside one flat array (NumPy, CuPy, PyTorch).
    """
    return _library(xp) in _VIEWS


def quiet_float_errors(xp):
    """Silence the library's floating-point warnings where it emits them (NumPy).

    For code that checks its results itself, such as a training loop that stops on a
    non-finite loss.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    contextlib.AbstractContextManager
        ``numpy.errstate(all="ignore")`` for NumPy, else a context that does nothing.
    """
    if _library(xp) == "numpy":
        import numpy as np

        return np.errstate(all="ignore")
    return contextlib.nullcontext()
