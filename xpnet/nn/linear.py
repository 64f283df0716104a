"""The fully connected layer."""

from __future__ import annotations

import math
from typing import ClassVar

from .. import backend
from .._typing import Array, Device, DType, Namespace, Seed
from ..errors import XpnetValueError
from ._checks import (
    as_dtype,
    check_2d,
    check_float,
    check_size,
    require_forward,
    resolve_placement,
)
from .module import Module

__all__ = ["Linear"]


class Linear(Module):
    """Affine map ``Z = A Wᵀ + ι bᵀ``.

    Backward (exact gradients of the loss, no division by N)::

        dLdW = dLdZᵀ A      dLdb = Σ_n dLdZ (as a column)      dLdA = dLdZ W

    Parameters
    ----------
    in_features, out_features : int
        ``C_in`` and ``C_out``.
    xp : str or namespace, optional
        Library of the parameters: a library name that :func:`xpnet.backend.get` takes
        (``"numpy"`` by default) or an array namespace.
    device : optional
        Device of the parameters (library default when None).
    dtype : optional
        ``float32`` (default) or ``float64``, as a name or a library dtype.
    seed : int, numpy.random.Generator or None
        Source of the initial values; ``None`` draws fresh entropy. ``W`` and ``b`` are
        drawn from U(-1/√C_in, 1/√C_in) in float64 on the host, as ``torch.nn.Linear``
        does, rounded to ``dtype`` there and then moved: one seed gives bit-identical
        parameters on every backend.

    Attributes
    ----------
    W : array
        ``(C_out, C_in)`` weights.
    b : array
        ``(C_out, 1)`` bias, a column as in the handout.
    dLdW, dLdb : array or None
        Their gradients, shaped like them, set by ``backward`` (None before).
    A : array or None
        The last input ``(N, C_in)``, kept for ``backward``.
    in_features, out_features : int
        ``C_in`` and ``C_out``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import Linear
    >>> layer = Linear(2, 3, seed=0)
    >>> layer.forward(np.ones((4, 2), dtype=np.float32)).shape
    (4, 3)
    """

    declared_parameters: ClassVar[dict[str, str]] = {"W": "dLdW", "b": "dLdb"}
    declared_caches: ClassVar[tuple[str, ...]] = ("A",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
        seed: Seed = None,
    ) -> None:
        self.in_features = check_size(in_features, "in_features", "Linear")
        self.out_features = check_size(out_features, "out_features", "Linear")
        xp, device, dtype = resolve_placement(xp, device, dtype, "Linear")
        rng = backend.host_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        shape_W = (self.out_features, self.in_features)
        self.W = backend.host_uniform(rng, -bound, bound, shape_W, xp, device=device, dtype=dtype)
        shape_b = (self.out_features, 1)
        self.b = backend.host_uniform(rng, -bound, bound, shape_b, xp, device=device, dtype=dtype)
        self.dLdW: Array = None
        self.dLdb: Array = None
        self.A: Array = None

    def extra_repr(self) -> str:
        """The constructor arguments, for ``repr``.

        Returns
        -------
        str
            ``"in_features=2, out_features=3"``.
        """
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def forward(self, A: Array) -> Array:
        """Compute ``Z = A Wᵀ + ι bᵀ`` and keep ``A`` for ``backward``.

        Parameters
        ----------
        A : array
            ``(N, C_in)``, of the parameters' library and device; float inputs of another
            precision are cast to the parameters' dtype.

        Returns
        -------
        array
            ``Z``, ``(N, C_out)``.

        Raises
        ------
        XpnetTypeError
            A non-floating ``A``, or one of another library.
        XpnetValueError
            A shape other than ``(N, C_in)``, or another device.
        """
        xp = self._namespace(A, self.W)
        check_float(A, xp, self)
        check_2d(A, self, features=self.in_features)
        return self.forward_unchecked(as_dtype(A, self.W.dtype, xp), xp)

    def forward_unchecked(self, A: Array, xp: Namespace) -> Array:
        """:meth:`forward` on an already checked ``A`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        A : array
            ``(N, C_in)`` of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            ``Z``.
        """
        self.A = A
        return A @ self.W.T + self.b.T

    def backward(self, dLdZ: Array) -> Array:
        """Store ``dLdW = dLdZᵀ A``, ``dLdb = Σ_n dLdZ`` and return ``dLdA = dLdZ W``.

        Parameters
        ----------
        dLdZ : array
            ``(N, C_out)``, the gradient of the loss with respect to the output.

        Returns
        -------
        array
            ``dLdA``, ``(N, C_in)``.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        """
        require_forward(self.A, self)
        xp = self._namespace(dLdZ, self.W)
        check_float(dLdZ, xp, (self, ".backward"), "dLdZ")
        check_2d(dLdZ, (self, ".backward"), "dLdZ", features=self.out_features)
        if dLdZ.shape[0] != self.A.shape[0]:
            raise XpnetValueError(
                f"{self._label()}.backward: dLdZ has {dLdZ.shape[0]} rows but the forward batch "
                f"had {self.A.shape[0]}"
            )
        return self.backward_unchecked(as_dtype(dLdZ, self.W.dtype, xp), xp)

    def backward_unchecked(self, dLdZ: Array, xp: Namespace, *, input_grad: bool = True) -> Array:
        """:meth:`backward` on an already checked ``dLdZ`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        dLdZ : array
            ``(N, C_out)`` of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.
        input_grad : bool
            Compute ``dLdA``; a first layer, whose input is the data, skips it.

        Returns
        -------
        array or None
            ``dLdA``, or None without ``input_grad``.
        """
        self.dLdW = dLdZ.T @ self.A
        self.dLdb = xp.sum(dLdZ, axis=0, keepdims=True).T
        return dLdZ @ self.W if input_grad else None
