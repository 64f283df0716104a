"""The small base class every layer, activation, loss and model shares."""

from __future__ import annotations

from collections.abc import Mapping

from .. import backend
from ..errors import XpnetTypeError, XpnetValueError


class Module:
    """Base of xpnet's layers and models: state bookkeeping, no autograd.

    Subclasses declare their state by name, and the base class derives ``parameters()``,
    ``state_dict()``, ``load_state_dict()``, ``train()``/``eval()`` and ``to()`` from it:

    * ``_parameters``: trainable arrays (``"W"``, ``"b"``);
    * ``_gradients``: the matching gradient attributes (``"dLdW"``, ``"dLdb"``);
    * ``_buffers``: non-trainable state saved with the model (running statistics);
    * ``_caches``: what ``forward`` keeps for ``backward``, dropped by ``to()``;
    * ``_submodules``: names of list attributes holding child modules (``"layers"``).

    ``forward`` and ``backward`` are the public, validating entry points; ``_forward`` and
    ``_backward`` take an already resolved namespace and checked arrays, so a model checks
    its input once and not once per layer.
    """

    _parameters: tuple[str, ...] = ()
    _gradients: tuple[str, ...] = ()
    _buffers: tuple[str, ...] = ()
    _caches: tuple[str, ...] = ()
    _submodules: tuple[str, ...] = ()
    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- structure -------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """Yield ``(prefix, module)`` for this module and every child, depth first."""
        yield prefix, self
        for name in self._submodules:
            for i, child in enumerate(getattr(self, name)):
                yield from child.named_modules(f"{prefix}{name}.{i}.")

    def parameters(self):
        """The trainable arrays, in a fixed order (layer by layer, ``W`` before ``b``)."""
        return [getattr(m, p) for _, m in self.named_modules() for p in m._parameters]

    def state_dict(self):
        """Parameters and buffers by dotted key (``"layers.0.W"``, ``"bn_layers.0.running_V"``).

        The values are the arrays themselves, not copies, as in PyTorch.
        """
        return {key: getattr(m, name) for key, (m, name) in self._state_slots().items()}

    def _state_slots(self):
        """``{key: (module, attribute)}`` for every parameter and buffer."""
        return {
            prefix + name: (m, name)
            for prefix, m in self.named_modules()
            for name in m._parameters + m._buffers
        }

    def load_state_dict(self, state, *, strict=True):
        """Copy arrays into this module, keeping its library, device and dtype.

        ``state`` maps the keys of :meth:`state_dict` to arrays of any supported library.

        Raises
        ------
        ValueError
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
    def train(self, mode=True):
        """Set training mode (BatchNorm uses batch statistics) here and in every child."""
        for _, m in self.named_modules():
            m.training = bool(mode)
        return self

    def eval(self):
        """Set evaluation mode (BatchNorm uses running statistics); same as ``train(False)``."""
        return self.train(False)

    def to(self, xp, device=None, dtype=None):
        """Move parameters, gradients and buffers to another library, device or dtype.

        ``xp`` is a library name or namespace; ``device`` ``None`` means the library's
        default device; ``dtype`` ``None`` keeps each array's precision. Forward caches
        are dropped (run ``forward`` again before ``backward``). Returns ``self``.

        Optimizers hold momentum buffers on the old device: create them after ``to()``.
        """
        xp = backend.get(xp)
        device = backend.resolve_device(xp, device)
        if device is None:
            device = xp.__array_namespace_info__().default_device()
        if dtype is not None:
            dtype = backend.resolve_dtype(xp, dtype)
        for _, m in self.named_modules():
            for name in m._parameters + m._gradients + m._buffers:
                value = getattr(m, name)
                if value is not None:
                    setattr(m, name, backend.convert(value, xp, device=device, dtype=dtype))
            for name in m._caches:
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
            what = "parameters" if self.parameters() else "cached forward arrays"
            if lib != own_lib:
                raise XpnetTypeError(
                    f"{self._label()}: the input is a {lib} array but the {what} are from "
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

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = [
            f"  ({prefix[:-1]}): {m!r}"
            for name in self._submodules
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
