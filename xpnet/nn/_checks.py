"""Input validation shared by the layers: errors that say what came and what was expected."""

from __future__ import annotations


def check_float(x, xp, where, what="input"):
    """Raise TypeError unless ``x`` has a real floating dtype."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{where}: {what} must be a floating array (float32 or float64), got dtype "
            f"{x.dtype}; convert it with xp.astype(x, xp.float32)"
        )


def check_2d(x, where, what="input", features=None, name="C"):
    """Raise ValueError unless ``x`` is ``(N, features)`` (``features`` None: any)."""
    shape = tuple(x.shape)
    if len(shape) != 2 or (features is not None and shape[1] != features):
        want = f"(N, {features if features is not None else name})"
        hint = " (batch first; reshape a single sample to (1, C))" if len(shape) == 1 else ""
        raise ValueError(f"{where}: expected {what} of shape {want}, got shape {shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{where}: {what} is an empty batch (shape {shape}); pass N >= 1 rows")


def as_dtype(x, dtype, xp):
    """``x`` cast to ``dtype`` (a no-op when it already has it)."""
    return x if x.dtype == dtype else xp.astype(x, dtype)


def check_same_shape(x, expected_shape, where, what):
    if tuple(x.shape) != tuple(expected_shape):
        raise ValueError(
            f"{where}: {what} must have shape {tuple(expected_shape)}, got {tuple(x.shape)}"
        )


def require_forward(cache, where):
    if cache is None:
        raise RuntimeError(f"{where}: backward() called before forward()")
