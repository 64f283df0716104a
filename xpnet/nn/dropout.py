"""Inverted dropout with masks drawn on the host, the same on every backend."""

from __future__ import annotations

from typing import ClassVar

from .. import backend
from .._typing import Array, Namespace, Seed
from ._checks import check_float, check_real, check_same_shape, require_forward
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Inverted dropout: zero entries with probability ``p``, scale the rest by ``1/(1-p)``.

    Only in training mode; in evaluation mode it is the identity. The mask is drawn from a
    seeded ``numpy.random.Generator`` on the host (uniform draws compared with ``p``), its
    values ``0`` and ``1 / (1 - p)`` rounded to the input's dtype there, and then moved to
    the input's device: one seed gives the same masks, step after step, on every backend.
    Backward multiplies by the same mask.

    Parameters
    ----------
    p : float
        The probability of zeroing an entry, in [0, 1).
    seed : int, numpy.random.Generator or None
        The host generator's seed (None: fresh entropy).

    Attributes
    ----------
    p : float
        As given.
    rng : numpy.random.Generator
        The host generator of the masks (its state is part of a resumable run).
    mask : array or None
        The mask of the last training-mode forward; None after an evaluation-mode one.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import Dropout
    >>> drop = Dropout(0.5, seed=0)
    >>> out = drop.forward(np.ones((2, 4), dtype=np.float32))
    >>> sorted(set(out.ravel().tolist()))
    [0.0, 2.0]
    >>> drop.eval().forward(np.ones((1, 2), dtype=np.float32)).tolist()
    [[1.0, 1.0]]
    """

    declared_caches: ClassVar[tuple[str, ...]] = ("mask",)

    def __init__(self, p: float = 0.5, *, seed: Seed = None) -> None:
        self.p = check_real(p, "p", "Dropout", low=0.0, high=1.0, high_open=True)
        self.rng = backend.host_rng(seed)
        self.mask: Array = None
        self._forwarded = False

    def extra_repr(self) -> str:
        """The probability, for ``repr``.

        Returns
        -------
        str
            ``"p=0.5"``.
        """
        return f"p={self.p}"

    def forward(self, X: Array) -> Array:
        """Drop entries of ``X`` (training) or pass it through (evaluation).

        Parameters
        ----------
        X : array
            Real floating input of any shape.

        Returns
        -------
        array
            Shaped like ``X``.
        """
        xp = self._namespace(X)
        check_float(X, xp, self)
        return self.forward_unchecked(X, xp)

    def forward_unchecked(self, X: Array, xp: Namespace) -> Array:
        """:meth:`forward` on an already checked ``X`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        X : array
            Real floating input.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            Shaped like ``X``.
        """
        self._forwarded = True
        if not self.training or self.p == 0.0:
            self.mask = None
            return X
        keep = self._keep(tuple(X.shape))
        host = (keep / (1.0 - self.p)).astype(backend.dtype_name(X.dtype))
        self.mask = xp.asarray(host, device=backend.device(X))
        return X * self.mask

    def _keep(self, shape):
        """The entries kept for an input of ``shape``: a host boolean array, each entry
        True with probability ``1 - p``."""
        return self.rng.random(shape) >= self.p

    def backward(self, dLdY: Array) -> Array:
        """The gradient with respect to the input: ``dLdY`` times the same mask.

        Parameters
        ----------
        dLdY : array
            Shaped like the last output.

        Returns
        -------
        array
            ``dLdX``.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        """
        require_forward(True if self._forwarded else None, self)
        xp = self._namespace(dLdY)
        check_float(dLdY, xp, (self, ".backward"), "dLdY")
        if self.mask is not None:
            check_same_shape(dLdY, self.mask.shape, (self, ".backward"), "dLdY")
        return self.backward_unchecked(dLdY, xp)

    def backward_unchecked(self, dLdY: Array, xp: Namespace, *, input_grad: bool = True) -> Array:
        """:meth:`backward` on an already checked ``dLdY`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        dLdY : array
            Shaped like the last output.
        xp : namespace
            Its namespace.
        input_grad : bool
            Ignored: the gradient with respect to the input is all there is.

        Returns
        -------
        array
            ``dLdX``.
        """
        return dLdY if self.mask is None else dLdY * self.mask
