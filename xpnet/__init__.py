"""xpnet: multilayer perceptrons with explicit forward and backward, written once against
the Python Array API standard (NumPy, CuPy, PyTorch, array-api-strict)."""

from . import backend, models, nn, optim

__version__ = "0.1.0"

__all__ = ["__version__", "backend", "models", "nn", "optim"]
