"""Constructor argument checks shared by the layers and models."""

from __future__ import annotations

import numbers

from ..errors import XpnetTypeError, XpnetValueError


def check_size(value, name, where):
    """A positive int (bools rejected), else TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise XpnetTypeError(
            f"{where}: {name} must be an int, got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise XpnetValueError(f"{where}: {name} must be positive, got {value}")
    return int(value)


def check_real(value, name, where, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within the given bounds, else TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise XpnetTypeError(
            f"{where}: {name} must be a number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    bad = value != value or value in (float("inf"), float("-inf"))
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{lo}, {hi}{right}"
        raise XpnetValueError(f"{where}: {name} must lie in {interval}, got {value}")
    return value
