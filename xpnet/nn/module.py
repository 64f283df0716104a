"""The module protocol every layer, activation, loss and model shares."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from .. import backend
from .._typing import Device, DType, Namespace
from ..errors import XpnetTypeError, XpnetValueError
from ._checks import resolve_placement

__all__ = ["Module", "Param"]


class Param:
    """A handle on one trainable array of a module and the array its gradient goes to.

    Optimizers update models through these handles (from
    :meth:`Module.named_parameters`), so a new layer needs no optimizer change.

    Parameters
    ----------
    module : Module
        The module that owns the array.
    attr : str
        The attribute that holds the array (``"W"``).
    grad_attr : str
        The attribute that ``backward`` writes its gradient to (``"dLdW"``).

    Attributes
    ----------
    module, attr, grad_attr
        As given.
    """

    __slots__ = ("attr", "grad_attr", "module")

    def __init__(self, module: Module, attr: str, grad_attr: str) -> None:
        self.module, self.attr, self.grad_attr = module, attr, grad_attr

    @property
    def value(self) -> Any:
        """The parameter array (:meth:`assign` replaces it).

        Returns
        -------
        array
            ``getattr(module, attr)``.
        """
        return getattr(self.module, self.attr)

    def assign(self, new: Any) -> None:
        """Replace the parameter array in its module.

        Parameters
        ----------
        new : array
            The new array (optimizers of immutable-array libraries assign each step).
        """
        setattr(self.module, self.attr, new)

    @property
    def grad(self) -> Any:
        """Its gradient from the last ``backward``.

        Returns
        -------
        array or None
            ``getattr(module, grad_attr)``; None before the first ``backward``.
        """
        return getattr(self.module, self.grad_attr)

    def __repr__(self) -> str:
        return f"Param({type(self.module).__name__}.{self.attr}, grad in .{self.grad_attr})"


class Module:
    """Base of xpnet's layers and models: state bookkeeping and one calling convention.

    A subclass declares its state by name, and the base class derives
    :meth:`named_parameters`, :meth:`parameters`, :meth:`state_dict`,
    :meth:`load_state_dict`, :meth:`train`/:meth:`eval` and :meth:`to` from it:

    * ``declared_parameters``: trainable attributes mapped to the attributes their
      gradients go to (``{"W": "dLdW", "b": "dLdb"}``);
    * ``declared_buffers``: non-trainable state saved with the model (running statistics);
    * ``declared_caches``: what ``forward`` keeps for ``backward``, dropped by :meth:`to`;
    * ``declared_children``: names of list attributes that hold child modules.

    Every layer has two entry points of each direction. ``forward`` and ``backward``
    validate their input (library, device, dtype, shape) and then call
    :meth:`forward_unchecked` and :meth:`backward_unchecked`, which take arrays already
    checked and the namespace ``xp`` they belong to. Containers such as
    :class:`~xpnet.models.MLP` validate their input once and then call the unchecked
    entries of their layers, so a deep model checks its data once, not once per layer.

    Attributes
    ----------
    training : bool
        Training mode (True) or evaluation mode; see :meth:`train`.
    """

    declared_parameters: ClassVar[dict[str, str]] = {}
    declared_buffers: ClassVar[tuple[str, ...]] = ()
    declared_caches: ClassVar[tuple[str, ...]] = ()
    declared_children: ClassVar[tuple[str, ...]] = ()
    training: bool = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Validate the input, then compute the output (each subclass documents its own).

        Parameters
        ----------
        *args, **kwargs
            The subclass's inputs.

        Returns
        -------
        array
            The output.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """Validate the upstream gradient, then backpropagate (see each subclass).

        Parameters
        ----------
        *args, **kwargs
            The subclass's inputs.

        Returns
        -------
        array
            The gradient with respect to the input.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def forward_unchecked(self, X: Any, xp: Any) -> Any:
        """The forward computation on an already validated ``X`` of namespace ``xp``.

        Parameters
        ----------
        X : array
            ``(N, C_in)``, of the module's library, device and dtype (not checked).
        xp : namespace
            The Array API namespace of ``X``.

        Returns
        -------
        array
            The output; what ``backward`` needs is cached.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define forward_unchecked")

    def backward_unchecked(self, dLdY: Any, xp: Any, *, input_grad: bool = True) -> Any:
        """The backward computation on an already validated upstream gradient.

        Parameters
        ----------
        dLdY : array
            Gradient of the loss with respect to the last output, shaped like it, of the
            module's library, device and dtype (not checked).
        xp : namespace
            The Array API namespace of ``dLdY``.
        input_grad : bool
            Whether to compute and return the gradient with respect to the input. A
            first layer, whose input is the data, skips it (``False``).

        Returns
        -------
        array or None
            ``dLdX``, or None when ``input_grad`` is False and the module can skip it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define backward_unchecked")

    # -- structure -------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every child, depth first.

        Parameters
        ----------
        prefix : str
            Prepended to every name.

        Yields
        ------
        name : str
            The child's dotted prefix (``"layers.0."``; ``prefix`` for this module).
        module : Module
            The module.
        """
        yield prefix, self
        for name in self.declared_children:
            for i, child in enumerate(getattr(self, name)):
                yield from child.named_modules(f"{prefix}{name}.{i}.")

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Param]]:
        """Every trainable array with its gradient, by dotted name, in a fixed order.

        This is the one way optimizers, parity checks and checkpoints find what to
        update: layer by layer, in the order each class declares its parameters.

        Parameters
        ----------
        prefix : str
            Prepended to every name.

        Yields
        ------
        name : str
            As in :meth:`state_dict` (``"layers.0.W"``).
        param : Param
            ``param.value`` is the array, ``param.grad`` its gradient.

        Examples
        --------
        >>> from xpnet.models import MLP
        >>> [name for name, _ in MLP([2, 3, 2], batchnorm=True).named_parameters()]
        ['layers.0.W', 'layers.0.b', 'layers.1.W', 'layers.1.b', 'bn_layers.0.BW', 'bn_layers.0.Bb']
        """
        for path, m in self.named_modules(prefix):
            for attr, grad_attr in m.declared_parameters.items():
                yield path + attr, Param(m, attr, grad_attr)

    def parameters(self) -> list[Any]:
        """The trainable arrays themselves, in the order of :meth:`named_parameters`.

        Returns
        -------
        list of array
            Not copies: updating one in place updates the module.
        """
        return [param.value for _, param in self.named_parameters()]

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers by dotted key.

        Returns
        -------
        dict of str to array
            ``{"layers.0.W": ..., "bn_layers.0.running_V": ...}``; the arrays themselves, not
            copies, as in PyTorch.
        """
        return {key: getattr(m, name) for key, (m, name) in self._state_slots().items()}

    def _state_slots(self) -> dict[str, tuple[Module, str]]:
        """``{key: (module, attribute)}`` for every parameter and buffer."""
        return {
            prefix + name: (m, name)
            for prefix, m in self.named_modules()
            for name in (*m.declared_parameters, *m.declared_buffers)
        }

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> Module:
        """Copy arrays into this module, keeping its library, device and dtype.

        Parameters
        ----------
        state : mapping of str to array
            The keys of :meth:`state_dict`, with arrays of any supported library.
        strict : bool
            Refuse missing or unexpected keys.

        Returns
        -------
        Module
            ``self``.

        Raises
        ------
        XpnetTypeError
            ``state`` is not a mapping, or a value is not an array.
        XpnetValueError
            With ``strict``, keys are missing or unexpected; or a shape differs.
        """
        if not isinstance(state, Mapping):
            raise XpnetTypeError(
                f"{type(self).__name__}.load_state_dict expects a mapping of keys to arrays "
                f"(as state_dict() returns), got {type(state).__name__}"
            )
        slots = self._state_slots()
        if strict:
            missing = sorted(set(slots) - set(state))
            unexpected = sorted(set(state) - set(slots))
            if missing or unexpected:
                raise XpnetValueError(
                    f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                    f"unexpected keys {unexpected}; was the state saved from another "
                    f"architecture?"
                )
        for key, value in state.items():
            if key not in slots:
                continue
            m, name = slots[key]
            target = getattr(m, name)
            if not _is_array(value):
                raise XpnetTypeError(
                    f"{type(self).__name__}.load_state_dict: {key!r} must be an array, got "
                    f"{type(value).__name__}; expected an array of any supported library"
                )
            if tuple(value.shape) != tuple(target.shape):
                raise XpnetValueError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has shape "
                    f"{tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            xp = backend.namespace(target)
            new = backend.convert(value, xp, device=backend.device(target), dtype=target.dtype)
            # Own the array: optimizers may update parameters in place.
            setattr(m, name, xp.asarray(new, copy=True) if new is value else new)
        return self

    # -- modes and placement ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode here and in every child (BatchNorm then uses batch statistics).

        Parameters
        ----------
        mode : bool
            True for training, False for evaluation.

        Returns
        -------
        Module
            ``self``.
        """
        for _, m in self.named_modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (BatchNorm uses running statistics); same as ``train(False)``.

        Returns
        -------
        Module
            ``self``.
        """
        return self.train(False)

    def to(self, xp: Namespace, device: Device = None, dtype: DType = None) -> Module:
        """Move parameters, gradients and buffers to another library, device or dtype.

        Forward caches are dropped (run ``forward`` again before ``backward``). Optimizers hold
        momentum buffers where the parameters were: create them after ``to()``.

        Parameters
        ----------
        xp : str or namespace
            The target library.
        device : optional
            The target device; None means the library's default device.
        dtype : dtype or str, optional
            ``float32`` or ``float64``; None keeps each array's precision.

        Returns
        -------
        Module
            ``self``.
        """
        xp, device, resolved = resolve_placement(xp, device, dtype, (self, ".to()"))
        if device is None:
            device = backend.default_device(xp)
        dtype = None if dtype is None else resolved  # None keeps each array's precision
        for _, m in self.named_modules():
            names = (*m.declared_parameters, *m.declared_parameters.values(), *m.declared_buffers)
            for name in names:
                value = getattr(m, name)
                if value is not None:
                    setattr(m, name, backend.convert(value, xp, device=device, dtype=dtype))
            for name in m.declared_caches:
                setattr(m, name, None)
        return self

    # -- helpers for subclasses ------------------------------------------------------------
    def _namespace(self, data, *own):
        """The namespace of a call on ``data`` with this module's arrays ``own``.

        Mixed libraries raise TypeError, mixed devices ValueError, each naming this module,
        where the data and the module live, and how to move one to the other.
        """
        try:
            return backend.namespace(data, *own)
        except (TypeError, ValueError) as err:
            if not own or not _is_array(data):
                raise type(err)(f"{self._label()}: {err}") from None
            (lib, dev), (own_lib, own_dev) = backend.placement(data), backend.placement(own[0])
            if self.parameters():
                what = "parameters"
            elif self.state_dict():
                what = "buffers"  # fitted state only (Standardize)
            else:
                what = "cached forward arrays"  # an activation's output
            if lib != own_lib:
                raise XpnetTypeError(
                    f"{self._label()}: the input is from {lib} but the {what} are from "
                    f"{own_lib}; move the model with .to({lib!r}) or the data with "
                    f"xpnet.backend.convert(data, {own_lib!r})"
                ) from None
            raise XpnetValueError(
                f"{self._label()}: the input is on device {dev} but the {what} are on "
                f"{own_dev}; move the model with .to(xp, device=...) or the data with "
                f"xpnet.backend.convert(data, xp, device=...)"
            ) from None

    def _label(self):
        """A one-line name for messages: ``Linear(in_features=2, out_features=3)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        """The constructor arguments shown by ``repr`` (empty here; layers override it).

        Returns
        -------
        str
            For example ``"in_features=2, out_features=3"``.
        """
        return ""

    def __repr__(self):
        children = [
            f"  ({prefix[:-1]}): {m!r}"
            for name in self.declared_children
            for prefix, m in ((f"{name}.{i}.", c) for i, c in enumerate(getattr(self, name)))
        ]
        head = self._label()[:-1]
        return head + (")" if not children else "\n" + "\n".join(children) + "\n)")


def _is_array(x):
    try:
        backend.placement(x)
    except TypeError:
        return False
    return True
