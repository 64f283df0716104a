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
from .._typing import Array, Namespace
from ..errors import XpnetTypeError
from ._checks import as_dtype, check_2d, check_float, check_same_shape, require_forward
from .module import Module

__all__ = ["GELU", "Identity", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class Activation(Module):
    """Base of the activations: validation, the output cache and the two forms of backward.

    A subclass implements ``_activate(Z, xp)`` (returns ``A``, which
    :meth:`forward_unchecked` caches, and caches anything else the derivative needs) and
    ``_derivative(xp)`` (the elementwise ``dA/dZ``); Softmax, whose Jacobian is not
    elementwise, overrides ``_chain(dLdA, xp)`` instead.

    Attributes
    ----------
    A : array or None
        The output of the last ``forward``.
    """

    declared_caches: ClassVar[tuple[str, ...]] = ("A",)

    def __init__(self) -> None:
        self.A: Array = None

    def forward(self, Z: Array) -> Array:
        """Apply the activation and cache what ``backward`` needs.

        Parameters
        ----------
        Z : array
            Real floating input of any shape (Softmax: ``(N, C)``).

        Returns
        -------
        array
            ``A``, of ``Z``'s shape, dtype, library and device.
        """
        xp = self._namespace(Z)
        check_float(Z, xp, self)
        return self.forward_unchecked(Z, xp)

    def forward_unchecked(self, Z: Array, xp: Namespace) -> Array:
        """:meth:`forward` on an already checked ``Z`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        Z : array
            Real floating input.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            ``A``.
        """
        self.A = self._activate(Z, xp)
        return self.A

    def backward(self, dLdA: Array | None = None) -> Array:
        """The gradient with respect to the input, or the elementwise derivative.

        Parameters
        ----------
        dLdA : array, optional
            The gradient of the loss with respect to the output, shaped like it.

        Returns
        -------
        array
            ``dLdZ = dLdA * dA/dZ``; without ``dLdA``, the handout's elementwise
            ``dA/dZ`` itself.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        XpnetTypeError
            Softmax without ``dLdA``, or a non-floating ``dLdA``.
        """
        require_forward(self.A, self)
        if dLdA is None:
            return self._derivative(backend.namespace(self.A))
        xp = self._namespace(dLdA, self.A)
        check_float(dLdA, xp, (self, ".backward"), "dLdA")
        check_same_shape(dLdA, self.A.shape, (self, ".backward"), "dLdA")
        return self.backward_unchecked(as_dtype(dLdA, self.A.dtype, xp), xp)

    def backward_unchecked(self, dLdA: Array, xp: Namespace, *, input_grad: bool = True) -> Array:
        """:meth:`backward` on an already checked ``dLdA`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        dLdA : array
            The gradient with respect to the output.
        xp : namespace
            Its namespace.
        input_grad : bool
            Ignored: an activation's only gradient is the one with respect to its input.

        Returns
        -------
        array
            ``dLdZ``.
        """
        return self._chain(dLdA, xp)

    def _chain(self, dLdA, xp):
        return dLdA * self._derivative(xp)

    def _activate(self, Z, xp):
        raise NotImplementedError

    def _derivative(self, xp):
        raise NotImplementedError


class Identity(Activation):
    """``A = Z``; ``dA/dZ = 1``."""

    def _activate(self, Z, xp):
        return Z

    def _derivative(self, xp):
        return xp.ones_like(self.A)

    def _chain(self, dLdA, xp):
        return dLdA


class Sigmoid(Activation):
    """``A = 1 / (1 + exp(-Z))``; ``dA/dZ = A (1 - A)``.

    Evaluated as ``1/(1+e)`` for ``Z >= 0`` and ``e/(1+e)`` for ``Z < 0`` with
    ``e = exp(-|Z|) <= 1``, so no finite ``Z`` overflows.
    """

    def _activate(self, Z, xp):
        e = xp.exp(-xp.abs(Z))
        r = 1.0 / (1.0 + e)
        return xp.where(Z >= 0, r, e * r)

    def _derivative(self, xp):
        return self.A * (1.0 - self.A)


class Tanh(Activation):
    """``A = tanh(Z)``; ``dA/dZ = 1 - A^2``."""

    def _activate(self, Z, xp):
        return xp.tanh(Z)

    def _derivative(self, xp):
        return 1.0 - self.A * self.A


class ReLU(Activation):
    """``A = max(Z, 0)``; ``dA/dZ = 1`` where ``Z > 0``, else 0 (so ReLU'(0) = 0)."""

    def _activate(self, Z, xp):
        return xp.maximum(Z, 0.0)

    def _derivative(self, xp):
        return xp.astype(self.A > 0, self.A.dtype)


_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_CLIP = 40.0  # Φ(-40) and φ(±40) underflow to 0 in float64 (and float32)


class GELU(Activation):
    """The exact GELU: ``A = Z Φ(Z)``; ``dA/dZ = Φ(Z) + Z φ(Z)``.

    ``Φ(Z) = erfc(-Z/√2) / 2`` is the standard normal distribution function and
    ``φ(Z) = exp(-Z²/2)/√(2π)`` its density. ``Φ`` is computed through ``erfc``, which
    keeps full relative precision for large negative ``Z`` (where ``1 + erf`` would
    cancel). Caches ``A``, ``Z`` and ``Φ(Z)``.
    """

    declared_caches: ClassVar[tuple[str, ...]] = ("A", "Z", "cdf")

    def __init__(self) -> None:
        super().__init__()
        self.Z: Array = None
        self.cdf: Array = None

    def _activate(self, Z, xp):
        self.Z = Z
        self.cdf = 0.5 * backend.erfc(-_SQRT1_2 * Z, xp=xp)
        # Φ(Z) is exactly 0 below -40, so clipping there changes no value and keeps
        # -inf * 0 (NaN) out: GELU(-inf) = -0.
        return xp.clip(Z, min=-_CLIP) * self.cdf

    def _derivative(self, xp):
        Zc = xp.clip(self.Z, min=-_CLIP, max=_CLIP)  # φ is exactly 0 beyond ±40
        return self.cdf + Zc * (_INV_SQRT_2PI * xp.exp(-0.5 * (Zc * Zc)))


class Softmax(Activation):
    """Softmax over axis 1: ``A = exp(Z - max_c Z) / Σ_c exp(Z - max_c Z)``.

    Backward: ``dLdZ = A ⊙ (dLdA - Σ_c dLdA ⊙ A)``. The Jacobian is not elementwise, so
    ``backward()`` requires ``dLdA``.
    """

    def forward(self, Z: Array) -> Array:
        """Normalise each row of ``Z`` to probabilities.

        Parameters
        ----------
        Z : array
            ``(N, C)`` real floating scores.

        Returns
        -------
        array
            ``(N, C)``, each row summing to one.
        """
        xp = self._namespace(Z)
        check_float(Z, xp, self)
        check_2d(Z, self)
        return self.forward_unchecked(Z, xp)

    def _activate(self, Z, xp):
        e = xp.exp(Z - xp.max(Z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def _derivative(self, xp):
        raise XpnetTypeError(
            "Softmax.backward() needs dLdA: its Jacobian is not elementwise, so there is "
            "no dA/dZ array to return; call backward(dLdA)"
        )

    def _chain(self, dLdA, xp):
        return self.A * (dLdA - xp.sum(dLdA * self.A, axis=1, keepdims=True))
