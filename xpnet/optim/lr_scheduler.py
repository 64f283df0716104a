"""Learning-rate schedules: StepLR, CosineAnnealingLR, LinearLR and SequentialLR.

Each schedule sets its optimizer's ``lr`` when it is created and at every ``step()``
(call it after the optimizer's step, once per epoch or once per batch as you choose). The
rates equal PyTorch's schedules of the same names step for step: they are computed by the
same recursive formulas, so they round the same way.

Examples
--------
>>> from xpnet.models import MLP
>>> from xpnet.optim import SGD
>>> from xpnet.optim.lr_scheduler import CosineAnnealingLR
>>> opt = SGD(MLP([4, 8, 3]), lr=0.1)
>>> schedule = CosineAnnealingLR(opt, T_max=10)
>>> for epoch in range(5):
...     pass  # train an epoch: forward, backward, opt.step() per batch
...     schedule.step()
>>> round(opt.lr, 6)
0.05
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from ..errors import XpnetTypeError, XpnetValueError
from ..nn._checks import check_real, check_size
from .optimizer import Optimizer

__all__ = ["CosineAnnealingLR", "LRScheduler", "LinearLR", "SequentialLR", "StepLR"]


class LRScheduler:
    """Base of the schedules: the bookkeeping PyTorch's schedules share.

    The first schedule created for an optimizer records its ``lr`` as ``initial_lr``; every
    schedule's ``base_lr`` is that. Creating a schedule takes its first step (epoch 0).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` the schedule sets.

    Attributes
    ----------
    optimizer : Optimizer
        As given.
    base_lr : float
        The learning rate before any schedule.
    last_epoch : int
        Steps taken since epoch 0.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise XpnetTypeError(
                f"{type(self).__name__}: expected an xpnet optimizer, got "
                f"{type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        if optimizer.initial_lr is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr: float = optimizer.initial_lr
        self.last_epoch = -1
        self._initial_step()

    def _initial_step(self):
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        """Advance one step and set the optimizer's learning rate."""
        self._update_lr(None)

    def _update_lr(self, epoch):
        if epoch is None:
            self.last_epoch += 1
            lr = self.get_lr()
        else:
            self.last_epoch = epoch
            lr = self._closed_form_lr()
        self.optimizer.lr = lr
        self._last_lr = lr

    def get_lr(self) -> float:
        """The learning rate of the current step, from the previous one.

        Returns
        -------
        float
            The rate :meth:`step` sets.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr")

    def _closed_form_lr(self):
        return self.get_lr()

    def get_last_lr(self) -> float:
        """The learning rate the last step set.

        Returns
        -------
        float
            The optimizer's ``lr`` after the last step.
        """
        return self._last_lr

    def state_dict(self) -> dict[str, Any]:
        """The schedule's progress, as JSON (resume checkpoints store it).

        Returns
        -------
        dict
            ``last_epoch`` and the learning rate.
        """
        return {"last_epoch": self.last_epoch, "lr": self._last_lr}

    def load_state_dict(self, state: dict[str, Any]) -> LRScheduler:
        """Continue from a :meth:`state_dict`, setting the optimizer's learning rate.

        Parameters
        ----------
        state : dict
            What :meth:`state_dict` returned.

        Returns
        -------
        LRScheduler
            ``self``.
        """
        self.last_epoch = int(state["last_epoch"])  # a "step_count" of xpnet 0.1 is not needed
        self._last_lr = self.optimizer.lr = float(state["lr"])
        return self


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` the schedule sets.
    step_size : int
        Steps between two decays.
    gamma : float
        The factor, > 0.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_size(step_size, "step_size", "StepLR")
        self.gamma = check_real(gamma, "gamma", "StepLR", low=0.0, low_open=True)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        """The learning rate of the current step, from the previous one.

        Returns
        -------
        float
            The previous rate, times ``gamma`` at every ``step_size``-th step.
        """
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.optimizer.lr
        return self.optimizer.lr * self.gamma

    def _closed_form_lr(self):
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class LinearLR(LRScheduler):
    """Scale the learning rate linearly from ``start_factor`` to ``end_factor`` (warm-up).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` the schedule sets.
    start_factor : float
        The factor at step 0, in (0, 1].
    end_factor : float
        The factor from step ``total_iters`` on, in [0, 1].
    total_iters : int
        Steps to go from one factor to the other.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
    ) -> None:
        self.start_factor = check_real(
            start_factor, "start_factor", "LinearLR", low=0.0, high=1.0, low_open=True
        )
        self.end_factor = check_real(end_factor, "end_factor", "LinearLR", low=0.0, high=1.0)
        self.total_iters = check_size(total_iters, "total_iters", "LinearLR")
        super().__init__(optimizer)

    def get_lr(self) -> float:
        """The learning rate of the current step, from the previous one.

        Returns
        -------
        float
            The previous rate, scaled by the ratio of two consecutive factors.
        """
        lr = self.optimizer.lr
        if self.last_epoch == 0:
            return lr * self.start_factor
        if self._is_initial or self.last_epoch > self.total_iters:
            return lr
        change = self.end_factor - self.start_factor
        return lr * (
            1.0 + change / (self.total_iters * self.start_factor + (self.last_epoch - 1) * change)
        )

    def _closed_form_lr(self):
        progress = min(self.total_iters, self.last_epoch) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * progress)


class CosineAnnealingLR(LRScheduler):
    """Anneal the learning rate along a half cosine from ``base_lr`` to ``eta_min``.

    ``lr_t = eta_min + (base_lr - eta_min) (1 + cos(π t / T_max)) / 2``, computed
    recursively from the previous rate as PyTorch does.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer whose ``lr`` the schedule sets.
    T_max : int
        Steps of the half period.
    eta_min : float
        The smallest rate, >= 0.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = check_size(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = check_real(eta_min, "eta_min", "CosineAnnealingLR", low=0.0)
        super().__init__(optimizer)

    def get_lr(self) -> float:
        """The learning rate of the current step, from the previous one.

        Returns
        -------
        float
            The next point of the half cosine.
        """
        lr, t, T = self.optimizer.lr, self.last_epoch, self.T_max
        if self._is_initial:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (
            lr - self.eta_min
        ) + self.eta_min

    def _closed_form_lr(self):
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * cosine / 2


class SequentialLR(LRScheduler):
    """Run schedules one after the other, switching at the given steps.

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer all the schedules set.
    schedulers : list of LRScheduler
        The schedules, created for ``optimizer``.
    milestones : list of int
        The steps at which the next schedule takes over (one fewer than schedules).
    """

    def __init__(
        self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int]
    ) -> None:
        if not schedulers or any(s.optimizer is not optimizer for s in schedulers):
            raise XpnetValueError(
                "SequentialLR: expected at least one schedule, all created for this optimizer"
            )
        if len(milestones) != len(schedulers) - 1:
            raise XpnetValueError(
                f"SequentialLR: {len(schedulers)} schedules need {len(schedulers) - 1} "
                f"milestones, got {len(milestones)}"
            )
        self.optimizer = optimizer
        self.base_lr = schedulers[0].base_lr
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = 0
        optimizer.lr = self.base_lr
        for schedule in self._schedulers:  # undo the first step each took when created
            schedule.last_epoch -= 1
        first = self._schedulers[bisect.bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        """Advance one step: the schedule in charge steps, or starts at a milestone."""
        self.last_epoch += 1
        index = bisect.bisect_right(self._milestones, self.last_epoch)
        schedule = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            schedule._update_lr(0)
        else:
            schedule.step()
        self._last_lr = schedule.get_last_lr()

    def get_lr(self) -> float:
        """The learning rate the schedule in charge set last.

        Returns
        -------
        float
            The optimizer's ``lr``.
        """
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        """The progress of this schedule and of each one it runs, as JSON.

        Returns
        -------
        dict
            As :meth:`LRScheduler.state_dict`, with ``schedulers``.
        """
        return {**super().state_dict(), "schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> SequentialLR:
        """Continue from a :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            What :meth:`state_dict` returned.

        Returns
        -------
        SequentialLR
            ``self``.
        """
        for schedule, saved in zip(self._schedulers, state["schedulers"], strict=True):
            schedule.load_state_dict(saved)
        super().load_state_dict(state)
        return self
