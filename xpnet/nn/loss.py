"""Losses: ``forward(A, Y)`` returns a 0-d array, ``backward()`` returns ``dL/dA``.

The 0-d array is of the input's library (NumPy too, where a full reduction would give a
NumPy scalar).

The gradient is the exact gradient of the scalar that ``forward`` returned (the same
numbers as PyTorch autograd), not the handout's ``A - Y``.
"""

from __future__ import annotations

from typing import ClassVar

from .. import backend
from .._typing import Array, Namespace
from ..errors import XpnetTypeError, XpnetValueError
from ._checks import as_dtype, check_2d, check_float, require_forward
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


class _Loss(Module):
    declared_caches: ClassVar[tuple[str, ...]] = ("A", "Y")

    def __init__(self) -> None:
        self.A: Array = None
        self.Y: Array = None

    def _inputs(self, A, Y):
        try:
            xp = backend.namespace(A, Y)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"{self._label()}: A and Y must be arrays of one library on one device: {err}"
            ) from None
        check_float(A, xp, self._label(), "A")
        check_2d(A, self._label(), "A")
        return xp

    def backward(self) -> Array:
        """The gradient of the last ``forward``'s loss with respect to ``A``.

        Returns
        -------
        array
            ``dL/dA``, shaped like ``A``.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        """
        require_forward(self.A, self._label())
        return self._backward(backend.namespace(self.A))

    def _backward(self, xp):
        raise NotImplementedError

    # a loss's unchecked entry takes the targets too
    def forward_unchecked(self, A: Array, Y: Array, xp: Namespace) -> Array:  # type: ignore[override]
        """:meth:`forward` on inputs already checked, with no host synchronisation.

        The training loop checks its targets once per dataset and then calls this on every
        step: nothing here reads a value back from the device.

        Parameters
        ----------
        A : array
            ``(N, C)`` real floating predictions or logits.
        Y : array
            Targets shaped as :meth:`forward` accepts them, already known to be valid
            (integer labels, where accepted, within ``[0, C)``).
        xp : namespace
            The namespace of ``A`` and ``Y``.

        Returns
        -------
        array
            The loss, 0-d.
        """
        return self._forward(A, self._checked_targets(Y, A, xp), xp)

    def _checked_targets(self, Y, A, xp):
        return as_dtype(Y, A.dtype, xp)

    def _forward(self, A, Y, xp):
        raise NotImplementedError


class MSELoss(_Loss):
    """Mean squared error: ``L = Σ (A - Y)² / (N C)``; ``dL/dA = 2 (A - Y) / (N C)``.

    Attributes
    ----------
    A, Y : array or None
        The last inputs, kept for ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import MSELoss
    >>> float(MSELoss().forward(np.zeros((2, 2)), np.ones((2, 2))))
    1.0
    """

    def forward(self, A: Array, Y: Array) -> Array:
        """The mean squared error of ``A`` against ``Y``.

        Parameters
        ----------
        A : array
            ``(N, C)`` real floating predictions.
        Y : array
            ``(N, C)`` targets, of ``A``'s library and device (cast to its dtype).

        Returns
        -------
        array
            0-d, of ``A``'s dtype.

        Raises
        ------
        XpnetValueError
            ``Y`` is shaped otherwise.
        """
        xp = self._inputs(A, Y)
        if tuple(Y.shape) != tuple(A.shape):
            raise XpnetValueError(
                f"{self._label()}: A and Y must have the same shape, got A {tuple(A.shape)} and "
                f"Y {tuple(Y.shape)}"
            )
        return self._forward(A, as_dtype(Y, A.dtype, xp), xp)

    def _forward(self, A, Y, xp):
        self.A, self.Y = A, Y
        D = A - Y
        return xp.asarray(xp.sum(D * D) / (A.shape[0] * A.shape[1]))

    def _backward(self, xp):
        N, C = self.A.shape
        return (2.0 / (N * C)) * (self.A - self.Y)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits: ``L = -(1/N) Σ_n Σ_c Y log softmax(A)``.

    Backward: ``dL/dA = (softmax(A) - Y) / N``. ``log softmax`` is
    ``(A - m) - log Σ exp(A - m)`` with ``m`` the row maximum, so logits of ±1e4 give a
    finite loss in float32.

    Attributes
    ----------
    A, Y : array or None
        The last logits and the targets as ``(N, C)`` probabilities.
    softmax : array or None
        ``softmax(A)``, kept for ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import CrossEntropyLoss
    >>> loss = CrossEntropyLoss()
    >>> round(float(loss.forward(np.zeros((2, 3)), np.array([0, 2]))), 4)
    1.0986
    """

    declared_caches: ClassVar[tuple[str, ...]] = ("A", "Y", "softmax", "_classes")

    def __init__(self) -> None:
        super().__init__()
        self.softmax: Array = None
        self._classes = None  # (key, arange(C)) for one-hot targets of integer labels

    def forward_unchecked(self, A: Array, Y: Array, xp: Namespace) -> Array:  # type: ignore[override]
        """:meth:`forward` on inputs already checked, with no host synchronisation.

        Parameters
        ----------
        A : array
            ``(N, C)`` logits.
        Y : array
            ``(N, C)`` targets or ``(N,)`` integer labels in ``[0, C)``, already checked.
        xp : namespace
            The namespace of ``A`` and ``Y``.

        Returns
        -------
        array
            The loss, 0-d.
        """
        return self._forward(A, self._checked_targets(Y, A, xp), xp)

    def forward(self, A: Array, Y: Array) -> Array:
        """The mean cross-entropy of the logits ``A`` against the targets ``Y``.

        Parameters
        ----------
        A : array
            ``(N, C)`` real floating logits.
        Y : array
            ``(N, C)`` one-hot or soft targets (cast to ``A``'s dtype), or ``(N,)``
            integer class labels in ``[0, C)``; of ``A``'s library and device.

        Returns
        -------
        array
            0-d, of ``A``'s dtype.

        Raises
        ------
        XpnetTypeError
            ``(N,)`` targets that are not integers.
        XpnetValueError
            Targets of another shape, or labels outside ``[0, C)``.
        """
        xp = self._inputs(A, Y)
        N, C = A.shape
        if Y.ndim == 1:
            Y = self._one_hot(Y, C, A, xp)
        elif tuple(Y.shape) != (N, C):
            raise XpnetValueError(
                f"{self._label()}: targets must be (N,) class labels or (N, C) probabilities "
                f"matching A {(N, C)}, got shape {tuple(Y.shape)}"
            )
        return self._forward(A, as_dtype(Y, A.dtype, xp), xp)

    def _checked_targets(self, Y, A, xp):
        if Y.ndim == 1:
            return self._one_hot(Y, A.shape[1], A, xp, checked=True)
        return as_dtype(Y, A.dtype, xp)

    def _one_hot(self, labels, C, A, xp, checked=False):
        if not backend.is_integral(xp, labels.dtype):
            raise XpnetTypeError(
                f"{self._label()}: (N,) targets must be integer class labels, got dtype "
                f"{labels.dtype}; pass probabilities as an (N, C) array"
            )
        if labels.shape[0] != A.shape[0]:
            raise XpnetValueError(
                f"{self._label()}: {labels.shape[0]} labels for {A.shape[0]} rows of logits"
            )
        key = (type(labels), C, labels.dtype, backend.device(labels))
        if self._classes is None or self._classes[0] != key:
            self._classes = (key, xp.arange(C, dtype=labels.dtype, device=key[3]))
        Y = xp.astype(xp.reshape(labels, (-1, 1)) == self._classes[1], A.dtype)
        # One reduction checks the range: a label outside [0, C) leaves its row all zero.
        # (It reads a value back, so the training loop checks its labels once instead.)
        if not checked and float(xp.sum(Y)) != labels.shape[0]:
            low, high = int(xp.min(labels)), int(xp.max(labels))
            raise XpnetValueError(
                f"{self._label()}: class labels must lie in [0, {C}) for {C} logits per row, "
                f"got values from {low} to {high}"
            )
        return Y

    def _forward(self, A, Y, xp):
        self.A, self.Y = A, Y
        shifted = A - xp.max(A, axis=1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=1, keepdims=True)
        self.softmax = e / total
        log_softmax = shifted - xp.log(total)
        return xp.asarray(xp.sum(Y * log_softmax) / -A.shape[0])

    def _backward(self, xp):
        return (self.softmax - self.Y) / self.A.shape[0]
