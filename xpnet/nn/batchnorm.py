"""Batch normalisation over the batch axis of ``(N, C)`` activations."""

from __future__ import annotations

from typing import ClassVar

from .. import backend
from ..errors import XpnetValueError
from ._checks import (
    as_dtype,
    check_2d,
    check_float,
    check_real,
    check_same_shape,
    check_size,
    require_forward,
)
from .module import Module

__all__ = ["BatchNorm1d"]


class BatchNorm1d(Module):
    """``BZ = BW ⊙ (Z - M)/sqrt(V + eps) + Bb`` with per-feature statistics.

    Training: ``M`` and ``V`` are the batch mean and **biased** variance (divide by N), and
    the running statistics follow ``running = alpha·running + (1 - alpha)·batch`` (the
    handout's convention; PyTorch's ``momentum`` is ``1 - alpha`` and its running variance
    is unbiased). Evaluation: ``running_M`` and ``running_V`` normalise, and stay untouched.

    Backward (exact, the handout's appendix in compact form), with ``G = dLdBZ ⊙ BW``::

        dLdBW = Σ_n dLdBZ ⊙ NZ        dLdBb = Σ_n dLdBZ
        dLdZ  = (G - mean_n G - NZ ⊙ mean_n(G ⊙ NZ)) / sqrt(V + eps)
              = BW/sqrt(V + eps) ⊙ (dLdBZ - dLdBb/N - NZ ⊙ dLdBW/N)

    (the second form reuses the parameter gradients and saves two passes over the batch).
    After an evaluation-mode forward, backward treats the running statistics as constants:
    ``dLdZ = G / sqrt(running_V + eps)``.

    Parameters
    ----------
    num_features : int
        ``C``.
    alpha : float
        Weight of the old running statistics, in [0, 1]. Default 0.9.
    eps : float
        Added to the variance, > 0. Default 1e-8 (the handout's; PyTorch uses 1e-5).
    xp, device, dtype
        As for :class:`~xpnet.nn.Linear`.

    Shape:
        ``Z``: ``(N, C)`` -> ``BZ``: ``(N, C)``. Training needs ``N >= 2``.

    Attributes:
        BW, Bb: scale (ones) and shift (zeros), ``(1, C)``. dLdBW, dLdBb: their gradients.
        running_M, running_V: ``(1, C)``, starting at zeros and ones.
        M, V: the statistics of the last forward, ``(1, C)``.
        Z, NZ, BZ: the last input, normalised input and output, ``(N, C)``.

    Example
    -------
    >>> import numpy as np
    >>> from xpnet.nn import BatchNorm1d
    >>> bn = BatchNorm1d(2, dtype="float64")
    >>> bn.forward(np.array([[1.0, 4.0], [3.0, 0.0]])).round(6).tolist()
    [[-1.0, 1.0], [1.0, -1.0]]
    """

    declared_parameters: ClassVar[dict[str, str]] = {"BW": "dLdBW", "Bb": "dLdBb"}
    declared_buffers: ClassVar[tuple[str, ...]] = ("running_M", "running_V")
    declared_caches: ClassVar[tuple[str, ...]] = ("Z", "NZ", "BZ", "M", "V", "_inv_std")

    def __init__(self, num_features, alpha=0.9, eps=1e-8, *, xp=None, device=None, dtype=None):
        self.num_features = check_size(num_features, "num_features", "BatchNorm1d")
        self.alpha = check_real(alpha, "alpha", "BatchNorm1d", low=0.0, high=1.0)
        self.eps = check_real(eps, "eps", "BatchNorm1d", low=0.0, low_open=True)
        xp = backend.get(xp)
        device = backend.resolve_device(xp, device)
        dtype = backend.resolve_dtype(xp, dtype)
        shape = (1, self.num_features)
        self.BW = xp.ones(shape, dtype=dtype, device=device)
        self.Bb = xp.zeros(shape, dtype=dtype, device=device)
        self.running_M = xp.zeros(shape, dtype=dtype, device=device)
        self.running_V = xp.ones(shape, dtype=dtype, device=device)
        self.dLdBW = self.dLdBb = None
        self.Z = self.NZ = self.BZ = self.M = self.V = self._inv_std = None
        self._evaluated = False

    def extra_repr(self):
        return f"{self.num_features}, alpha={self.alpha}, eps={self.eps}"

    def forward(self, Z, eval=None):
        """Normalise ``Z``; ``eval=None`` follows ``train()``/``eval()``."""
        xp = self._namespace(Z, self.BW)
        check_float(Z, xp, self)
        check_2d(Z, self, features=self.num_features)
        evaluate = (not self.training) if eval is None else bool(eval)
        if not evaluate:
            self.check_batch(Z.shape[0])
        return self._forward(as_dtype(Z, self.BW.dtype, xp), xp, evaluate)

    def check_batch(self, n):
        """Raise ``ValueError`` when a training batch of ``n`` rows is too small (one row
        has no variance). Containers call it once for their input batch."""
        if n < 2:
            raise XpnetValueError(
                f"{self._label()}: training needs a batch of at least 2 rows to compute a "
                f"variance, got {n}; use a larger batch or call eval()"
            )

    def forward_unchecked(self, Z, xp):
        """Normalise a checked ``Z``, following ``train()``/``eval()`` (see :class:`Module`)."""
        return self._forward(Z, xp, not self.training)

    def _forward(self, Z, xp, evaluate):
        self.Z = Z
        self._evaluated = evaluate
        if evaluate:
            M, V = self.running_M, self.running_V
            D = Z - M
        else:
            M = xp.mean(Z, axis=0, keepdims=True)
            D = Z - M
            V = xp.mean(D * D, axis=0, keepdims=True)
            a = self.alpha
            self.running_M = a * self.running_M + (1.0 - a) * M
            self.running_V = a * self.running_V + (1.0 - a) * V
        self.M, self.V = M, V
        self._inv_std = 1.0 / xp.sqrt(V + self.eps)
        self.NZ = D * self._inv_std
        self.BZ = self.BW * self.NZ + self.Bb
        return self.BZ

    def backward(self, dLdBZ):
        """Store ``dLdBW``, ``dLdBb`` and return ``dLdZ`` for ``dLdBZ`` of shape ``(N, C)``."""
        require_forward(self.NZ, self)
        xp = self._namespace(dLdBZ, self.BW)
        check_float(dLdBZ, xp, (self, ".backward"), "dLdBZ")
        check_same_shape(dLdBZ, self.NZ.shape, (self, ".backward"), "dLdBZ")
        return self.backward_unchecked(as_dtype(dLdBZ, self.BW.dtype, xp), xp)

    def backward_unchecked(self, dLdBZ, xp, *, input_grad=True):
        """Store ``dLdBW``, ``dLdBb``; return ``dLdZ`` (always: BatchNorm is never first)."""
        NZ = self.NZ
        self.dLdBW = xp.sum(dLdBZ * NZ, axis=0, keepdims=True)
        self.dLdBb = xp.sum(dLdBZ, axis=0, keepdims=True)
        scale = self.BW * self._inv_std  # (1, C)
        if self._evaluated:
            return dLdBZ * scale
        # mean_n(G) = BW·dLdBb/N and mean_n(G ⊙ NZ) = BW·dLdBW/N, so the exact gradient
        # needs no further pass over the batch for them:
        n = dLdBZ.shape[0]
        return (dLdBZ - self.dLdBb / n - NZ * (self.dLdBW / n)) * scale
