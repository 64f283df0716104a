"""Activations: ``forward(Z) -> A`` and ``backward(dLdA=None)``.

``backward(dLdA)`` returns ``dLdZ``. ``backward()`` without an argument returns the
elementwise derivative ``dA/dZ`` of the handout (Softmax, whose Jacobian is not
elementwise, needs the argument). Derivatives are computed from the cached output ``A``
where the function allows it (sigmoid ``A(1-A)``, tanh ``1-A^2``, ReLU ``A > 0``).

Elementwise activations accept arrays of any shape; Softmax normalises over axis 1 of an
``(N, C)`` array. Non-floating inputs raise ``TypeError``; the output keeps the input's
dtype, library and device.
"""

from __future__ import annotations

import math
from typing import ClassVar

from .. import backend
from ..errors import XpnetTypeError
from ._checks import as_dtype, check_2d, check_float, check_same_shape, require_forward
from .module import Module

__all__ = ["GELU", "Identity", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class Activation(Module):
    """Shared plumbing: validation, the output cache and the two forms of ``backward``."""

    declared_caches: ClassVar[tuple[str, ...]] = ("A",)

    def __init__(self):
        self.A = None

    def forward(self, Z):
        """Apply the activation to ``Z`` and cache what ``backward`` needs."""
        xp = self._namespace(Z)
        check_float(Z, xp, self)
        return self.forward_unchecked(Z, xp)

    def backward(self, dLdA=None):
        """``dLdZ = dLdA * dA/dZ``; without ``dLdA``, the elementwise ``dA/dZ`` itself."""
        require_forward(self.A, self)
        if dLdA is None:
            return self._derivative(backend.namespace(self.A))
        xp = self._namespace(dLdA, self.A)
        check_float(dLdA, xp, (self, ".backward"), "dLdA")
        check_same_shape(dLdA, self.A.shape, (self, ".backward"), "dLdA")
        return self.backward_unchecked(as_dtype(dLdA, self.A.dtype, xp), xp)

    def backward_unchecked(self, dLdA, xp, *, input_grad=True):
        return dLdA * self._derivative(xp)


class Identity(Activation):
    """``A = Z``; ``dA/dZ = 1``."""

    def forward_unchecked(self, Z, xp):
        self.A = Z
        return Z

    def _derivative(self, xp):
        return xp.ones_like(self.A)

    def backward_unchecked(self, dLdA, xp, *, input_grad=True):
        return dLdA


class Sigmoid(Activation):
    """``A = 1 / (1 + exp(-Z))``; ``dA/dZ = A (1 - A)``.

    Evaluated as ``1/(1+e)`` for ``Z >= 0`` and ``e/(1+e)`` for ``Z < 0`` with
    ``e = exp(-|Z|) <= 1``, so no finite ``Z`` overflows.
    """

    def forward_unchecked(self, Z, xp):
        e = xp.exp(-xp.abs(Z))
        r = 1.0 / (1.0 + e)
        self.A = xp.where(Z >= 0, r, e * r)
        return self.A

    def _derivative(self, xp):
        return self.A * (1.0 - self.A)


class Tanh(Activation):
    """``A = tanh(Z)``; ``dA/dZ = 1 - A^2``."""

    def forward_unchecked(self, Z, xp):
        self.A = xp.tanh(Z)
        return self.A

    def _derivative(self, xp):
        return 1.0 - self.A * self.A


class ReLU(Activation):
    """``A = max(Z, 0)``; ``dA/dZ = 1`` where ``Z > 0``, else 0 (so ReLU'(0) = 0)."""

    def forward_unchecked(self, Z, xp):
        self.A = xp.maximum(Z, 0.0)
        return self.A

    def _derivative(self, xp):
        return xp.astype(self.A > 0, self.A.dtype)


_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_CLIP = 40.0  # Φ(-40) and φ(±40) underflow to 0 in float64 (and float32)


class GELU(Activation):
    """The exact GELU: ``A = Z Φ(Z)`` with ``Φ(Z) = erfc(-Z/√2) / 2``;
    ``dA/dZ = Φ(Z) + Z φ(Z)``, ``φ(Z) = exp(-Z²/2)/√(2π)``.

    ``Φ`` is computed through ``erfc``, which keeps full relative precision for large
    negative ``Z`` (where ``1 + erf`` would cancel). Caches ``A``, ``Z`` and ``Φ(Z)``.
    """

    declared_caches: ClassVar[tuple[str, ...]] = ("A", "Z", "cdf")

    def __init__(self):
        super().__init__()
        self.Z = self.cdf = None

    def forward_unchecked(self, Z, xp):
        self.Z = Z
        self.cdf = 0.5 * backend.erfc(-_SQRT1_2 * Z, xp=xp)
        # Φ(Z) is exactly 0 below -40, so clipping there changes no value and keeps
        # -inf * 0 (NaN) out: GELU(-inf) = -0.
        self.A = xp.clip(Z, min=-_CLIP) * self.cdf
        return self.A

    def _derivative(self, xp):
        Zc = xp.clip(self.Z, min=-_CLIP, max=_CLIP)  # φ is exactly 0 beyond ±40
        return self.cdf + Zc * (_INV_SQRT_2PI * xp.exp(-0.5 * (Zc * Zc)))


class Softmax(Activation):
    """``A = exp(Z - max_c Z) / Σ_c exp(Z - max_c Z)`` over axis 1 of ``(N, C)``;
    ``dLdZ = A ⊙ (dLdA - Σ_c dLdA ⊙ A)``.

    The Jacobian is not elementwise, so ``backward()`` requires ``dLdA``.
    """

    def forward(self, Z):
        xp = self._namespace(Z)
        check_float(Z, xp, self)
        check_2d(Z, self)
        return self.forward_unchecked(Z, xp)

    def forward_unchecked(self, Z, xp):
        e = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
        self.A = e / xp.sum(e, axis=1, keepdims=True)
        return self.A

    def _derivative(self, xp):
        raise XpnetTypeError(
            "Softmax.backward() needs dLdA: its Jacobian is not elementwise, so there is "
            "no dA/dZ array to return; call backward(dLdA)"
        )

    def backward_unchecked(self, dLdA, xp, *, input_grad=True):
        return self.A * (dLdA - xp.sum(dLdA * self.A, axis=1, keepdims=True))
