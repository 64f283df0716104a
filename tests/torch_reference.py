"""PyTorch as the reference: tensors, activations and MLPs built to mirror xpnet's.

Import after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xpnet.backend import to_numpy
from xpnet.nn import GELU, Identity, ReLU, Sigmoid, Softmax, Tanh

F = torch.nn.functional


def t(x, grad=False):
    """A float64 tensor (optionally requiring grad) from anything NumPy accepts."""
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=grad)


def gelu(z):
    """The exact GELU, ``z Φ(z)`` with ``Φ(z) = erfc(-z/√2)/2``, in torch (autograd works).

    ``torch.nn.functional.gelu`` computes ``0.5 z (1 + erf(z/√2))`` instead, which cancels
    for z << 0, and its float64 erf was measured off by up to 3e-11 relative at some small
    |z| in some runs (torch 2.13 CPU; xpnet's value agreed with mpmath there), so it cannot
    serve as a 1e-12 reference. ``torch.special.erfc`` showed no such error.
    """
    return z * (0.5 * torch.special.erfc(-z * (1.0 / math.sqrt(2.0))))


class GELUReference(torch.nn.Module):
    def forward(self, z):
        return gelu(z)


TORCH_ACTIVATIONS = {
    Identity: lambda z: z,
    Sigmoid: torch.sigmoid,
    Tanh: torch.tanh,
    ReLU: torch.relu,
    GELU: gelu,
    Softmax: lambda z: torch.softmax(z, dim=1),
}


def torch_copy(model):
    """The xpnet MLP as torch.nn modules with the same parameters (float64)."""
    mods = []
    n_bn = len(model.bn_layers)
    acts = {
        ReLU: torch.nn.ReLU,
        Sigmoid: torch.nn.Sigmoid,
        Tanh: torch.nn.Tanh,
        GELU: GELUReference,
        Identity: torch.nn.Identity,
    }
    for i, (layer, f) in enumerate(zip(model.layers, model.f, strict=True)):
        lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(to_numpy(layer.W)))
            lin.bias.copy_(torch.from_numpy(to_numpy(layer.b)[:, 0]))
        mods.append(lin)
        if i < n_bn:
            bn = model.bn_layers[i]
            tbn = torch.nn.BatchNorm1d(
                bn.num_features, eps=bn.eps, momentum=1 - bn.alpha, dtype=torch.float64
            )
            with torch.no_grad():
                tbn.weight.copy_(torch.from_numpy(to_numpy(bn.BW)[0]))
                tbn.bias.copy_(torch.from_numpy(to_numpy(bn.Bb)[0]))
            mods.append(tbn)
        mods.append(acts[type(f)]())
    return torch.nn.Sequential(*mods)
