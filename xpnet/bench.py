"""Compatibility name: the module moved to :mod:`xpnet.app.bench` (the application layer)."""

from .app.bench import *  # noqa: F403
from .app.bench import __all__  # noqa: F401
