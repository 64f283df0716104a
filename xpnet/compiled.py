"""The compiled step: the readable training step traced once into one program.

:func:`compiled_step` runs the same :class:`~xpnet.step.Step` as every executor (the
model's own ``forward``, the loss, the model's explicit ``backward``, the optimizer's
``step``) under the library's compiler (``jax.jit``: one XLA computation per batch shape),
with every array the step reads or changes passed in and handed back: the parameters, the
buffers (BatchNorm's running statistics), the optimizer's state (its
``state_attributes``: momentum, moment estimates, Adam's step count), the learning rate,
and dropout's masks, drawn on the host before the program runs. Nothing is
differentiated automatically; the program is the layers' own equations.

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


def compile_refusal(xp: Any = None, *, data_parallel: bool = False) -> str | None:
    """Why a training step cannot be compiled into one program, or None.

    Decided here once, for :func:`compiled_step` and for ``xpnet train --jit`` (which asks
    before it builds anything).

    Parameters
    ----------
    xp : namespace, optional
        The model's library; None leaves the library out of the question.
    data_parallel : bool
        Whether the run sums gradients across processes.

    Returns
    -------
    str or None
        The reason, in a phrase, or None when the step can be compiled.
    """
    if xp is not None and backend.compiler(xp) is None:
        return (
            f"{backend.library_name(xp)} has no compiler of whole functions; JAX has one "
            f"(--backend jax, xp='jax')"
        )
    if data_parallel:
        return "a data-parallel step sums gradients between processes in the middle of it"
    return None


class CompiledStep:
    """A step run as one compiled program (see the module's description).

    Modules that draw on the host at every forward (dropout's masks, through their
    ``_keep(shape)``) draw here, before the program runs, from their own generators and
    in the order the step would: the masks are arguments of the program, so each step
    gets new ones and the numbers are those of the eager step with the same seeds. Which
    masks a program takes is found once per program by tracing it without computing.

    Parameters
    ----------
    step : Step
        The readable step (its model, loss and optimizer).
    compiler : Compiler
        The library's compiler (:func:`xpnet.backend.compiler`).
    count : bool
        Also return the number of right predictions (for ``(N,)`` labels).
    gradients : bool
        Return the gradients too and leave them on the modules, as the eager step does;
        without, the modules hold none after a step (one output per parameter less).

    Attributes
    ----------
    step : Step
        As given.
    traces : int
        How many programs were made so far (one per batch shape and key).
    """

    def __init__(
        self, step: Step, compiler: Any, *, count: bool = True, gradients: bool = True
    ) -> None:
        self.step = step
        self._compiler = compiler
        self.count, self.gradients = count, gradients
        self._programs: dict[tuple, tuple] = {}  # signature -> (program, draws)
        self.traces = 0
        self._tracing = False  # set while the Python step runs, which it does only to trace
        self._hyper: tuple[int, list[str]] = (-1, [])  # (attributes, scalar names) of the optimizer

    def _key(self, modules) -> tuple:
        opt = self.step.optimizer
        if len(vars(opt)) != self._hyper[0]:  # the names of its scalars, found again only
            skip = {"lr", *opt.state_attributes}  # when its attributes change in number
            names = sorted(
                k
                for k, v in vars(opt).items()
                if k not in skip and isinstance(v, (bool, int, float, str, tuple))
            )
            self._hyper = (len(vars(opt)), names)
        hyper = tuple((k, getattr(opt, k)) for k in self._hyper[1])
        return tuple(map(id, modules)), tuple(m.training for m in modules), hyper

    def _take(self, buffers) -> tuple:
        opt = self.step.optimizer
        return (
            [getattr(p.module, p.attr) for _, p in opt.params],
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

    def _traced(self, buffers, draws, state, X, y, lr, masks):
        """The readable step on the arguments, returning everything it changed.

        ``draws`` lists ``(module, shape)`` in the order the step draws its masks; with
        ``masks`` None the step fills it instead, drawing placeholders.
        """
        self._tracing = True
        self._put(state, buffers)
        self.step.optimizer.lr = lr
        xp = self.step.model.xp
        if masks is None:

            def draw(module, shape):
                draws.append((module, shape))
                return xp.zeros(shape, dtype=xp.bool)

            modules = [m for _, m in self.step.model.named_modules()]
        else:
            given = iter(masks)
            modules = [m for m, _ in draws]

            def draw(module, shape):
                return next(given)

        for m in modules:
            if callable(getattr(m, "_keep", None)):
                m._keep = functools.partial(draw, m)  # over the class's, until the end
        try:
            outputs = _recorded(self.step, X, y, count=self.count)
        finally:
            for m in modules:
                m.__dict__.pop("_keep", None)
        grads = [p.grad for _, p in self.step.optimizer.params] if self.gradients else []
        return self._take(buffers), grads, outputs

    def _drop_placeholders(self):
        """After a trace: the caches (and gradients not handed back) hold the trace's
        placeholders, not arrays."""
        for m in (*(m for _, m in self.step.model.named_modules()), self.step.loss):
            for name in getattr(m, "declared_caches", ()):
                setattr(m, name, None)
        if not self.gradients:
            for _, p in self.step.optimizer.params:
                setattr(p.module, p.grad_attr, None)

    def _program(self, buffers, before, X, y, lr):
        """The program for these arguments, and the draws it takes as arguments."""
        draws: list[tuple[Any, tuple]] = []
        self._compiler.shapes(
            functools.partial(self._traced, buffers, draws), before, X, y, lr, None
        )
        self._drop_placeholders()
        self.traces += 1
        program = self._compiler.jit(functools.partial(self._traced, buffers, draws), _DONATED)
        return program, draws

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
        modules = _modules(self.step.model)
        buffers = [
            (m, name)
            for m in modules
            for name in m.declared_buffers
            if getattr(m, name) is not None
        ]
        signature = (self._key(modules), len(buffers), tuple(X.shape), tuple(y.shape))
        before, lr = self._take(buffers), opt.lr
        numbers = {k: type(v) for k, v in before[2].items() if isinstance(v, (int, float))}
        try:
            entry = self._programs.get(signature)
            if entry is None:
                entry = self._programs[signature] = self._program(buffers, before, X, y, lr)
            program, draws = entry
            masks = [m._keep(shape) for m, shape in draws]  # on the host, in the step's order
            state, grads, outputs = program(before, X, y, lr, masks)
        except BaseException:
            if self._tracing:
                self._put(before, buffers)  # a failed trace leaves its placeholders behind
            raise
        finally:
            if self._tracing:
                self._tracing = False
                opt.lr = lr
                self._drop_placeholders()
        slots = {k: numbers[k](v) if k in numbers else v for k, v in state[2].items()}
        self._put((state[0], state[1], slots), buffers)
        if self.gradients:
            for (_, p), g in zip(opt.params, grads, strict=True):
                setattr(p.module, p.grad_attr, g)
        return outputs


def _modules(root) -> list:
    """``root`` and every child, depth first, in the order of ``named_modules`` (without
    building their names, which a small step would notice)."""
    found, stack = [], [root]
    while stack:
        module = stack.pop()
        found.append(module)
        for name in reversed(module.declared_children):
            stack.extend(reversed(getattr(module, name)))
    return found


def compiled_step(
    step: Step, *, data_parallel: bool = False, count: bool = True, gradients: bool = True
) -> CompiledStep:
    """The whole step as one compiled program, or an error saying why it cannot be.

    Parameters
    ----------
    step : Step
        The readable step to compile.
    data_parallel : bool
        Whether the run sums gradients across processes (refused).
    count, gradients : bool
        As :class:`CompiledStep` takes them.

    Returns
    -------
    CompiledStep
        ``runner(X, y, key=...)`` returning the loss and, for ``(N,)`` labels, the right
        predictions, as the CUDA-graph runner does.

    Raises
    ------
    XpnetValueError
        What :func:`compile_refusal` refuses.
    """
    xp = step.model.xp
    refusal = compile_refusal(xp, data_parallel=data_parallel)
    if refusal:
        raise XpnetValueError(f"fit: compile=True is not possible here: {refusal}")
    return CompiledStep(step, backend.compiler(xp), count=count, gradients=gradients)
