"""Compatibility name: the module moved to :mod:`xpnet.app.runs` (the application layer)."""

from .app.runs import *  # noqa: F403
from .app.runs import __all__  # noqa: F401
