"""Batch normalisation over the batch axis of ``(N, C)`` activations."""

from __future__ import annotations

from typing import ClassVar

from .._typing import Array, Device, DType, Namespace
from ..errors import XpnetValueError
from ._checks import (
    as_dtype,
    check_2d,
    check_float,
    check_real,
    check_same_shape,
    check_size,
    require_forward,
    resolve_placement,
)
from .module import Module

__all__ = ["BatchNorm1d"]


class BatchNorm1d(Module):
    """Batch normalisation: ``BZ = BW ⊙ (Z - M)/sqrt(V + eps) + Bb`` per feature.

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
    xp : str or namespace, optional
        Library of the parameters, as for :class:`~xpnet.nn.Linear`.
    device : optional
        Device of the parameters (library default when None).
    dtype : optional
        ``float32`` (default) or ``float64``.

    Attributes
    ----------
    BW, Bb : array
        Scale (ones at first) and shift (zeros), ``(1, C)``.
    dLdBW, dLdBb : array or None
        Their gradients, set by ``backward``.
    running_M, running_V : array
        ``(1, C)`` running statistics, starting at zeros and ones.
    M, V : array or None
        The statistics the last forward normalised with, ``(1, C)``.
    Z, NZ, BZ : array or None
        The last input, normalised input and output, ``(N, C)``; training needs N >= 2.
    num_features, alpha, eps
        As given.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import BatchNorm1d
    >>> bn = BatchNorm1d(2, dtype="float64")
    >>> bn.forward(np.array([[1.0, 4.0], [3.0, 0.0]])).round(6).tolist()
    [[-1.0, 1.0], [1.0, -1.0]]
    """

    declared_parameters: ClassVar[dict[str, str]] = {"BW": "dLdBW", "Bb": "dLdBb"}
    declared_buffers: ClassVar[tuple[str, ...]] = ("running_M", "running_V")
    declared_caches: ClassVar[tuple[str, ...]] = (
        "Z",
        "NZ",
        "BZ",
        "M",
        "V",
        "_inv_std",
    )

    def __init__(
        self,
        num_features: int,
        alpha: float = 0.9,
        eps: float = 1e-8,
        *,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
    ) -> None:
        self.num_features = check_size(num_features, "num_features", "BatchNorm1d")
        self.alpha = check_real(alpha, "alpha", "BatchNorm1d", low=0.0, high=1.0)
        self.eps = check_real(eps, "eps", "BatchNorm1d", low=0.0, low_open=True)
        xp, device, dtype = resolve_placement(xp, device, dtype, "BatchNorm1d")
        shape = (1, self.num_features)
        self.BW = xp.ones(shape, dtype=dtype, device=device)
        self.Bb = xp.zeros(shape, dtype=dtype, device=device)
        self.running_M = xp.zeros(shape, dtype=dtype, device=device)
        self.running_V = xp.ones(shape, dtype=dtype, device=device)
        self.dLdBW: Array = None
        self.dLdBb: Array = None
        self.Z: Array = None
        self.NZ: Array = None
        self.BZ: Array = None
        self.M: Array = None
        self.V: Array = None
        self._inv_std: Array = None
        self._evaluated = False

    def extra_repr(self) -> str:
        """The constructor arguments, for ``repr``.

        Returns
        -------
        str
            ``"3, alpha=0.9, eps=1e-08"``.
        """
        return f"{self.num_features}, alpha={self.alpha}, eps={self.eps}"

    def forward(self, Z: Array, eval: bool | None = None) -> Array:
        """Normalise ``Z`` with batch statistics (training) or running ones (evaluation).

        Parameters
        ----------
        Z : array
            ``(N, C)``; training needs N >= 2.
        eval : bool, optional
            Evaluation-mode normalisation; None follows :meth:`~xpnet.nn.Module.train`
            and :meth:`~xpnet.nn.Module.eval`.

        Returns
        -------
        array
            ``BZ``, ``(N, C)``.

        Raises
        ------
        XpnetValueError
            A shape other than ``(N, C)``, or a training batch of one row.
        """
        xp = self._namespace(Z, self.BW)
        check_float(Z, xp, self)
        check_2d(Z, self, features=self.num_features)
        evaluate = (not self.training) if eval is None else bool(eval)
        if not evaluate:
            self.check_batch(Z.shape[0])
        return self._forward(as_dtype(Z, self.BW.dtype, xp), xp, evaluate)

    def check_batch(self, n: int) -> None:
        """Refuse a training batch too small to have a variance.

        Containers call it once for their input batch.

        Parameters
        ----------
        n : int
            The batch size.

        Raises
        ------
        XpnetValueError
            ``n < 2``.
        """
        if n < 2:
            raise XpnetValueError(
                f"{self._label()}: training needs a batch of at least 2 rows to compute a "
                f"variance, got {n}; use a larger batch or call eval()"
            )

    def forward_unchecked(self, Z: Array, xp: Namespace) -> Array:
        """:meth:`forward` on an already checked ``Z``, following the module's mode.

        Parameters
        ----------
        Z : array
            ``(N, C)`` of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            ``BZ``.
        """
        return self._forward(Z, xp, not self.training)

    def _batch_statistics(self, Z, xp):
        """The training statistics: ``M``, ``V`` and the centred batch ``D = Z - M``.

        The mean, and the **biased** variance in two passes (``mean(D²)``, which keeps the
        digits ``mean(Z²) - M²`` would lose to cancellation).
        """
        M = xp.mean(Z, axis=0, keepdims=True)
        D = Z - M
        return M, xp.mean(D * D, axis=0, keepdims=True), D

    def _gradient_sums(self, dLdBZ, xp):
        """``(N, Σ dLdBZ, Σ dLdBZ ⊙ NZ)`` over the batch the statistics came from: this
        one's, which are ``dLdBb`` and ``dLdBW``."""
        return dLdBZ.shape[0], self.dLdBb, self.dLdBW

    def _forward(self, Z, xp, evaluate):
        self.Z = Z
        self._evaluated = evaluate
        if evaluate:
            M, V = self.running_M, self.running_V
            D = Z - M
        else:
            M, V, D = self._batch_statistics(Z, xp)
        if not evaluate:
            a = self.alpha
            self.running_M = a * self.running_M + (1.0 - a) * M
            self.running_V = a * self.running_V + (1.0 - a) * V
        self.M, self.V = M, V
        self._inv_std = 1.0 / xp.sqrt(V + self.eps)
        self.NZ = D * self._inv_std
        self.BZ = self.BW * self.NZ + self.Bb
        return self.BZ

    def backward(self, dLdBZ: Array) -> Array:
        """Store ``dLdBW`` and ``dLdBb`` and return the exact ``dLdZ``.

        Parameters
        ----------
        dLdBZ : array
            ``(N, C)``, the gradient of the loss with respect to the output.

        Returns
        -------
        array
            ``dLdZ``, ``(N, C)``.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        """
        require_forward(self.NZ, self)
        xp = self._namespace(dLdBZ, self.BW)
        check_float(dLdBZ, xp, (self, ".backward"), "dLdBZ")
        check_same_shape(dLdBZ, self.NZ.shape, (self, ".backward"), "dLdBZ")
        return self.backward_unchecked(as_dtype(dLdBZ, self.BW.dtype, xp), xp)

    def backward_unchecked(self, dLdBZ: Array, xp: Namespace, *, input_grad: bool = True) -> Array:
        """:meth:`backward` on an already checked ``dLdBZ`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        dLdBZ : array
            ``(N, C)`` of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.
        input_grad : bool
            Ignored: ``dLdZ`` is always computed.

        Returns
        -------
        array
            ``dLdZ``.
        """
        NZ = self.NZ
        self.dLdBW = xp.sum(dLdBZ * NZ, axis=0, keepdims=True)
        self.dLdBb = xp.sum(dLdBZ, axis=0, keepdims=True)
        scale = self.BW * self._inv_std  # (1, C)
        if self._evaluated:
            return dLdBZ * scale
        # mean_n(G) = BW·dLdBb/N and mean_n(G ⊙ NZ) = BW·dLdBW/N, so the exact gradient
        # needs no further pass over the batch for them:
        n, sum_b, sum_w = self._gradient_sums(dLdBZ, xp)
        return (dLdBZ - sum_b / n - NZ * (sum_w / n)) * scale
