"""Weight initialisation with PyTorch's formulas, drawn on the host.

Every function draws in float64 from a seeded ``numpy.random.Generator`` on the host,
rounds to the requested dtype there and only then moves the array, so one seed gives
bit-identical arrays on every backend (as :class:`~xpnet.nn.Linear`'s own initialisation
does). A weight of shape ``(out, in)`` has ``fan_in = in`` and ``fan_out = out``.

Examples
--------
>>> from xpnet.nn import init
>>> W = init.kaiming_uniform((3, 4), nonlinearity="relu", seed=0)
>>> W.shape, str(W.dtype)
((3, 4), 'float32')
"""

from __future__ import annotations

import math

from .. import backend
from .._typing import Array, Device, DType, Namespace, Seed
from ..errors import XpnetValueError

__all__ = [
    "calculate_gain",
    "kaiming_normal",
    "kaiming_uniform",
    "ones",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

_GAINS = {"linear": 1.0, "identity": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0)}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation, as PyTorch defines it.

    Parameters
    ----------
    nonlinearity : str
        ``"linear"``, ``"identity"``, ``"sigmoid"``, ``"tanh"`` (5/3), ``"relu"`` (√2)
        or ``"leaky_relu"`` (√(2 / (1 + a²)) with ``a = param``, default 0.01).
    param : float, optional
        The negative slope of ``"leaky_relu"``.

    Returns
    -------
    float
        The gain.

    Raises
    ------
    XpnetValueError
        An unknown nonlinearity.
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity not in _GAINS:
        raise XpnetValueError(
            f"calculate_gain: unknown nonlinearity {nonlinearity!r}; expected one of "
            f"{[*_GAINS, 'leaky_relu']}"
        )
    return _GAINS[nonlinearity]


def _fans(shape):
    if len(shape) < 2:
        raise XpnetValueError(
            f"fan in and fan out need a shape of at least 2 dimensions, got {tuple(shape)}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape, mode):
    fan_in, fan_out = _fans(shape)
    if mode not in ("fan_in", "fan_out"):
        raise XpnetValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def _draw(kind, scale, shape, seed, xp, device, dtype):
    """``kind`` is the generator's method: ``"uniform"`` on ``[-scale, scale)`` or
    ``"normal"`` with standard deviation ``scale``, drawn in float64 on the host."""
    rng = backend.host_rng(seed)
    xp = backend.get(xp)
    dtype = backend.resolve_dtype(xp, dtype)
    low_or_mean = -scale if kind == "uniform" else 0.0
    host = getattr(rng, kind)(low_or_mean, scale, size=tuple(shape))
    host = host.astype(backend.dtype_name(dtype))
    return xp.asarray(host, device=backend.resolve_device(xp, device), dtype=dtype)


def kaiming_uniform(
    shape: tuple[int, ...],
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    seed: Seed = None,
    xp: Namespace = None,
    device: Device = None,
    dtype: DType = None,
) -> Array:
    """He initialisation, uniform: U(-b, b) with ``b = gain · √(3 / fan)``.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a Linear weight.
    a : float
        The negative slope, for ``nonlinearity="leaky_relu"``.
    mode : str
        ``"fan_in"`` (preserves the forward variance) or ``"fan_out"`` (the backward).
    nonlinearity : str
        For :func:`calculate_gain`.
    seed : int, numpy.random.Generator or None
        The host generator's seed, or a generator to share.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        The draw.
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return _draw("uniform", math.sqrt(3.0) * std, shape, seed, xp, device, dtype)


def kaiming_normal(
    shape: tuple[int, ...],
    *,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    seed: Seed = None,
    xp: Namespace = None,
    device: Device = None,
    dtype: DType = None,
) -> Array:
    """He initialisation, normal: N(0, std²) with ``std = gain / √fan``.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a Linear weight.
    a : float
        The negative slope, for ``nonlinearity="leaky_relu"``.
    mode : str
        ``"fan_in"`` or ``"fan_out"``.
    nonlinearity : str
        For :func:`calculate_gain`.
    seed : int, numpy.random.Generator or None
        The host generator's seed, or a generator to share.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        The draw.
    """
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode))
    return _draw("normal", std, shape, seed, xp, device, dtype)


def xavier_uniform(
    shape: tuple[int, ...],
    *,
    gain: float = 1.0,
    seed: Seed = None,
    xp: Namespace = None,
    device: Device = None,
    dtype: DType = None,
) -> Array:
    """Glorot initialisation, uniform: U(-b, b) with ``b = gain · √(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a Linear weight.
    gain : float
        A scale, e.g. :func:`calculate_gain` of the activation.
    seed : int, numpy.random.Generator or None
        The host generator's seed, or a generator to share.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        The draw.
    """
    fan_in, fan_out = _fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _draw("uniform", math.sqrt(3.0) * std, shape, seed, xp, device, dtype)


def xavier_normal(
    shape: tuple[int, ...],
    *,
    gain: float = 1.0,
    seed: Seed = None,
    xp: Namespace = None,
    device: Device = None,
    dtype: DType = None,
) -> Array:
    """Glorot initialisation, normal: N(0, std²) with ``std = gain · √(2 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a Linear weight.
    gain : float
        A scale, e.g. :func:`calculate_gain` of the activation.
    seed : int, numpy.random.Generator or None
        The host generator's seed, or a generator to share.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        The draw.
    """
    fan_in, fan_out = _fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _draw("normal", std, shape, seed, xp, device, dtype)


def zeros(
    shape: tuple[int, ...], *, xp: Namespace = None, device: Device = None, dtype: DType = None
) -> Array:
    """An array of zeros (a bias's usual start).

    Parameters
    ----------
    shape : tuple of int
        The shape.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        Zeros.
    """
    xp = backend.get(xp)
    dtype = backend.resolve_dtype(xp, dtype)
    return xp.zeros(tuple(shape), dtype=dtype, device=backend.resolve_device(xp, device))


def ones(
    shape: tuple[int, ...], *, xp: Namespace = None, device: Device = None, dtype: DType = None
) -> Array:
    """An array of ones (a BatchNorm scale's start).

    Parameters
    ----------
    shape : tuple of int
        The shape.
    xp : str or namespace, optional
        The target library (default NumPy).
    device : optional
        Its device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Returns
    -------
    array
        Ones.
    """
    xp = backend.get(xp)
    dtype = backend.resolve_dtype(xp, dtype)
    return xp.ones(tuple(shape), dtype=dtype, device=backend.resolve_device(xp, device))
