"""What a library allows beyond the functions of the standard, decided once per library.

Each answer comes from what the library says of itself (array-api-compat's
``is_writeable_array`` and ``is_lazy_array``, the standard's ``__array_namespace_info__``),
so a library xpnet does not know by name gets the right code path too.
"""

from __future__ import annotations

import contextlib
import warnings

import array_api_compat

from ..errors import XpnetValueError
from ._namespace import library_name

__all__ = [
    "allow_float64",
    "blockwise",
    "check_float64",
    "flat_views",
    "inplace_updates",
    "quiet_float_errors",
]

# Libraries whose slices and reshapes of contiguous arrays are views sharing memory, so
# that parameters can live inside one flat array. The standard leaves views unspecified
# (array-api-strict does not promise them), so this one is a list.
_VIEWS = frozenset({"numpy", "cupy", "torch"})

_LIBRARY: dict[int, str | None] = {}  # id(namespace) -> library name (None: unknown)
_INPLACE: dict[int, bool] = {}


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

    True where the library's arrays are writable and computed at once (NumPy, CuPy,
    PyTorch, array-api-strict); False for immutable arrays (JAX) and lazy ones (Dask),
    which get the assignment path ``p = p - lr * v`` instead: on them ``p -= ...`` would
    make a new array under the same local name and leave the model's unchanged.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    bool
        Whether the in-place operators change a parameter where it is.
    """
    key = id(xp)
    if key not in _INPLACE:
        probe = xp.zeros(1)
        _INPLACE[key] = bool(
            array_api_compat.is_writeable_array(probe) and not array_api_compat.is_lazy_array(probe)
        )
    return _INPLACE[key]


def blockwise(xp) -> bool:
    """Whether ``xp`` computes lazily, block by block, from data read when a block needs it.

    True for Dask, the library :func:`lazy_rows` builds arrays of: ``xpnet predict`` and
    ``xpnet evaluate`` then score inputs larger than memory.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Returns
    -------
    bool
        Whether :func:`lazy_rows` and :func:`computed_blocks` serve it.
    """
    return library_name(xp) == "dask"


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


def check_float64(xp) -> None:
    """Raise unless the library computes in float64 here.

    JAX keeps to 32 bits unless its 64-bit mode is on, and turns float64 requests into
    float32 with a warning; xpnet refuses rather than compute in another precision than
    the one asked for. Not cached: the mode can be switched on at any time.

    Parameters
    ----------
    xp : namespace
        An Array API namespace.

    Raises
    ------
    XpnetValueError
        float64 is not among the namespace's real floating dtypes
        (``xp.__array_namespace_info__().dtypes(kind="real floating")``).
    """
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        floats = info().dtypes(kind="real floating")
    if "float64" not in floats:
        name = _library(xp)
        hint = (
            "call jax.config.update('jax_enable_x64', True) before creating arrays "
            "(the command line does it for --dtype float64), or use float32"
            if name == "jax"
            else "use float32"
        )
        raise XpnetValueError(f"{name} has no float64 here: {hint}")


def allow_float64(xp) -> None:
    """Switch on the library's float64 where it is off by default (JAX's 64-bit mode).

    For a program that owns its process, as the command line does; a library leaves the
    choice to its caller (:func:`check_float64` says how). In JAX's 64-bit mode integer
    and floating defaults become 64-bit; xpnet names the dtype of every array it makes,
    so its float32 models compute in float32 either way.

    Parameters
    ----------
    xp : str or namespace
        A library name or an Array API namespace.
    """
    if (xp if isinstance(xp, str) else _library(xp)) == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


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
