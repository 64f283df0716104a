"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import math

from .. import backend
from ..errors import CallOrderError, XpnetTypeError, XpnetValueError
from ..nn._init import check_real

__all__ = ["FLAT_LIMIT", "SGD"]

#: Largest model (number of parameter values) that SGD updates through flat arrays.
FLAT_LIMIT = 1 << 16


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
            raise XpnetTypeError(
                f"SGD: model must have a non-empty 'layers' list of Linear layers, got "
                f"{type(model).__name__} with layers={layers!r}"
            )
        for i, layer in enumerate(layers):
            if not (hasattr(layer, "W") and hasattr(layer, "b")):
                raise XpnetTypeError(f"SGD: model.layers[{i}] ({layer!r}) has no W and b")
        self.lr = check_real(lr, "lr", "SGD", low=0.0, low_open=True)
        self.mu = check_real(momentum, "momentum", "SGD", low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", "SGD", low=0.0)
        if not isinstance(nesterov, bool):
            raise XpnetTypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        if nesterov and self.mu == 0.0:
            raise XpnetValueError("SGD: nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self.l = layers
        self.L = len(layers)
        self.bn = list(getattr(model, "bn_layers", None) or [])
        self.v_W = [_zeros_like(layer.W) for layer in self.l]
        self.v_b = [_zeros_like(layer.b) for layer in self.l]
        self.v_BW = [_zeros_like(bn.BW) for bn in self.bn]
        self.v_Bb = [_zeros_like(bn.Bb) for bn in self.bn]
        self._slot_list = list(self._slots())
        self._flat = None  # (P, V, parameter views, velocity views) of the flat path

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

        Three equivalent implementations, chosen once per library (``xpnet.backend``
        capabilities); each computes the same numbers as the assignment path:

        * arrays that cannot be changed in place: new arrays are assigned;
        * mutable arrays: parameters and buffers are updated in place;
        * mutable arrays with views, in small models (at most ``FLAT_LIMIT`` parameter
          values): all parameters and momentum buffers live in two flat arrays, of which
          the model's ``W``, ``b``, ``BW``, ``Bb`` are views, and one step is a handful of
          operations on the flat arrays instead of four per parameter (PyTorch's
          "foreach" idea). A parameter that was reassigned since is copied back in.
        """
        slots = self._slot_list
        grads = [getattr(module, g_name) for module, _, g_name, *_ in slots]
        missing = next((k for k, g in enumerate(grads) if g is None), None)
        if missing is not None:
            _, _, g_name, _, _, label = slots[missing]
            raise CallOrderError(
                f"SGD.step(): {label}.{g_name} is None; call model.backward(...) before step()"
            )
        try:
            xp = backend.namespace(self.l[0].W, self.v_W[0])
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"SGD.step(): the model's parameters and this optimizer's momentum buffers "
                f"live apart ({err}); create the optimizer after moving the model with .to()"
            ) from None
        if not backend.inplace_updates(xp):
            update = self._update_assign
        elif backend.flat_views(xp) and self._n_values() <= FLAT_LIMIT:
            return self._update_flat(xp, grads)
        else:
            update = self._update_inplace
        for (module, p_name, _, buffers, i, _), g in zip(slots, grads, strict=True):
            update(module, p_name, g, buffers, i)

    def _n_values(self):
        if self._flat is not None:
            return self._flat[0].shape[0]
        return sum(math.prod(getattr(m, p).shape) for m, p, *_ in self._slot_list)

    def _flatten(self, xp):
        """Copy parameters and buffers into two flat arrays and make them views of those."""
        slots = self._slot_list
        params = [getattr(m, p) for m, p, *_ in slots]
        P = xp.concat([xp.reshape(p, (-1,)) for p in params])
        V = xp.concat([xp.reshape(buffers[i], (-1,)) for _, _, _, buffers, i, _ in slots])
        p_views, v_views, offset = [], [], 0
        for (module, p_name, _, buffers, i, _), p in zip(slots, params, strict=True):
            n = math.prod(p.shape)
            p_view = xp.reshape(P[offset : offset + n], tuple(p.shape))
            v_view = xp.reshape(V[offset : offset + n], tuple(p.shape))
            setattr(module, p_name, p_view)
            buffers[i] = v_view
            p_views.append(p_view)
            v_views.append(v_view)
            offset += n
        self._flat = (P, V, p_views, v_views)

    def _update_flat(self, xp, grads):
        slots = self._slot_list
        flat = self._flat
        if flat is None or not all(
            getattr(m, p) is pv and buffers[i] is vv
            for (m, p, _, buffers, i, _), pv, vv in zip(slots, flat[2], flat[3], strict=True)
        ):
            self._flatten(xp)
        P, V = self._flat[0], self._flat[1]
        g = xp.concat([xp.reshape(g, (-1,)) for g in grads])
        if self.weight_decay:
            g += self.weight_decay * P
        if self.mu:
            V *= self.mu
            V += g
            if self.nesterov:
                g += self.mu * V
            else:
                g = V
        P -= self.lr * g

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
                    raise XpnetValueError(f"SGD.load_state_dict: missing momentum buffer {key!r}")
                new = state[key]
                if tuple(new.shape) != tuple(old.shape):
                    raise XpnetValueError(
                        f"SGD.load_state_dict: {key!r} has shape {tuple(new.shape)}, "
                        f"expected {tuple(old.shape)}"
                    )
                xp = backend.namespace(old)
                moved = backend.convert(new, xp, device=backend.device(old), dtype=old.dtype)
                # own the buffer: the update changes it in place
                current[i] = xp.asarray(moved, copy=True) if moved is new else moved
        return self


def _zeros_like(x):
    return backend.namespace(x).zeros_like(x)
