"""Layers, activations and losses with explicit forward and backward."""

from .activation import GELU, Identity, ReLU, Sigmoid, Softmax, Tanh
from .batchnorm import BatchNorm1d
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Param

__all__ = [
    "GELU",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Identity",
    "Linear",
    "MSELoss",
    "Module",
    "Param",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
