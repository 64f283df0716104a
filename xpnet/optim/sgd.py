"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .. import backend
from .._typing import Array
from ..errors import XpnetTypeError, XpnetValueError
from ..nn._checks import check_real
from .optimizer import Optimizer, _zeros_like

__all__ = ["FLAT_LIMIT", "SGD"]

#: Largest model (number of parameter values) that SGD updates through flat arrays (the
#: array code concatenates the gradients first, which a large model pays for).
FLAT_LIMIT = 1 << 16


class SGD(Optimizer):
    """Stochastic gradient descent with momentum over every parameter a model declares.

    For each parameter ``p`` with gradient ``g`` (PyTorch's rule, zero dampening)::

        g ← g + weight_decay · p                 (when weight_decay > 0)
        v ← μ v + g                              (when μ > 0)
        g ← g + μ v  if nesterov  else  v        (when μ > 0)
        p ← p − lr · g

    Parameters
    ----------
    params : Module, model with ``layers``, or iterable of Param
        What to update: a model (every parameter its :meth:`~xpnet.nn.Module.named_parameters`
        reports, so a new layer needs no optimizer change); any object with a ``layers``
        list of :class:`~xpnet.nn.Linear` and optionally a ``bn_layers`` list of
        :class:`~xpnet.nn.BatchNorm1d` (the handout's ``PseudoModel``); or an iterable of
        :class:`~xpnet.nn.Param` handles or ``(name, Param)`` pairs, as
        ``named_parameters()`` yields them.
    lr : float
        Learning rate, > 0.
    momentum : float
        The momentum μ, in [0, 1).
    weight_decay : float
        L2 penalty coefficient, >= 0 (applied to every parameter, as PyTorch does).
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0``.

    Attributes
    ----------
    lr, mu, weight_decay, nesterov
        The hyperparameters (``mu`` is the momentum).
    velocity : dict
        The momentum buffer of each parameter by name (zeros at first).
    l : list
        ``model.layers`` (empty for an iterable of parameters), as the handout names it.
    v_W, v_b, v_BW, v_Bb : list
        The handout's view of ``velocity``: one buffer per Linear ``W``, ``b`` and per
        BatchNorm ``BW``, ``Bb`` of a model with ``layers`` and ``bn_layers``.

    Notes
    -----
    The update is computed in one of three equivalent ways, chosen once when the optimizer
    is created from what the library allows (``xpnet.backend`` capabilities); each gives
    the same numbers as the first:

    * libraries whose arrays cannot change in place: new arrays are assigned;
    * mutable arrays: parameters and buffers are updated in place;
    * mutable arrays with views, in small models (at most :data:`FLAT_LIMIT` values):
      all parameters and buffers are moved, once, into two flat arrays, and the model's
      attributes (``W``, ``b``, ...) become views of them; one step is then a handful of
      operations on the flat arrays instead of four per parameter (PyTorch's "foreach"
      idea). The attributes keep their identity from then on; a parameter that is
      reassigned later (``load_state_dict``) is copied back into the flat array at the
      next step. :meth:`flat_buffers` moves a larger model there too, for a caller that
      updates the flat arrays itself.

    The buffers live where the parameters were when the optimizer was created: move the
    model with ``to()`` first, then create the optimizer.

    Examples
    --------
    >>> from xpnet.models import MLP
    >>> from xpnet.optim import SGD
    >>> model = MLP([4, 8, 3])
    >>> opt = SGD(model, lr=0.05, momentum=0.9)
    >>> sorted(opt.velocity)[:2]
    ['layers.0.W', 'layers.0.b']
    """

    same_update_every_step = True
    state_attributes = ("velocity",)

    def __init__(
        self,
        params: Any,
        lr: float = 0.1,
        momentum: float = 0.0,
        *,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.mu = check_real(momentum, "momentum", "SGD", low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", "SGD", low=0.0)
        if not isinstance(nesterov, bool):
            raise XpnetTypeError(f"SGD: nesterov must be a bool, got {nesterov!r}")
        if nesterov and self.mu == 0.0:
            raise XpnetValueError("SGD: nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self.velocity = {name: _zeros_like(p.value) for name, p in self.params}
        xp = backend.namespace(self.params[0][1].value)
        self._flat = None  # (P, V, parameter views, velocity views) of the flat path
        self._update: Callable[..., None] | None
        if not backend.inplace_updates(xp):
            self._update = self._update_assign
        elif backend.flat_views(xp) and self._n_values() <= FLAT_LIMIT:
            self._update = None
            self._flatten(xp)
        else:
            self._update = self._update_inplace

    # the handout's names for the momentum buffers
    def _buffers(self, prefix, attr, count):
        return [self.velocity[f"{prefix}.{i}.{attr}"] for i in range(count)]

    @property
    def v_W(self) -> list[Array]:
        """Momentum buffers of the Linear weights, one per ``model.layers`` entry.

        Returns
        -------
        list of array
            Views of :attr:`velocity`, in layer order.
        """
        return self._buffers("layers", "W", self.L)

    @property
    def v_b(self) -> list[Array]:
        """Momentum buffers of the Linear biases, one per ``model.layers`` entry.

        Returns
        -------
        list of array
            Views of :attr:`velocity`, in layer order.
        """
        return self._buffers("layers", "b", self.L)

    @property
    def v_BW(self) -> list[Array]:
        """Momentum buffers of the BatchNorm scales, one per ``model.bn_layers`` entry.

        Returns
        -------
        list of array
            Views of :attr:`velocity`, in layer order.
        """
        return self._buffers("bn_layers", "BW", self._n_bn)

    @property
    def v_Bb(self) -> list[Array]:
        """Momentum buffers of the BatchNorm shifts, one per ``model.bn_layers`` entry.

        Returns
        -------
        list of array
            Views of :attr:`velocity`, in layer order.
        """
        return self._buffers("bn_layers", "Bb", self._n_bn)

    def step(self) -> None:
        """Update every parameter once from its current gradient.

        Raises
        ------
        CallOrderError
            A gradient is missing: ``backward`` has not run.
        """
        grads = self.gradients()
        xp = self._namespace(self.velocity)
        if self._update is None:
            self._update_flat(xp, grads)
            return
        for (name, p), g in zip(self.params, grads, strict=True):
            self._update(p, g, name)

    def _n_values(self):
        return sum(math.prod(p.value.shape) for _, p in self.params)

    def _flatten(self, xp):
        """Copy parameters and buffers into two flat arrays and make them views of those."""
        values = [p.value for _, p in self.params]
        P = xp.concat([xp.reshape(v, (-1,)) for v in values])
        V = xp.concat([xp.reshape(self.velocity[name], (-1,)) for name, _ in self.params])
        p_views, v_views, offset = [], [], 0
        for (name, p), value in zip(self.params, values, strict=True):
            n = math.prod(value.shape)
            p.assign(xp.reshape(P[offset : offset + n], tuple(value.shape)))
            self.velocity[name] = xp.reshape(V[offset : offset + n], tuple(value.shape))
            p_views.append(p.value)
            v_views.append(self.velocity[name])
            offset += n
        self._flat = (P, V, p_views, v_views)

    def flat_buffers(self) -> tuple[Array, Array]:
        """The parameters and their velocities as two flat arrays, in :attr:`params` order.

        For a caller that updates them itself. The model's parameters (``W``, ``b``, ...)
        and :attr:`velocity` become views of them: the first call moves them there where
        the optimizer has not already (a model above :data:`FLAT_LIMIT` values), and a
        parameter reassigned since the last call is copied back in.

        Returns
        -------
        P : array
            The parameters, 1-d and contiguous.
        V : array
            Their velocities, laid out alike.

        Raises
        ------
        XpnetValueError
            The library's arrays have no views (:func:`xpnet.backend.flat_views`).
        """
        xp = self._namespace(self.velocity)
        if self._flat is None and not backend.flat_views(xp):
            raise XpnetValueError(
                f"SGD.flat_buffers(): {backend.library_name(xp)}'s arrays have no views"
            )
        return self._current_flat(xp)

    def _current_flat(self, xp):
        """The flat arrays, made anew where a parameter or buffer was replaced since."""
        if self._flat is None or not all(
            p.value is pv and self.velocity[name] is vv
            for (name, p), pv, vv in zip(self.params, self._flat[2], self._flat[3], strict=True)
        ):
            self._flatten(xp)
        return self._flat[0], self._flat[1]

    def _update_flat(self, xp, grads):
        P, V = self._current_flat(xp)
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

    def _update_assign(self, param, g, name):
        p = param.value
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.mu:
            v = self.mu * self.velocity[name] + g
            self.velocity[name] = v
            g = g + self.mu * v if self.nesterov else v
        param.assign(p - self.lr * g)

    def _update_inplace(self, param, g, name):
        p = param.value
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.mu:
            v = self.velocity[name]
            v *= self.mu
            v += g
            g = g + self.mu * v if self.nesterov else v
        p -= self.lr * g

    def state_dict(self) -> dict[str, Array]:
        """The momentum buffers by parameter name.

        Hyperparameters are constructor arguments and not part of the state.

        Returns
        -------
        dict of str to array
            ``{"layers.0.W": ..., ...}``.
        """
        return dict(self.velocity)

    def load_state_dict(self, state: Mapping[str, Array]) -> SGD:
        """Restore the momentum buffers, onto the parameters' library and device.

        Parameters
        ----------
        state : mapping of str to array
            What :meth:`state_dict` returned; the keys of xpnet 0.1 (``"v_W.0"``,
            ``"v_BW.1"``) are accepted too.

        Returns
        -------
        SGD
            ``self``.

        Raises
        ------
        XpnetValueError
            A buffer is missing or has the wrong shape.
        """
        state = {_current_key(k): v for k, v in state.items()}
        self._restore(self.velocity, state, lambda name: name)
        return self


# xpnet 0.1 named the momentum buffers by the handout's lists; now they go by parameter
_LEGACY = {
    "v_W": "layers.{}.W",
    "v_b": "layers.{}.b",
    "v_BW": "bn_layers.{}.BW",
    "v_Bb": "bn_layers.{}.Bb",
}


def _current_key(key):
    kind, _, index = key.partition(".")
    return _LEGACY[kind].format(index) if kind in _LEGACY and index.isdigit() else key
