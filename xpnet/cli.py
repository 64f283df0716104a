"""Compatibility name: the module moved to :mod:`xpnet.app.cli` (the application layer)."""

from .app.cli import *  # noqa: F403
from .app.cli import __all__  # noqa: F401
