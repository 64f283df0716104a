"""Layers, activations and losses with explicit forward and backward."""

from . import init
from .activation import GELU, Identity, ReLU, Sigmoid, Softmax, Tanh
from .batchnorm import BatchNorm1d
from .dropout import Dropout
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Param
from .standardize import Standardize

__all__ = [
    "GELU",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dropout",
    "Identity",
    "Linear",
    "MSELoss",
    "Module",
    "Param",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Standardize",
    "Tanh",
    "init",
]
