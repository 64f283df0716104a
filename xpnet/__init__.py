"""Multilayer perceptrons with explicit forward and backward, on any Array API library.

xpnet is written once against the Python Array API standard, so that the same code
trains on NumPy, CuPy (CUDA), PyTorch and array-api-strict.
"""

__version__ = "0.2.0"

from . import backend, errors, models, nn, optim
from .checkpoint import load, save

__all__ = ["__version__", "backend", "errors", "load", "models", "nn", "optim", "save"]
