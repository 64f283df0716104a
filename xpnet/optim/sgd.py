"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from .. import backend
from ..nn._init import check_real

__all__ = ["SGD"]


class SGD:
    """SGD over every trainable parameter of a model: Linear ``W``, ``b`` and, where the
    model has ``bn_layers``, BatchNorm ``BW``, ``Bb``.

    For each parameter ``p`` with gradient ``g`` (PyTorch's rule, zero dampening)::

        g ← g + weight_decay · p                 (when weight_decay > 0)
        v ← μ v + g                              (when μ > 0)
        g ← g + μ v  if nesterov  else  v        (when μ > 0)
        p ← p − lr · g

    Updates assign new arrays, so libraries with immutable arrays work too.

    Parameters
    ----------
    model
        Any object with a ``layers`` list of :class:`~xpnet.nn.Linear` (the handout's
        ``PseudoModel`` works) and optionally a ``bn_layers`` list of
        :class:`~xpnet.nn.BatchNorm1d`.
    lr : float
        Learning rate, > 0.
    momentum : float
        μ in [0, 1).
    weight_decay : float
        L2 penalty coefficient, >= 0 (applied to every parameter, as PyTorch does).
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0``.

    Attributes:
        l: ``model.layers``. lr, mu: the hyperparameters. v_W, v_b: momentum buffers, one per
        Linear, shaped like ``W`` and ``b`` (zeros at first). v_BW, v_Bb: the same for the
        BatchNorm layers.

    The buffers live where the parameters were when the optimizer was created: move the
    model with ``to()`` first, then create the optimizer.

    Example
    -------
    >>> from xpnet.models import MLP
    >>> from xpnet.optim import SGD
    >>> model = MLP([4, 8, 3])
    >>> opt = SGD(model, lr=0.05, momentum=0.9)
    """

    def __init__(self, model, lr=0.1, momentum=0.0, *, weight_decay=0.0, nesterov=False):
        layers = getattr(model, "layers", None)
        if not isinstance(layers, (list, tuple)) or not layers:
            raise TypeError(
                f"SGD: model must have a non-empty 'layers' list of Linear layers, got "
                f"{type(model).__name__} with layers={layers!r}"
            )
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "W") and hasattr(layer, "b")):
                raise TypeError(f"SGD: model.layers[{i}] ({layer!r}) has no W and b")
        self.lr = check_real(lr, "lr", "SGD", low=0.0, low_open=True)
        self.mu = check_real(momentum, "momentum", "SGD", low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", "SGD", low=0.0)
        if not isinstance(nesterov, bool):
            raise TypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        if nesterov and self.mu == 0.0:
            raise ValueError("SGD: nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self.l = layers
        self.L = len(layers)
        self.bn = list(getattr(model, "bn_layers", None) or [])
        self.v_W = [_zeros_like(layer.W) for layer in self.l]
        self.v_b = [_zeros_like(layer.b) for layer in self.l]
        self.v_BW = [_zeros_like(bn.BW) for bn in self.bn]
        self.v_Bb = [_zeros_like(bn.Bb) for bn in self.bn]
        self._slot_list = list(self._slots())

    def _slots(self):
        """(module, parameter, gradient, buffer list, index, label) for every parameter."""
        for i, layer in enumerate(self.l):
            yield layer, "W", "dLdW", self.v_W, i, f"layers.{i}"
            yield layer, "b", "dLdb", self.v_b, i, f"layers.{i}"
        for i, bn in enumerate(self.bn):
            yield bn, "BW", "dLdBW", self.v_BW, i, f"bn_layers.{i}"
            yield bn, "Bb", "dLdBb", self.v_Bb, i, f"bn_layers.{i}"

    def step(self):
        """Update every parameter once from its current gradient.

        Where the library's arrays are mutable (``backend.inplace_updates``) parameters and
        buffers are updated in place with the standard's in-place operators, which saves
        an allocation per operation; otherwise new arrays are assigned. Both compute the
        same numbers.
        """
        slots = self._slot_list
        for module, _, g_name, _, _, label in slots:
            if getattr(module, g_name) is None:
                raise RuntimeError(
                    f"SGD.step(): {label}.{g_name} is None; call model.backward(...) before step()"
                )
        inplace = backend.inplace_updates(backend.namespace(self.l[0].W))
        update = self._update_inplace if inplace else self._update_assign
        for module, p_name, g_name, buffers, i, _ in slots:
            update(module, p_name, getattr(module, g_name), buffers, i)

    def _update_assign(self, module, p_name, g, buffers, i):
        p = getattr(module, p_name)
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.mu:
            v = self.mu * buffers[i] + g
            buffers[i] = v
            g = g + self.mu * v if self.nesterov else v
        setattr(module, p_name, p - self.lr * g)

    def _update_inplace(self, module, p_name, g, buffers, i):
        p = getattr(module, p_name)
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.mu:
            v = buffers[i]
            v *= self.mu
            v += g
            g = g + self.mu * v if self.nesterov else v
        p -= self.lr * g

    def state_dict(self):
        """The momentum buffers by key (``"v_W.0"``, ``"v_BW.1"``); hyperparameters are
        constructor arguments and not part of the state."""
        return {
            f"{name}.{i}": v
            for name in ("v_W", "v_b", "v_BW", "v_Bb")
            for i, v in enumerate(getattr(self, name))
        }

    def load_state_dict(self, state):
        """Restore the momentum buffers (onto the parameters' library and device)."""
        for name in ("v_W", "v_b", "v_BW", "v_Bb"):
            current = getattr(self, name)
            for i, old in enumerate(current):
                key = f"{name}.{i}"
                if key not in state:
                    raise ValueError(f"SGD.load_state_dict: missing momentum buffer {key!r}")
                new = state[key]
                if tuple(new.shape) != tuple(old.shape):
                    raise ValueError(
                        f"SGD.load_state_dict: {key!r} has shape {tuple(new.shape)}, "
                        f"expected {tuple(old.shape)}"
                    )
                current[i] = backend.convert(
                    new, backend.namespace(old), device=backend.device(old), dtype=old.dtype
                )
        return self


def _zeros_like(x):
    return backend.namespace(x).zeros_like(x)
