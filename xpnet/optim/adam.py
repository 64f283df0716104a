"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import backend
from .._typing import Array
from ..errors import XpnetTypeError, XpnetValueError
from ..nn._checks import check_real
from .optimizer import Optimizer, _zeros_like

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam: steps scaled by running estimates of the gradient's first and second moments.

    For each parameter ``p`` with gradient ``g``, at step ``t`` (PyTorch's rule)::

        g ← g + weight_decay · p                       (Adam's L2 penalty, when > 0)
        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        v̂ ← max(v̂, v) if amsgrad else v
        p ← p − lr / (1 − β₁ᵗ) · m / (sqrt(v̂) / sqrt(1 − β₂ᵗ) + eps)

    ``m`` is updated as PyTorch's ``lerp`` computes it, ``m + (1 − β₁)(g − m)``, so that
    the two agree to rounding in float64.

    Parameters
    ----------
    params : Module, model with ``layers``, or iterable of Param
        What to update, as for :class:`~xpnet.optim.SGD`.
    lr : float
        The learning rate, > 0 (PyTorch's default 1e-3).
    betas : tuple of float
        ``(β₁, β₂)``, each in [0, 1).
    eps : float
        Added to the denominator, > 0.
    weight_decay : float
        L2 penalty coefficient, >= 0, added to the gradient.
    amsgrad : bool
        Normalise by the largest second moment seen so far.

    Attributes
    ----------
    t : int
        Steps taken.
    exp_avg, exp_avg_sq, max_exp_avg_sq : dict of str to array
        ``m``, ``v`` and (with ``amsgrad``) ``v̂`` of each parameter, by name.
    lr, betas, eps, weight_decay, amsgrad
        The hyperparameters.

    Examples
    --------
    >>> from xpnet.models import MLP
    >>> from xpnet.optim import Adam
    >>> opt = Adam(MLP([4, 8, 3]), lr=1e-3)
    >>> opt.t
    0
    """

    #: AdamW decays the parameters themselves instead of adding the penalty's gradient.
    decoupled = False
    state_attributes = ("t", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise XpnetTypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(
            check_real(b, f"betas[{i}]", name, low=0.0, high=1.0, high_open=True)
            for i, b in enumerate(betas)
        )
        self.eps = check_real(eps, "eps", name, low=0.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", name, low=0.0)
        if not isinstance(amsgrad, bool):
            raise XpnetTypeError(f"{name}: amsgrad must be a bool, got {amsgrad!r}")
        self.amsgrad = amsgrad
        self.t = 0
        self.exp_avg = {n: _zeros_like(p.value) for n, p in self.params}
        self.exp_avg_sq = {n: _zeros_like(p.value) for n, p in self.params}
        self.max_exp_avg_sq = {n: _zeros_like(p.value) for n, p in self.params} if amsgrad else {}
        xp = backend.namespace(self.params[0][1].value)
        self._inplace = backend.inplace_updates(xp)

    def step(self) -> None:
        """Update every parameter once from its current gradient.

        Raises
        ------
        CallOrderError
            A gradient is missing: ``backward`` has not run.
        """
        grads = self.gradients()
        xp = self._namespace(self.exp_avg)
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1.0 - beta1**self.t)
        root_bc2 = (1.0 - beta2**self.t) ** 0.5
        for (name, param), g in zip(self.params, grads, strict=True):
            p = param.value
            if self.weight_decay:
                if self.decoupled and self._inplace:
                    p *= 1.0 - self.lr * self.weight_decay  # as the update below, in place
                elif self.decoupled:
                    p = p * (1.0 - self.lr * self.weight_decay)
                else:
                    g = g + self.weight_decay * p
            m = self.exp_avg[name]
            m = m + (1.0 - beta1) * (g - m)
            v = beta2 * self.exp_avg_sq[name] + (1.0 - beta2) * (g * g)
            self.exp_avg[name], self.exp_avg_sq[name] = m, v
            if self.amsgrad:
                v = xp.maximum(self.max_exp_avg_sq[name], v)
                self.max_exp_avg_sq[name] = v
            update = step_size * m / (xp.sqrt(v) / root_bc2 + self.eps)
            if self._inplace and p is param.value:
                p -= update  # the model's own array, updated where it is
            else:
                param.assign(p - update)

    def state_dict(self) -> dict[str, Array]:
        """The moment estimates by buffer and parameter name, and the step count.

        Returns
        -------
        dict of str to array
            ``"exp_avg.layers.0.W"``, ``"exp_avg_sq.layers.0.W"``, ... and ``"step"``
            (a 0-d float64 array holding ``t``).
        """
        state: dict[str, Array] = {"step": backend.to_numpy(float(self.t))}
        for buffer in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            for name, value in getattr(self, buffer).items():
                state[f"{buffer}.{name}"] = value
        return state

    def load_state_dict(self, state: Mapping[str, Array]) -> Adam:
        """Restore the moment estimates and the step count.

        Parameters
        ----------
        state : mapping of str to array
            What :meth:`state_dict` returned.

        Returns
        -------
        Adam
            ``self``.

        Raises
        ------
        XpnetValueError
            A buffer or the step count is missing, or a shape differs.
        """
        if "step" not in state:
            raise XpnetValueError(f"{type(self).__name__}.load_state_dict: missing 'step'")
        for buffer in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            self._restore(getattr(self, buffer), state, lambda n, b=buffer: f"{b}.{n}")
        self.t = int(backend.to_numpy(state["step"]).reshape(-1)[0])
        return self


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p ← p (1 − lr · weight_decay)`` first.

    The decay shrinks the parameters themselves before the Adam step instead of adding
    ``weight_decay · p`` to the gradient, which Adam's normalisation would undo (PyTorch's
    rule). Where the library's arrays can be written, both happen in place, as in Adam.

    Parameters
    ----------
    params : Module, model with ``layers``, or iterable of Param
        What to update, as for :class:`~xpnet.optim.SGD`.
    lr : float
        The learning rate, > 0.
    betas : tuple of float
        ``(β₁, β₂)``, each in [0, 1).
    eps : float
        Added to the denominator, > 0.
    weight_decay : float
        Decoupled decay coefficient, >= 0 (PyTorch's default 1e-2).
    amsgrad : bool
        Normalise by the largest second moment seen so far.
    """

    decoupled = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
