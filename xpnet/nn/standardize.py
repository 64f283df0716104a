"""Input scaling that belongs to the model: ``Y = (X - mean) / scale``, column by column."""

from __future__ import annotations

from typing import ClassVar

from .._typing import Array, Device, DType, Namespace
from ._checks import (
    as_dtype,
    check_2d,
    check_float,
    check_same_shape,
    check_size,
    require_forward,
    resolve_placement,
)
from .module import Module

__all__ = ["Standardize"]


class Standardize(Module):
    """Fixed input scaling: ``Y = (X - mean) / scale`` per feature column.

    A model that starts with this layer takes its inputs as the data files hold them, so
    whoever runs the model (``xpnet predict``, :func:`xpnet.load`, an exported ONNX graph)
    cannot forget the scaling it was trained with. ``mean`` and ``scale`` are buffers, not
    parameters: they are saved with the model (and covered by a checkpoint's hash) but no
    optimizer changes them. They are set once, before training, from the training split:
    ``scale`` is the column's standard deviation (population form, as scikit-learn's
    ``StandardScaler`` takes it) with a constant column's 0 replaced by 1, or a dataset's
    fixed range (255 for 8-bit images, with ``mean`` 0). See :mod:`xpnet.data.scaling`.

    The subtraction runs in the model's dtype: on float32, features whose mean is large
    against their spread (1e4 with a spread of 1e-2) lose digits that a float64
    preprocessing step would keep.

    ``backward(dLdY)`` returns ``dLdX = dLdY / scale``.

    Parameters
    ----------
    num_features : int
        ``C``.
    xp : str or namespace, optional
        Library of the buffers (default NumPy).
    device : optional
        Their device (library default when None).
    dtype : optional
        ``float32`` (default) or ``float64``.

    Attributes
    ----------
    mean : array
        ``(1, C)``, zeros until set.
    scale : array
        ``(1, C)``, ones until set; every entry positive.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.nn import Standardize
    >>> layer = Standardize(2, dtype="float64")
    >>> layer.load_state_dict({"mean": np.array([[1.0, 10.0]]), "scale": np.array([[2.0, 5.0]])})
    Standardize(num_features=2)
    >>> layer.forward(np.array([[3.0, 0.0]])).tolist()
    [[1.0, -2.0]]
    """

    declared_buffers: ClassVar[tuple[str, ...]] = ("mean", "scale")
    declared_caches: ClassVar[tuple[str, ...]] = ("_rows",)

    def __init__(
        self,
        num_features: int,
        *,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
    ) -> None:
        self.num_features = check_size(num_features, "num_features", "Standardize")
        xp, device, dtype = resolve_placement(xp, device, dtype, "Standardize")
        self.mean = xp.zeros((1, self.num_features), dtype=dtype, device=device)
        self.scale = xp.ones((1, self.num_features), dtype=dtype, device=device)
        self._rows: int | None = None

    def extra_repr(self) -> str:
        """The width, for ``repr``.

        Returns
        -------
        str
            ``"num_features=64"``.
        """
        return f"num_features={self.num_features}"

    def forward(self, X: Array) -> Array:
        """Scale ``X`` column by column.

        Parameters
        ----------
        X : array
            ``(N, C)`` real floating, of the buffers' library and device.

        Returns
        -------
        array
            ``(N, C)``: ``(X - mean) / scale``.
        """
        xp = self._namespace(X, self.mean)
        check_float(X, xp, self)
        check_2d(X, self, features=self.num_features)
        return self.forward_unchecked(as_dtype(X, self.mean.dtype, xp), xp)

    def forward_unchecked(self, X: Array, xp: Namespace) -> Array:
        """:meth:`forward` on an already checked ``X`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        X : array
            ``(N, C)`` of the buffers' library, device and dtype.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            ``(N, C)``.
        """
        self._rows = X.shape[0]  # None where the library traces a symbolic batch
        return (X - self.mean) / self.scale

    def backward(self, dLdY: Array) -> Array:
        """``dLdX = dLdY / scale``.

        Parameters
        ----------
        dLdY : array
            ``(N, C)``, shaped like the last output.

        Returns
        -------
        array
            ``(N, C)``.
        """
        require_forward(self._rows, self)
        xp = self._namespace(dLdY, self.mean)
        check_float(dLdY, xp, (self, ".backward"), "dLdY")
        check_same_shape(dLdY, (self._rows, self.num_features), (self, ".backward"), "dLdY")
        return self.backward_unchecked(as_dtype(dLdY, self.mean.dtype, xp), xp)

    def backward_unchecked(self, dLdY: Array, xp: Namespace, *, input_grad: bool = True) -> Array:
        """:meth:`backward` on an already checked ``dLdY`` (see :class:`~xpnet.nn.Module`).

        Parameters
        ----------
        dLdY : array
            ``(N, C)`` of the buffers' library, device and dtype.
        xp : namespace
            Its namespace.
        input_grad : bool
            Ignored: the layer has no parameters, so its only gradient is the input's.

        Returns
        -------
        array
            ``(N, C)``.
        """
        return dLdY / self.scale
