"""Validation shared by the layers, models, optimizers and the training loop.

Each check raises an error that says what came and what was expected (constructor
arguments and array inputs alike). ``where`` is the module (or a string) the message
names; a module's one-line label is only built when an error is raised, so the checks
cost next to nothing on the hot path.
"""

from __future__ import annotations

import math
import numbers

from .. import backend
from ..errors import CallOrderError, XpnetError, XpnetTypeError, XpnetValueError


def _name(where):
    if isinstance(where, str):
        return where
    if isinstance(where, tuple):  # (module, suffix)
        return where[0]._label() + where[1]
    return where._label()


def check_float(x, xp, where, what="input"):
    """Refuse an array without a real floating dtype.

    Parameters
    ----------
    x : array
        The array.
    xp : namespace
        Its namespace.
    where : Module, tuple or str
        What the message names: a module, ``(module, ".backward")`` or a string.
    what : str
        What ``x`` is called in the message.

    Raises
    ------
    XpnetTypeError
        ``x`` is not float32 or float64.
    """
    if not backend.is_floating(xp, x.dtype):
        raise XpnetTypeError(
            f"{_name(where)}: {what} must be a floating array (float32 or float64), got dtype "
            f"{x.dtype}; convert it with xp.astype(x, xp.float32)"
        )


def check_2d(x, where, what="input", features=None, name="C"):
    """Refuse an array that is not a non-empty batch ``(N, features)``.

    Parameters
    ----------
    x : array
        The array.
    where : Module, tuple or str
        What the message names: a module, ``(module, ".backward")`` or a string.
    what : str
        What ``x`` is called in the message.
    features : int, optional
        The required number of columns (None: any).
    name : str
        The column count's name in the message when ``features`` is None.

    Raises
    ------
    XpnetValueError
        Another number of dimensions or columns, or no rows.
    """
    shape = x.shape
    if len(shape) != 2 or (features is not None and shape[1] != features):
        want = f"(N, {features if features is not None else name})"
        hint = " (batch first; reshape a single sample to (1, C))" if len(shape) == 1 else ""
        raise XpnetValueError(
            f"{_name(where)}: expected {what} of shape {want}, got shape {tuple(shape)}{hint}"
        )
    if shape[0] == 0:
        raise XpnetValueError(
            f"{_name(where)}: {what} is an empty batch (shape {tuple(shape)}); pass N >= 1 rows"
        )


def resolve_placement(xp, device, dtype, where):
    """The library, device and dtype that ``xp``, ``device`` and ``dtype`` arguments name.

    Parameters
    ----------
    xp : str, namespace or None
        The library (None: NumPy).
    device : optional
        Its device (None: the library's default).
    dtype : dtype, str or None
        ``float32`` (None) or ``float64``.
    where : Module, tuple or str
        What a refusal names: a module, ``(module, ".to()")`` or a class name.

    Returns
    -------
    tuple
        ``(namespace, device, dtype)``, as :func:`xpnet.backend.get`,
        :func:`xpnet.backend.resolve_device` and :func:`xpnet.backend.resolve_dtype`
        return them.

    Raises
    ------
    XpnetError
        What those functions raise (an unknown or missing library, a device the library
        lacks, another dtype), its message prefixed with ``where``.
    """
    try:
        xp = backend.get(xp)
        return xp, backend.resolve_device(xp, device), backend.resolve_dtype(xp, dtype)
    except XpnetError as err:
        raise type(err)(f"{_name(where)}: {err}") from None


def as_dtype(x, dtype, xp):
    """An array cast to ``dtype``, or the array itself when it already has it.

    Parameters
    ----------
    x : array
        The array.
    dtype : dtype
        A dtype of ``xp``.
    xp : namespace
        Its namespace.

    Returns
    -------
    array
        ``x`` of ``dtype``.
    """
    return x if x.dtype == dtype else xp.astype(x, dtype)


def check_same_shape(x, expected_shape, where, what):
    """Refuse an array of another shape.

    Parameters
    ----------
    x : array
        The array.
    expected_shape : tuple of int
        The required shape.
    where : Module, tuple or str
        What the message names: a module, ``(module, ".backward")`` or a string.
    what : str
        What ``x`` is called in the message.

    Raises
    ------
    XpnetValueError
        ``x.shape`` differs.
    """
    if tuple(x.shape) != tuple(expected_shape):
        raise XpnetValueError(
            f"{_name(where)}: {what} must have shape {tuple(expected_shape)}, got {tuple(x.shape)}"
        )


def require_forward(cache, where):
    """Refuse a backward call before the forward call that fills its cache.

    Parameters
    ----------
    cache : array or None
        What ``forward`` caches.
    where : Module, tuple or str
        What the message names: a module, ``(module, ".backward")`` or a string.

    Raises
    ------
    CallOrderError
        ``cache`` is None.
    """
    if cache is None:
        raise CallOrderError(f"{_name(where)}: backward() called before forward()")


def check_size(value, name, where):
    """A positive int (bools refused).

    Parameters
    ----------
    value : int
        The argument.
    name : str
        Its name in the message.
    where : str
        Who received it.

    Returns
    -------
    int
        ``value``.

    Raises
    ------
    XpnetTypeError
        Not an int.
    XpnetValueError
        Not positive.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise XpnetTypeError(
            f"{where}: {name} must be an int, got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise XpnetValueError(f"{where}: {name} must be positive, got {value}")
    return int(value)


def check_real(value, name, where, *, low, high=None, low_open=False, high_open=False):
    """A finite real number within bounds.

    Parameters
    ----------
    value : float
        The argument.
    name : str
        Its name in the message.
    where : str
        Who received it.
    low : float
        The lower bound (every argument checked here has one).
    high : float, optional
        The upper bound (None: unbounded).
    low_open, high_open : bool
        Whether the bounds are excluded.

    Returns
    -------
    float
        ``value`` as a float.

    Raises
    ------
    XpnetTypeError
        Not a real number.
    XpnetValueError
        Not finite, or outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise XpnetTypeError(
            f"{where}: {name} must be a number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    bad = not math.isfinite(value)
    bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        hi = "inf" if high is None else f"{high}"
        left = "(" if low_open else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{low}, {hi}{right}"
        raise XpnetValueError(f"{where}: {name} must lie in {interval}, got {value}")
    return value
