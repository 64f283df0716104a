"""The compiled step: the readable training step traced once into one program.

:func:`compiled_step` runs the same :class:`~xpnet.step.Step` as every executor (the
model's own ``forward``, the loss, the model's explicit ``backward``, the optimizer's
``step``) under the library's compiler (``jax.jit``: one XLA computation per batch shape),
with every array the step reads or changes passed in and handed back: the parameters, the
buffers (BatchNorm's running statistics), the optimizer's state (its
``state_attributes``: momentum, moment estimates, Adam's step count) and the learning rate.
Nothing is differentiated automatically; the program is the layers' own equations.

What the trace reads besides those arguments is part of its key, so that a change makes
a new program instead of running a stale one: the modules (replacing one), their
training modes, and the optimizer's hyperparameters other than the learning rate
(momentum, betas, weight decay, ...). The learning rate is an argument, so a schedule
does not compile again.
"""

from __future__ import annotations

import functools
from typing import Any

from . import backend
from .errors import XpnetValueError
from .step import Step, _recorded

__all__ = ["CompiledStep", "compile_refusal", "compiled_step"]

_DONATED = (0,)  # the state: its memory is reused for the new state


def compile_refusal(*, dropout: float = 0.0, data_parallel: bool = False) -> str | None:
    """Why a training step cannot be compiled into one program, or None.

    Parameters
    ----------
    dropout : float
        The largest dropout probability among the model's layers.
    data_parallel : bool
        Whether the run sums gradients across processes.

    Returns
    -------
    str or None
        The reason, in a phrase, or None when the step can be compiled.
    """
    if dropout > 0.0:
        return (
            "dropout draws its masks on the host at every step, and the compiled step does "
            "not take them as arguments yet"
        )
    if data_parallel:
        return "a data-parallel step sums gradients between processes in the middle of it"
    return None


class CompiledStep:
    """A step run as one compiled program (see the module's description).

    Parameters
    ----------
    step : Step
        The readable step (its model, loss and optimizer).
    compile_ : callable
        The library's compiler (:func:`xpnet.backend.compiler`).

    Attributes
    ----------
    step : Step
        As given.
    traces : int
        How many programs were traced so far (one per batch shape and key).
    """

    def __init__(self, step: Step, compile_: Any) -> None:
        self.step = step
        self._compile = compile_
        self._programs: dict[tuple, Any] = {}
        self.traces = 0

    def _key(self) -> tuple:
        model, opt = self.step.model, self.step.optimizer
        modules = tuple((id(m), m.training) for _, m in model.named_modules())
        skip = {"lr", *opt.state_attributes}
        hyper = tuple(
            sorted(
                (k, v)
                for k, v in vars(opt).items()
                if k not in skip and isinstance(v, (bool, int, float, str, tuple))
            )
        )
        return modules, hyper

    def _buffers(self) -> list[tuple[Any, str]]:
        return [
            (m, name)
            for _, m in self.step.model.named_modules()
            for name in m.declared_buffers
            if getattr(m, name) is not None
        ]

    def _take(self, buffers) -> tuple:
        opt = self.step.optimizer
        return (
            [p.value for _, p in opt.params],
            [getattr(m, name) for m, name in buffers],
            {attr: getattr(opt, attr) for attr in opt.state_attributes},
        )

    def _put(self, state, buffers) -> None:
        params, values, slots = state
        opt = self.step.optimizer
        for (_, p), value in zip(opt.params, params, strict=True):
            p.assign(value)
        for (m, name), value in zip(buffers, values, strict=True):
            setattr(m, name, value)
        for attr, value in slots.items():
            setattr(opt, attr, value)

    def _traced(self, buffers, state, X, y, lr):
        """The readable step on the arguments, returning everything it changed."""
        self._put(state, buffers)
        self.step.optimizer.lr = lr
        outputs = _recorded(self.step, X, y)
        grads = [p.grad for _, p in self.step.optimizer.params]
        return self._take(buffers), grads, outputs

    def _program(self, buffers):
        self.traces += 1
        return self._compile(functools.partial(self._traced, buffers), _DONATED)

    def __call__(self, X: Any, y: Any, *, key: Any = None) -> tuple:
        """Run one step.

        Parameters
        ----------
        X : array
            The batch's features.
        y : array
            Its targets.
        key : optional
            Unused (the graph runner's signature); the program's key is computed here.

        Returns
        -------
        tuple of array
            The loss and, for ``(N,)`` labels, the number of right predictions (0-d).
        """
        opt = self.step.optimizer
        buffers = self._buffers()
        signature = (self._key(), len(buffers))
        program = self._programs.get(signature)
        if program is None:
            program = self._programs[signature] = self._program(buffers)
        before, lr = self._take(buffers), opt.lr
        numbers = {k: type(v) for k, v in before[2].items() if isinstance(v, (int, float))}
        try:
            state, grads, outputs = program(before, X, y, lr)
        except BaseException:
            self._put(before, buffers)  # a failed trace leaves its placeholders behind
            raise
        finally:
            opt.lr = lr
            for m in (*(m for _, m in self.step.model.named_modules()), self.step.loss):
                for name in getattr(m, "declared_caches", ()):  # the trace's placeholders
                    setattr(m, name, None)
        slots = {k: numbers[k](v) if k in numbers else v for k, v in state[2].items()}
        self._put((state[0], state[1], slots), buffers)
        for (_, p), g in zip(opt.params, grads, strict=True):
            setattr(p.module, p.grad_attr, g)
        return outputs


def compiled_step(step: Step, *, data_parallel: bool = False) -> CompiledStep:
    """The whole step as one compiled program, or an error saying why it cannot be.

    Parameters
    ----------
    step : Step
        The readable step to compile.
    data_parallel : bool
        Whether the run sums gradients across processes (refused).

    Returns
    -------
    CompiledStep
        ``runner(X, y, key=...)`` returning the loss and, for ``(N,)`` labels, the right
        predictions, as the CUDA-graph runner does.

    Raises
    ------
    XpnetValueError
        What :func:`compile_refusal` refuses, or a library without a compiler.
    """
    model = step.model
    refusal = compile_refusal(
        dropout=max((d.p for d in getattr(model, "dropout_layers", ()) if d.training), default=0.0),
        data_parallel=data_parallel,
    )
    if refusal:
        raise XpnetValueError(f"fit: compile=True is not possible here: {refusal}")
    compile_ = backend.compiler(model.xp)
    if compile_ is None:
        raise XpnetValueError(
            f"fit: compile=True is not possible here: {backend.library_name(model.xp)} has "
            f"no compiler of whole functions; JAX has one (xp='jax')"
        )
    return CompiledStep(step, compile_)
