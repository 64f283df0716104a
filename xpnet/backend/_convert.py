"""Dtypes, host transfer and conversion between libraries and devices."""

from __future__ import annotations

import array_api_compat
import numpy as np

from ..errors import XpnetValueError
from ._capabilities import check_float64
from ._namespace import get, library_name, namespace, resolve_device

__all__ = [
    "FLOAT_DTYPES",
    "convert",
    "dtype_name",
    "is_floating",
    "is_integral",
    "resolve_dtype",
    "to_numpy",
]

#: The floating dtypes xpnet computes in.
FLOAT_DTYPES = ("float32", "float64")


def dtype_name(dtype) -> str:
    """The standard name of any library's dtype.

    Parameters
    ----------
    dtype : dtype or str
        A NumPy, CuPy, PyTorch or array-api-strict dtype, or a name.

    Returns
    -------
    str
        ``"float32"``, ``"int64"``, ...
    """
    if isinstance(dtype, str):
        return dtype
    try:
        return np.dtype(dtype).name  # NumPy and CuPy dtypes, NumPy scalar types
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.float32


_FLOATING: dict[tuple[int, object], bool] = {}


def is_floating(xp, dtype) -> bool:
    """Whether ``dtype`` is a real floating dtype of ``xp``, cached per namespace and dtype.

    Parameters
    ----------
    xp : namespace
        The dtype's Array API namespace.
    dtype : dtype
        A dtype of ``xp``.

    Returns
    -------
    bool
        ``xp.isdtype(dtype, "real floating")``.
    """
    key = (id(xp), dtype)  # per namespace: dtypes of two libraries must not be compared
    try:
        return _FLOATING[key]
    except KeyError:
        result = _FLOATING[key] = bool(xp.isdtype(dtype, "real floating"))
        return result
    except TypeError:  # an unhashable dtype object
        return bool(xp.isdtype(dtype, "real floating"))


_INTEGRAL: dict[tuple[int, object], bool] = {}


def is_integral(xp, dtype) -> bool:
    """Whether ``dtype`` is an integer dtype of ``xp``, cached per namespace and dtype.

    Parameters
    ----------
    xp : namespace
        The dtype's Array API namespace.
    dtype : dtype
        A dtype of ``xp``.

    Returns
    -------
    bool
        ``xp.isdtype(dtype, "integral")``.
    """
    key = (id(xp), dtype)
    try:
        return _INTEGRAL[key]
    except KeyError:
        result = _INTEGRAL[key] = bool(xp.isdtype(dtype, "integral"))
        return result
    except TypeError:
        return bool(xp.isdtype(dtype, "integral"))


def resolve_dtype(xp, dtype=None):
    """The namespace's floating dtype for a name or any library's dtype.

    Parameters
    ----------
    xp : namespace
        The target Array API namespace.
    dtype : dtype or str, optional
        ``float32`` or ``float64``; None means float32, the library's default.

    Returns
    -------
    dtype
        ``xp.float32`` or ``xp.float64``.

    Raises
    ------
    XpnetValueError
        ``dtype`` is not float32 or float64, or float64 where the library has none
        (:func:`xpnet.backend.check_float64`).
    """
    name = "float32" if dtype is None else dtype_name(dtype)
    if name not in FLOAT_DTYPES:
        raise XpnetValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    if name == "float64":
        check_float64(xp)
    return getattr(xp, name)


def to_numpy(x) -> np.ndarray:
    """Copy an array of any supported library to a NumPy array on the host.

    This is the one place where xpnet moves data from a device to the host.

    Parameters
    ----------
    x : array or Python scalar
        The data.

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it already is one.
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (int, float, bool, np.generic)):
        return np.asarray(x)
    name = library_name(namespace(x))
    if name == "torch":
        return x.detach().cpu().numpy()
    if name == "cupy":
        return x.get()
    if name == "array_api_strict":
        import array_api_strict

        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    if name == "ndonnx":  # a constant of a graph; a traced array has no values to give
        return np.array(x.unwrap_numpy())
    host = np.asarray(x)
    # JAX lends its buffer read-only: the caller gets an array of its own, as from the rest
    return host if host.flags.writeable else host.copy()


def convert(x, xp=None, *, device=None, dtype=None):
    """An array as an array of namespace ``xp`` on ``device`` with ``dtype``.

    Within one library this is a cast and a device move; across libraries the data goes
    through the host once (:func:`to_numpy`).

    Parameters
    ----------
    x : array
        The data, of any supported library.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        The target device; None keeps the target library's default.
    dtype : dtype or str, optional
        The target dtype; None keeps the precision.

    Returns
    -------
    array
        ``x`` itself when nothing needs to change.
    """
    xp = get(xp)
    device = resolve_device(xp, device)
    if dtype is not None:
        dtype = getattr(xp, dtype_name(dtype))
    # float64 is checked where a new array is made, rather than copied to float32 silently
    src = namespace(x) if not isinstance(x, np.ndarray) else get("numpy")
    if library_name(src) == library_name(xp):
        if dtype is not None and x.dtype != dtype:
            if dtype_name(dtype) == "float64":
                check_float64(xp)
            x = xp.astype(x, dtype)
        if device is not None and array_api_compat.device(x) != device:
            x = array_api_compat.to_device(x, device)
        return x
    host = to_numpy(x)
    if dtype is not None:
        host = host.astype(dtype_name(dtype), copy=False)
    if host.dtype == np.float64:
        check_float64(xp)
    return xp.asarray(host, device=device)
