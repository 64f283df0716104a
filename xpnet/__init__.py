"""xpnet: multilayer perceptrons with explicit forward and backward, written once against
the Python Array API standard (NumPy, CuPy, PyTorch, array-api-strict)."""

__version__ = "0.1.0"

from . import backend, models, nn, optim
from .checkpoint import load, save

__all__ = ["__version__", "backend", "load", "models", "nn", "optim", "save"]
