"""The executors: what runs a model's training step, for which library, and the choice.

The layers, the model and the optimizers are the readable reference (:class:`~xpnet.step.Step`). An
executor runs the same step faster on one kind of library and is proven equal to it by
the tests; :data:`EXECUTORS` lists them, and :func:`make_step` chooses, for
:func:`xpnet.train.fit`, the scikit-learn estimators, ``xpnet parity`` and the
benchmarks alike. A new executor is one module and one row here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import backend
from .fused import FusedPlan
from .step import Step

__all__ = ["EXECUTORS", "Executor", "make_step"]


class Executor(NamedTuple):
    """One row of :data:`EXECUTORS`."""

    #: Its name in the docs and the benchmarks.
    name: str
    #: Where it lives.
    module: str
    #: The libraries and options it runs a step for.
    runs: str
    #: What it refuses, or leaves to the modules' own code.
    refuses: str


#: What runs a training step, for which library and options, and what each refuses
#: (``docs/conf.py`` writes it into the docs' "How a step runs" page).
EXECUTORS = (
    Executor("eager", "xpnet.step.Step", "every library: the modules' own code", "nothing"),
    Executor(
        "NumPy namespace",
        "xpnet.backend._numpy_fast",
        "NumPy: the eager step on backend.get('numpy'), whose hot reductions skip wrappers",
        "nothing",
    ),
    Executor(
        "fused plan",
        "xpnet.fused.FusedPlan",
        "CuPy, float32 and float64 parameters (unless XPNET_FUSED=0 or use_fused(False))",
        "modules it does not know run their own code; optimizers but SGD step themselves",
    ),
    Executor(
        "CUDA graph",
        "xpnet.step.graph_step",
        "CuPy with cuda_graph=True: the step recorded once per shape and replayed",
        "dropout, optimizers whose update changes every step (Adam, AdamW), "
        "data-parallel runs, other libraries (cuda_graph_refusal)",
    ),
    Executor(
        "compiled step",
        "xpnet.compiled.compiled_step",
        "JAX with compile=True: the eager step traced once per shape into one XLA program, "
        "parameters and optimizer state donated, the learning rate an argument",
        "data-parallel runs, libraries without a compiler (compile_refusal)",
    ),
    Executor(
        "data-parallel",
        "xpnet.distributed.DataParallel",
        "every library over MPI (NCCL for CuPy): fit(comm=...), mpiexec xpnet train",
        "a BatchNorm1d not converted by convert_sync_batchnorm, a batch smaller than "
        "the processes, CUDA graphs",
    ),
)


def make_step(model: Any, loss: Any, optimizer: Any) -> Step:
    """The step that runs ``model``'s training on its library: the first executor that can.

    Parameters
    ----------
    model : MLP
        The model, with every module it trains with (build the step after replacing one).
    loss : Module
        Its loss.
    optimizer : Optimizer
        Its optimizer, made after the model reached its library and device.

    Returns
    -------
    Step
        A :class:`xpnet.fused.FusedPlan` where the library has fused kernels for the
        parameters' dtype, else the readable :class:`Step`.

    Examples
    --------
    >>> from xpnet.models import MLP
    >>> from xpnet.nn import CrossEntropyLoss
    >>> from xpnet.optim import SGD
    >>> model = MLP([4, 8, 3])
    >>> type(make_step(model, CrossEntropyLoss(), SGD(model))).__name__
    'Step'
    """
    ops = backend.fused(model.xp)
    if ops is not None and ops.handles(model.layers[0].W):
        return FusedPlan(model, loss, optimizer, ops)
    return Step(model, loss, optimizer)
