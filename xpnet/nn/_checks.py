"""Input validation shared by the layers: errors that say what came and what was expected.

``where`` is the module (or a string) the message names; a module's one-line label is
only built when an error is raised, so the checks cost next to nothing on the hot path.
"""

from __future__ import annotations

from .. import backend
from ..errors import CallOrderError, XpnetTypeError, XpnetValueError


def _name(where):
    if isinstance(where, str):
        return where
    if isinstance(where, tuple):  # (module, suffix)
        return where[0]._label() + where[1]
    return where._label()


def check_float(x, xp, where, what="input"):
    """Raise TypeError unless ``x`` has a real floating dtype."""
    if not backend.is_floating(xp, x.dtype):
        raise XpnetTypeError(
            f"{_name(where)}: {what} must be a floating array (float32 or float64), got dtype "
            f"{x.dtype}; convert it with xp.astype(x, xp.float32)"
        )


def check_2d(x, where, what="input", features=None, name="C"):
    """Raise ValueError unless ``x`` is ``(N, features)`` (``features`` None: any), N >= 1."""
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


def as_dtype(x, dtype, xp):
    """``x`` cast to ``dtype`` (a no-op when it already has it)."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def check_same_shape(x, expected_shape, where, what):
    if tuple(x.shape) != tuple(expected_shape):
        raise XpnetValueError(
            f"{_name(where)}: {what} must have shape {tuple(expected_shape)}, got {tuple(x.shape)}"
        )


def require_forward(cache, where):
    if cache is None:
        raise CallOrderError(f"{_name(where)}: backward() called before forward()")
