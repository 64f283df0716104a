"""Multilayer perceptrons: the handout's MLP0, MLP1, MLP4 and the general MLP."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from . import backend
from ._typing import Array, Device, DType, Namespace, Seed
from .errors import XpnetValueError
from .nn import GELU, BatchNorm1d, Dropout, Identity, Linear, ReLU, Sigmoid, Standardize, Tanh
from .nn import init as nn_init
from .nn._checks import (
    as_dtype,
    check_2d,
    check_float,
    check_real,
    check_same_shape,
    check_size,
    require_forward,
    resolve_placement,
)
from .nn.module import Module

__all__ = ["ACTIVATIONS", "INITS", "MLP", "MLP0", "MLP1", "MLP4"]

#: Initialisations accepted by ``MLP(init=...)`` besides ``"default"``, the one of
#: ``torch.nn.Linear``.
INITS: dict[str, Callable[..., Any]] = {
    "kaiming_uniform": nn_init.kaiming_uniform,
    "kaiming_normal": nn_init.kaiming_normal,
    "xavier_uniform": nn_init.xavier_uniform,
    "xavier_normal": nn_init.xavier_normal,
}

#: Activation names accepted by ``MLP(activation=...)``.
ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU, "identity": Identity}


class MLP(Module):
    """A multilayer perceptron: Linear layers with an activation after each but the last.

    With ``batchnorm``, a BatchNorm1d comes before each activation. The last Linear returns
    logits. ``forward`` runs ``A = standardize_layers[0](A0)`` (with standardize), then
    ``Z = layers[i](A)``, ``Z = bn_layers[i](Z)`` (with batchnorm), ``A = f[i](Z)``;
    ``backward`` runs the chain in reverse and returns ``dLdA0``.
    The last entry of ``f`` is an :class:`~xpnet.nn.Identity`, so ``f`` and ``layers``
    always have the same length.

    Parameters
    ----------
    sizes : sequence of int
        ``[C_in, hidden..., C_out]``, at least two entries.
    activation : str
        One of ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"gelu"``, ``"identity"``.
    batchnorm : bool
        Put a BatchNorm1d (handout defaults: alpha 0.9, eps 1e-8) before each activation.
    xp : str or namespace, optional
        Library of the parameters, as for :class:`~xpnet.nn.Linear`.
    device : optional
        Device of the parameters (library default when None).
    dtype : optional
        ``float32`` (default) or ``float64``.
    seed : int or numpy.random.Generator
        One host generator initialises the layers in order; the same seed gives the same
        model on every backend.
    init : str
        ``"default"`` (``torch.nn.Linear``'s U(±1/√in) for weights and biases) or one of
        ``"kaiming_uniform"``, ``"kaiming_normal"``, ``"xavier_uniform"``,
        ``"xavier_normal"`` (:mod:`xpnet.nn.init`, with the activation's gain; GELU takes
        ReLU's) for the weights, with zero biases.
    dropout : float
        A :class:`~xpnet.nn.Dropout` with this probability after each hidden activation
        (0: none), its masks seeded from the same generator.
    standardize : bool
        Start with a :class:`~xpnet.nn.Standardize` layer, so that the model carries its
        input scaling (identity until its ``mean`` and ``scale`` are set, for example from
        :func:`xpnet.data.standard_scaling` of the training features).

    Attributes
    ----------
    layers : list of Linear
        The Linear layers.
    f : list of Module
        The activations, one per Linear (an Identity after the last).
    bn_layers : list of BatchNorm1d
        The BatchNorm1d layers (empty without batchnorm).
    dropout_layers : list of Dropout
        The Dropout layers (empty without dropout).
    standardize_layers : list of Standardize
        The input scaling, one layer (empty without standardize).
    sizes, activation, batchnorm, init, dropout, standardize
        The architecture.

    Examples
    --------
    >>> import numpy as np
    >>> from xpnet.models import MLP
    >>> from xpnet.nn import CrossEntropyLoss
    >>> from xpnet.optim import SGD
    >>> model = MLP([4, 16, 3], batchnorm=True, seed=0)
    >>> loss, opt = CrossEntropyLoss(), SGD(model, lr=0.1, momentum=0.9)
    >>> X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    >>> y = np.arange(32) % 3
    >>> L = loss.forward(model.forward(X), y)
    >>> _ = model.backward(loss.backward()); opt.step()
    """

    declared_children: ClassVar[tuple[str, ...]] = (
        "standardize_layers",
        "layers",
        "bn_layers",
        "f",
        "dropout_layers",
    )
    declared_caches: ClassVar[tuple[str, ...]] = ("_out",)
    _activate_output = False

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: str = "relu",
        batchnorm: bool = False,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
        seed: Seed = 0,
        init: str = "default",
        dropout: float = 0.0,
        standardize: bool = False,
    ) -> None:
        name = type(self).__name__
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
            raise XpnetValueError(
                f"{name}: sizes must be a sequence of at least two layer widths "
                f"[C_in, ..., C_out], got {sizes!r}"
            )
        self.sizes = [check_size(s, f"sizes[{i}]", name) for i, s in enumerate(sizes)]
        if activation not in ACTIVATIONS:
            raise XpnetValueError(
                f"{name}: unknown activation {activation!r}; expected one of "
                f"{', '.join(ACTIVATIONS)}"
            )
        if init != "default" and init not in INITS:
            raise XpnetValueError(
                f"{name}: unknown init {init!r}; expected default or one of {', '.join(INITS)}"
            )
        self.activation = activation
        self.batchnorm = bool(batchnorm)
        self.standardize = bool(standardize)
        self.init = init
        self.dropout = check_real(dropout, "dropout", name, low=0.0, high=1.0, high_open=True)
        xp, device, dtype = resolve_placement(xp, device, dtype, name)
        rng = backend.host_rng(seed)
        self.standardize_layers = (
            [Standardize(self.sizes[0], xp=xp, device=device, dtype=dtype)]
            if self.standardize
            else []
        )
        pairs = list(itertools.pairwise(self.sizes))
        self.layers = [Linear(i, o, xp=xp, device=device, dtype=dtype, seed=rng) for i, o in pairs]
        activated = len(pairs) if self._activate_output else len(pairs) - 1
        make = ACTIVATIONS[activation]
        self.f = [make() for _ in range(activated)] + [Identity()] * (len(pairs) - activated)
        self.bn_layers = (
            [BatchNorm1d(o, xp=xp, device=device, dtype=dtype) for _, o in pairs[:activated]]
            if self.batchnorm
            else []
        )
        if init != "default":  # drawn after the default ones, from the same generator
            gain_of = "relu" if activation == "gelu" else activation  # GELU takes ReLU's gain
            for layer in self.layers:
                options = {"seed": rng, "xp": xp, "device": device, "dtype": dtype}
                if init.startswith("kaiming"):
                    options["nonlinearity"] = gain_of
                else:
                    options["gain"] = nn_init.calculate_gain(gain_of)
                layer.W = INITS[init](tuple(layer.W.shape), **options)
                layer.b = nn_init.zeros(tuple(layer.b.shape), xp=xp, device=device, dtype=dtype)
        # after each hidden activation; seeded from the same generator, after the weights
        self.dropout_layers = (
            [Dropout(self.dropout, seed=int(rng.integers(2**63))) for _ in range(activated)]
            if self.dropout and activated
            else []
        )
        self._out: Array = None

    def extra_repr(self) -> str:
        """The architecture, for ``repr``.

        Returns
        -------
        str
            ``"sizes=[4, 16, 3], activation='relu', batchnorm=True"``, then dropout and
            standardize where set.
        """
        text = f"sizes={self.sizes}, activation={self.activation!r}, batchnorm={self.batchnorm}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.standardize:
            text += ", standardize=True"
        return text

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this architecture.

        Returns
        -------
        dict
            JSON-serialisable: ``class``, ``sizes``, ``activation``, ``batchnorm``, and
            ``init``, ``dropout`` and ``standardize`` where they are not the defaults.
        """
        config = {
            "class": type(self).__name__,
            "sizes": list(self.sizes),
            "activation": self.activation,
            "batchnorm": self.batchnorm,
        }
        if self.init != "default":
            config["init"] = self.init
        if self.dropout:
            config["dropout"] = self.dropout
        if self.standardize:
            config["standardize"] = True
        return config

    @classmethod
    def state_shapes(
        cls, sizes: Sequence[int] | None, *, batchnorm: bool = False, standardize: bool = False
    ) -> dict[str, tuple[int, ...]]:
        """The key and shape of every ``state_dict`` array, without building the model.

        Checkpoints compare a file's arrays with it before allocating anything.

        Parameters
        ----------
        sizes : sequence of int
            As for the constructor (ignored by MLP0, MLP1 and MLP4, whose sizes are fixed).
        batchnorm : bool
            As for the constructor.
        standardize : bool
            As for the constructor.

        Returns
        -------
        dict of str to tuple of int
            ``{"layers.0.W": (sizes[1], sizes[0]), ...}`` in ``state_dict`` order.
        """
        sizes = list(cls._sizes) if issubclass(cls, _HandoutMLP) else list(sizes or ())
        pairs = list(itertools.pairwise(sizes))
        shapes: dict[str, tuple[int, ...]] = {}
        if standardize:
            for name in Standardize.declared_buffers:
                shapes[f"standardize_layers.0.{name}"] = (1, sizes[0])
        for i, (n_in, n_out) in enumerate(pairs):
            shapes[f"layers.{i}.W"] = (n_out, n_in)
            shapes[f"layers.{i}.b"] = (n_out, 1)
        if batchnorm:
            activated = len(pairs) if cls._activate_output else len(pairs) - 1
            for i in range(activated):
                for name in (*BatchNorm1d.declared_parameters, *BatchNorm1d.declared_buffers):
                    shapes[f"bn_layers.{i}.{name}"] = (1, sizes[i + 1])
        return shapes

    @property
    def dtype(self) -> DType:
        """The parameters' dtype.

        Returns
        -------
        dtype
            Of the parameters' library.
        """
        return self.layers[0].W.dtype

    @property
    def device(self) -> Device:
        """The parameters' device.

        Returns
        -------
        device
            Of the parameters' library.
        """
        return backend.device(self.layers[0].W)

    @property
    def xp(self) -> Namespace:
        """The parameters' Array API namespace.

        Returns
        -------
        namespace
            The namespace xpnet computes with for the parameters' library.
        """
        return backend.namespace(self.layers[0].W)

    def forward(self, A0: Array) -> Array:
        """Run the network, validating the input once.

        Parameters
        ----------
        A0 : array
            ``(N, sizes[0])``, of the parameters' library and device; float inputs of
            another precision are cast to the parameters' dtype.

        Returns
        -------
        array
            ``(N, sizes[-1])``: the logits (MLP) or the last activation (MLP0/1/4).

        Raises
        ------
        XpnetTypeError
            A non-floating input, or one of another library.
        XpnetValueError
            A shape other than ``(N, sizes[0])``, another device, or a training batch of
            one row with BatchNorm.
        """
        return self.forward_unchecked(*self.checked_input(A0))

    def checked_input(self, A0: Array) -> tuple[Array, Namespace]:
        """The checks of :meth:`forward`: ``A0`` in the parameters' dtype, and its namespace.

        Parameters
        ----------
        A0 : array
            As for :meth:`forward`.

        Returns
        -------
        A0 : array
            Cast to the parameters' dtype where it was another float.
        xp : namespace
            Its namespace.

        Raises
        ------
        XpnetTypeError, XpnetValueError
            As :meth:`forward` raises them.
        """
        W = self.layers[0].W
        xp = self._namespace(A0, W)
        check_float(A0, xp, self)
        check_2d(A0, self, features=self.sizes[0])
        return as_dtype(A0, W.dtype, xp), xp

    def forward_unchecked(self, A0: Array, xp: Namespace) -> Array:
        """:meth:`forward` on a checked ``A0``: each module's unchecked entry in turn.

        Parameters
        ----------
        A0 : array
            ``(N, sizes[0])`` of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.

        Returns
        -------
        array
            The output.
        """
        if self.bn_layers and self.training:
            self.bn_layers[0].check_batch(A0.shape[0])
        # Linear, BatchNorm1d (where present), activation: written out rather than
        # iterated over a list of modules, which costs a visible share of a small step
        n_bn, n_drop = len(self.bn_layers), len(self.dropout_layers)
        A = A0
        for scaling in self.standardize_layers:
            A = scaling.forward_unchecked(A, xp)
        for i, (layer, f) in enumerate(zip(self.layers, self.f, strict=True)):
            Z = layer.forward_unchecked(A, xp)
            if i < n_bn:
                Z = self.bn_layers[i].forward_unchecked(Z, xp)
            A = f.forward_unchecked(Z, xp)
            if i < n_drop:
                A = self.dropout_layers[i].forward_unchecked(A, xp)
        self._out = A
        return A

    def backward(self, dLdA: Array, *, input_grad: bool = True) -> Array | None:
        """Backpropagate through every module; sets every parameter's gradient.

        Parameters
        ----------
        dLdA : array
            The gradient of the loss with respect to the output, shaped like it.
        input_grad : bool
            False skips the last product, the gradient with respect to the input ``A0``,
            which training does not need (PyTorch skips it for inputs that do not require
            grad).

        Returns
        -------
        array or None
            ``dLdA0``, ``(N, sizes[0])``; None without ``input_grad``.

        Raises
        ------
        CallOrderError
            ``forward`` has not run.
        """
        require_forward(self._out, self)
        xp = self._namespace(dLdA, self.layers[0].W)
        check_float(dLdA, xp, (self, ".backward"), "dLdA")
        check_same_shape(dLdA, self._out.shape, (self, ".backward"), "dLdA")
        return self.backward_unchecked(
            as_dtype(dLdA, self._out.dtype, xp), xp, input_grad=input_grad
        )

    def backward_unchecked(
        self, dLdA: Array, xp: Namespace, *, input_grad: bool = True
    ) -> Array | None:
        """:meth:`backward` on a checked ``dLdA``: each module's unchecked entry in reverse.

        Parameters
        ----------
        dLdA : array
            Shaped like the output, of the parameters' library, device and dtype.
        xp : namespace
            Its namespace.
        input_grad : bool
            As for :meth:`backward`.

        Returns
        -------
        array or None
            ``dLdA0``; None without ``input_grad``.
        """
        n_bn, n_drop = len(self.bn_layers), len(self.dropout_layers)
        for i in range(len(self.layers) - 1, -1, -1):
            if i < n_drop:
                dLdA = self.dropout_layers[i].backward_unchecked(dLdA, xp)
            dLdZ = self.f[i].backward_unchecked(dLdA, xp)
            if i < n_bn:
                dLdZ = self.bn_layers[i].backward_unchecked(dLdZ, xp)
            dLdA = self.layers[i].backward_unchecked(dLdZ, xp, input_grad=i > 0 or input_grad)
        if input_grad:
            for scaling in self.standardize_layers:
                dLdA = scaling.backward_unchecked(dLdA, xp)
        return dLdA


class _HandoutMLP(MLP):
    _activate_output = True
    _sizes: tuple[int, ...] = ()

    def __init__(
        self,
        *,
        activation: str = "relu",
        batchnorm: bool = False,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
        seed: Seed = 0,
        init: str = "default",
        dropout: float = 0.0,
        standardize: bool = False,
    ) -> None:
        super().__init__(
            list(self._sizes),
            activation=activation,
            batchnorm=batchnorm,
            xp=xp,
            device=device,
            dtype=dtype,
            seed=seed,
            init=init,
            dropout=dropout,
            standardize=standardize,
        )


class MLP0(_HandoutMLP):
    """The handout's MLP with no hidden layer: Linear(2, 3), ReLU."""

    _sizes = (2, 3)


class MLP1(_HandoutMLP):
    """The handout's MLP with one hidden layer: Linear(2, 3), ReLU, Linear(3, 2), ReLU."""

    _sizes = (2, 3, 2)


class MLP4(_HandoutMLP):
    """The handout's MLP with four hidden layers: widths 2, 4, 8, 8, 4, 2.

    A ReLU follows every Linear, the last included.
    """

    _sizes = (2, 4, 8, 8, 4, 2)
