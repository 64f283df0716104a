"""The NumPy namespace of xpnet: ``array_api_compat.numpy`` with cheaper hot functions.

NumPy's ``sum``, ``max``, ``mean``, ``astype``, ``reshape`` and ``asarray`` go through
Python wrappers that cost about a microsecond per call, which dominates a small model's
training step. Here they call the underlying ufunc reductions and array methods directly
for the common case (floating inputs, default options); everything else is
``array_api_compat.numpy`` unchanged. Each function returns what the compat one returns
(``tests/test_backend.py``).
"""

from __future__ import annotations

import types

import array_api_compat.numpy as compat
import numpy as np

_add_reduce = np.add.reduce
_max_reduce = np.maximum.reduce


def _floating(x):
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def sum(x, /, *, axis=None, dtype=None, keepdims=False):
    if dtype is None and _floating(x):
        return _add_reduce(x, axis=axis, keepdims=keepdims)
    return compat.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)


def max(x, /, *, axis=None, keepdims=False):
    if _floating(x):
        return _max_reduce(x, axis=axis, keepdims=keepdims)
    return compat.max(x, axis=axis, keepdims=keepdims)


def mean(x, /, *, axis=None, keepdims=False):
    if _floating(x) and isinstance(axis, int):
        return _add_reduce(x, axis=axis, keepdims=keepdims) / x.shape[axis]
    return compat.mean(x, axis=axis, keepdims=keepdims)


def astype(x, dtype, /, *, copy=True, device=None):
    if device is None and isinstance(x, np.ndarray):
        return x.astype(dtype, copy=copy)
    return compat.astype(x, dtype, copy=copy, device=device)


def reshape(x, /, shape, *, copy=None):
    if copy is None and isinstance(x, np.ndarray):
        return x.reshape(shape)
    return compat.reshape(x, shape, copy=copy)


def asarray(obj, /, *, dtype=None, device=None, copy=None):
    if dtype is None and device is None and copy is None and isinstance(obj, np.generic):
        return np.asarray(obj)  # a NumPy scalar (a full reduction's result) as a 0-d array
    return compat.asarray(obj, dtype=dtype, device=device, copy=copy)


def _build():
    ns = types.ModuleType("xpnet.backend.numpy", __doc__)
    ns.__dict__.update({k: v for k, v in vars(compat).items() if not k.startswith("__")})
    ns.__array_namespace_info__ = compat.__array_namespace_info__
    ns.__array_api_version__ = compat.__array_api_version__
    for fn in (sum, max, mean, astype, reshape, asarray):
        setattr(ns, fn.__name__, fn)
    return ns


#: The namespace xpnet uses for NumPy arrays.
namespace = _build()
