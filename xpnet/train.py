"""The training loop: epochs of an executor's steps, with validation and callbacks."""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backend
from ._typing import Array
from .callbacks import Callback, ProgressBar
from .compiled import compiled_step
from .data import Dataset, batches, host_batches, on_disk
from .data.batching import batch_count
from .distributed import DataParallel
from .errors import TrainingDiverged, XpnetTypeError, XpnetValueError
from .executors import make_step
from .nn._checks import check_size
from .step import count_correct, graph_step

if TYPE_CHECKING:
    from .models import MLP
    from .nn import Module

__all__ = [
    "DEVICE_CHECK_EVERY",
    "FitState",
    "TrainingDiverged",
    "evaluate",
    "fit",
    "to_model",
]


def to_model(model: MLP, X: Array, y: Array | None = None) -> tuple[Array, Array | None]:
    """Move data once to the model's library, device and dtype.

    Parameters
    ----------
    model : MLP
        The model.
    X : array
        ``(N, F)`` features of any library.
    y : array, optional
        ``(N,)`` integer class ids, moved as int64; or ``(N, K)`` targets of a loss such
        as ``MSELoss``, moved in the model's dtype.

    Returns
    -------
    X : array
        On the model's library, device and dtype; itself when already there.
    y : array or None
        Likewise.
    """
    xp, device = model.xp, model.device
    X = backend.convert(X, xp, device=device, dtype=model.dtype)
    if y is not None:
        y = backend.convert(y, xp, device=device, dtype=_target_dtype(model, y))
    return X, y


def _target_dtype(model, y):
    """Class ids ``(N,)`` as int64; ``(N, K)`` targets in the model's dtype (by name)."""
    return "int64" if len(y.shape) == 1 else backend.dtype_name(model.dtype)


def _check_data(data, name):
    """``data`` must be ``(X, y)``: X ``(N, F)``, y ``(N,)`` class ids or ``(N, K)``
    targets, N >= 1."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise XpnetTypeError(f"{name} must be a pair (X, y), got {type(data).__name__}")
    X, y = data
    if (
        len(X.shape) != 2
        or len(y.shape) not in (1, 2)
        or X.shape[0] != y.shape[0]
        or X.shape[0] < 1
    ):
        raise XpnetValueError(
            f"{name} must be X of shape (N, features) and y of shape (N,) or (N, targets) "
            f"with N >= 1, got X {tuple(X.shape)} and y {tuple(y.shape)}"
        )


def evaluate(
    model: MLP, loss: Module, X: Array, y: Array, *, batch_size: int = 4096
) -> tuple[float, float | None]:
    """Mean loss and accuracy of a model on data, in evaluation mode.

    The data may live anywhere; they are moved to the model once. The model's train/eval
    mode is restored afterwards.

    Parameters
    ----------
    model : MLP
        The model.
    loss : Module
        A loss with ``forward(A, y)``, such as ``CrossEntropyLoss``.
    X : array
        ``(N, F)`` features.
    y : array
        ``(N,)`` integer class ids, or ``(N, K)`` targets (regression).
    batch_size : int
        Rows per forward pass.

    Returns
    -------
    loss : float
        The mean loss over the rows.
    accuracy : float or None
        The fraction of rows whose largest output is their class; None for ``(N, K)``
        targets.
    """
    _check_data((X, y), "evaluate: the data")
    streaming = on_disk(X)  # moved a batch at a time, never whole
    if not streaming:
        X, y = to_model(model, X, y)
    xp = model.xp
    labels = len(y.shape) == 1
    was_training = model.training
    model.eval()
    total_loss = correct = 0.0
    try:
        n = X.shape[0]
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)  # in bounds: the standard leaves others open
            Xb, yb = X[start:stop, ...], y[start:stop, ...]
            if streaming:  # read from the file here
                Xb, yb = to_model(model, np.asarray(Xb), yb)
            out = model.forward(Xb)
            total_loss = total_loss + loss.forward(out, yb) * Xb.shape[0]
            if labels:
                correct = correct + count_correct(out, yb, xp)
    finally:
        model.train(was_training)
    n = X.shape[0]
    return float(total_loss) / n, float(correct) / n if labels else None


def _hooks(callbacks, name):
    """The callbacks' ``name`` methods, leaving out those that do nothing (per step, a call
    costs what a small model's step notices)."""
    return [
        getattr(c, name)
        for c in callbacks
        if getattr(type(c), name, None) not in (None, getattr(Callback, name))
    ]


def _running_means(window, correct, labels):
    """The epoch's mean loss (and accuracy) over the steps read back so far."""
    known = {"loss": window.total / window.seen}
    if labels:
        known["accuracy"] = float(correct) / window.seen
    return known


#: Steps between two reads of the losses when the data live on a GPU (see :func:`fit`).
DEVICE_CHECK_EVERY = 50


def _check_labels(model, y, what):
    """Integer class ids within the model's outputs, checked once per dataset (two values
    read back), so that no training step has to."""
    n_out = getattr(model, "sizes", [None])[-1]
    if n_out is None or len(y.shape) != 1 or y.shape[0] == 0:
        return
    xp = backend.namespace(y)
    low, high = int(xp.min(y)), int(xp.max(y))
    if low < 0 or high >= n_out:
        raise XpnetValueError(
            f"{what}: class ids must lie in [0, {n_out}) for a model with {n_out} outputs, "
            f"got values from {low} to {high}"
        )


def _graph_key(optimizer):
    """The optimizer's numbers that a captured step has fixed in its kernels."""
    return tuple(
        getattr(optimizer, name, None) for name in ("lr", "mu", "weight_decay", "nesterov")
    )


class _LossWindow:
    """Step losses kept where they were computed and read back several at a time."""

    def __init__(self, epoch):
        self.epoch, self.step = epoch, 0  # the last step read back
        self.pending, self.sizes = [], []
        self.total, self.seen = 0.0, 0

    def add(self, L, n):
        self.pending.append(L)
        self.sizes.append(n)

    def flush(self, xp):
        """Read the pending losses back (one synchronisation) and stop on a bad one."""
        if not self.pending:
            return
        if len(self.pending) == 1:
            values = [float(self.pending[0])]
        else:
            values = backend.to_numpy(xp.stack(self.pending)).tolist()
        for k, (value, n) in enumerate(zip(values, self.sizes, strict=True), 1):
            if not math.isfinite(value):
                raise TrainingDiverged(self.epoch, self.step + k, value)
            self.total += value * n
            self.seen += n
        self.step += len(values)
        self.pending, self.sizes = [], []


@dataclass
class FitState:
    """Everything :func:`fit` needs to continue a run exactly where an epoch ended.

    Attributes
    ----------
    epoch : int
        Completed epochs.
    history : list of dict
        One record per completed epoch, as :func:`fit` returns them.
    rng_state : dict or None
        The shuffling generator's state (``bit_generator.state``) after ``epoch`` epochs.
    best, best_epoch, waited, best_state, stopped_early
        Early stopping's bookkeeping: the best validation loss and its epoch, the epochs
        since it improved, the parameters of the best epoch, and whether it stopped.
    """

    epoch: int = 0
    history: list = field(default_factory=list)
    rng_state: Mapping[str, Any] | None = None
    best: float = math.inf
    best_epoch: int | None = None
    waited: int = 0
    best_state: dict | None = None
    stopped_early: bool = False


def fit(
    model: MLP,
    loss: Module,
    optimizer: Any,
    train_data: tuple[Array, Array] | Dataset,
    *,
    epochs: int,
    batch_size: int,
    validation: tuple[Array, Array] | None = None,
    seed: int = 0,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
    state: FitState | None = None,
    max_loss: float | None = None,
    check_every: int | None = None,
    scheduler: Any = None,
    shuffle: str | None = None,
    comm: Any = None,
    prefetch: bool = True,
    cuda_graph: bool = False,
    compile: bool = False,
    tf32: bool = False,
) -> list[dict]:
    """Train ``model`` and return its history, one dict per epoch.

    Parameters
    ----------
    model : MLP
        The model to train.
    loss : Module
        A loss with ``forward(A, y)`` and ``backward()``, such as ``CrossEntropyLoss``.
    optimizer : SGD
        An optimizer over the model's parameters (``step()``).
    train_data : tuple (X, y) or Dataset
        Features ``(N, F)`` and integer class ids ``(N,)`` of any library, or ``(N, K)``
        float targets for a loss that takes them (``MSELoss``: regression, without
        accuracy); moved to the model's backend and device once, then shuffled and sliced
        there every epoch. A
        ``numpy.memmap`` of features (a dataset larger than memory) stays on disk: each
        batch is read from it and moved on its own. A :class:`~xpnet.data.Dataset` trains
        on its training split (``X_train``, ``y_train``).
    epochs, batch_size : int
        Total passes over the data (counting those a resumed ``state`` has done) and rows
        per step. With BatchNorm the last, smaller batch of each epoch is dropped
        (different rows every epoch, as the order is shuffled): its statistics would be
        noisy, and they would enter the running statistics last.
    validation : tuple (X, y), optional
        Evaluated after every epoch (``val_loss``, ``val_accuracy``).
    seed : int
        Seeds the shuffling (a ``numpy.random.Generator`` on the host).
    progress : bool, optional
        Show a :class:`~xpnet.callbacks.ProgressBar` (a tqdm bar per epoch on stderr with
        the running loss and accuracy) unless ``callbacks`` hold one of their own.
        ``None``: only when stderr is a terminal.
    callbacks : sequence of Callback
        Called in this order before and after every epoch, after every step and at the
        end of training (:mod:`xpnet.callbacks`): :class:`~xpnet.callbacks.EarlyStopping`
        (needs ``validation``), a progress bar, a checkpoint or a log of your own
        (:class:`~xpnet.callbacks.LambdaCallback`).
    state : FitState, optional
        Continue from this state (as a checkpoint callback saved it); updated as training
        goes. Together with the model's parameters and running statistics and the
        optimizer's momentum buffers, it makes a resumed run identical to an
        uninterrupted one.
    max_loss : float, optional
        Stop with :class:`~xpnet.errors.TrainingDiverged` when an epoch's mean training
        loss exceeds this bound (a run that is diverging without reaching infinity yet);
        no callback is called for that epoch. None: no bound.
    check_every : int, optional
        Read the step losses back from the device every this many steps (one
        synchronisation for all of them) and stop on a non-finite one. None: every step
        for host arrays (free there, and a NaN step then updates nothing), every
        :data:`DEVICE_CHECK_EVERY` steps on a GPU, where reading a value waits for the
        device; the steps between a non-finite loss and its check have then updated the
        parameters, so the last good state is the one the callbacks saw last.

    scheduler : LRScheduler, optional
        A learning-rate schedule (:mod:`xpnet.optim.lr_scheduler`) stepped once at the
        end of every epoch, before the callbacks.

    shuffle : str, optional
        ``"full"`` (a fresh permutation every epoch) or ``"blocks"`` (blocks of
        :data:`xpnet.data.BLOCK_BATCHES` batches in random order, rows shuffled within
        each: what memory-mapped data use, so that each batch is read from one region of
        the file). None: ``"blocks"`` for a ``numpy.memmap``, else ``"full"``.

    comm : MPICommunicator, optional
        Train data-parallel (:mod:`xpnet.distributed`): every process passes the same data
        and seed, takes its :func:`~xpnet.distributed.shard` of each global batch of
        ``batch_size`` rows, and the gradients are summed across processes in one
        all-reduce per step (:class:`~xpnet.distributed.DataParallel`). BatchNorm layers
        must be :class:`~xpnet.distributed.SyncBatchNorm1d`, which use the global batch's
        statistics: convert the model with
        :func:`~xpnet.distributed.convert_sync_batchnorm` before making the optimizer.
        A last batch with fewer rows than processes is skipped. Dropout masks are drawn
        for the global batch, so ``N`` processes drop what one process drops.
    prefetch : bool
        For a ``numpy.memmap`` and a model on a GPU (CuPy): gather each batch into pinned
        host memory and copy it on its own CUDA stream while the previous step runs
        (:func:`xpnet.backend.prefetcher`); the batches and results are the same either
        way. Without effect elsewhere.
    cuda_graph : bool
        CuPy only: run each training step as a CUDA graph, captured from the second step
        of each batch shape and replayed with one launch (:class:`xpnet.backend.CudaGraphStep`);
        the numbers are those of the eager step. SGD only (Adam's bias correction changes
        every step); the graph is captured anew when the learning rate changes; no
        dropout and no ``comm``. The losses are read back every ``check_every`` steps as
        usual, after the step that computed them.
    compile : bool
        JAX only: run each training step as one compiled program
        (:func:`xpnet.compiled.compiled_step`: the same forward, explicit backward and
        update, traced once per batch shape by ``jax.jit``); the learning rate is an
        argument, so schedules do not compile again; dropout's masks are drawn on the
        host and passed in; the modules keep no gradients (the program hands back only
        what the next step needs). SGD, Adam and AdamW; no ``comm``. Not with
        ``cuda_graph``.
    tf32 : bool
        Let float32 matrix products use TF32 tensor cores during training
        (:func:`xpnet.backend.set_tf32`; faster on NVIDIA GPUs since Ampere, 10-bit
        mantissa inputs); the library's previous setting is restored at the end. No
        effect on a CPU or in float64.

    Returns
    -------
    list of dict
        ``epoch``, ``loss``, ``accuracy`` (training, averaged over the epoch's steps),
        ``lr`` (the epoch's learning rate), ``seconds`` and, with validation,
        ``val_loss`` and ``val_accuracy``. The accuracies are left out for ``(N, K)``
        targets.

    Raises
    ------
    TrainingDiverged
        A step's loss is NaN or infinite (named by its epoch and step; see
        ``check_every``), or an epoch's mean loss exceeds ``max_loss``.
    XpnetValueError
        Class labels outside the model's outputs (checked once, before training); a
        ``cuda_graph`` or ``compile`` the step cannot have (the message says why).
    """
    callbacks = list(callbacks)
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.insert(0, ProgressBar())
    begin_hooks = _hooks(callbacks, "on_epoch_begin")
    batch_hooks = _hooks(callbacks, "on_batch_end")
    for callback in callbacks:
        if getattr(callback, "needs_validation", False) and validation is None:
            raise XpnetValueError(
                f"fit: {type(callback).__name__} needs a validation set (validation=(X, y))"
            )
    epochs = check_size(epochs, "epochs", "fit")
    batch_size = check_size(batch_size, "batch_size", "fit")
    if isinstance(train_data, Dataset):
        train_data = (train_data.X_train, train_data.y_train)
    _check_data(train_data, "fit: train_data")
    if validation is not None:
        _check_data(validation, "fit: validation")
    streaming = on_disk(train_data[0])
    X: Any
    y: Any
    if streaming:  # read from the file a batch at a time, never whole
        targets = np.asarray(train_data[1])
        X, y = train_data[0], targets.astype(_target_dtype(model, targets))
    else:
        X, y = to_model(model, *train_data)
    if validation is not None and not on_disk(validation[0]):
        validation = to_model(model, *validation)
    xp = model.xp
    labels = len(y.shape) == 1  # class ids (accuracy counted), else targets (regression)
    for data, what in (
        (y, "train_data"),
        (None if validation is None else validation[1], "validation"),
    ):
        if data is not None:
            _check_labels(model, data, f"fit: {what}")
    if check_every is None:
        check_every = 1 if streaming or backend.on_host(X) else DEVICE_CHECK_EVERY
    check_every = check_size(check_every, "check_every", "fit")
    step = make_step(model, loss, optimizer)
    parallel = None
    if comm is not None:
        if batch_size < comm.size:
            raise XpnetValueError(
                f"fit: batch_size {batch_size} is smaller than the {comm.size} processes"
            )
        try:
            parallel = DataParallel(model, comm)
        except XpnetValueError as err:
            raise XpnetValueError(f"fit: {err}") from None
    shuffle = ("blocks" if streaming else "full") if shuffle is None else shuffle
    if streaming and shuffle != "blocks":
        raise XpnetValueError("fit: memory-mapped data are shuffled in blocks (shuffle='blocks')")
    # memory-mapped batches to a GPU: gathered and copied ahead of use
    mover = backend.prefetcher(model.layers[0].W) if streaming and prefetch else None
    gather = None if mover is None else functools.partial(mover, dtype=model.dtype)
    graph = None  # a runner of the whole step at once
    if cuda_graph and compile:
        raise XpnetValueError("fit: cuda_graph=True and compile=True: choose one")
    if cuda_graph:
        graph = graph_step(step, data_parallel=comm is not None)
    elif compile:
        graph = compiled_step(step, data_parallel=comm is not None, gradients=False)
    state = FitState() if state is None else state
    rng = np.random.default_rng(seed)
    if state.rng_state is not None:
        rng.bit_generator.state = state.rng_state
    drop_last = bool(model.bn_layers)  # a batch of one row has no BatchNorm statistics
    n_batches = batch_count(X.shape[0], batch_size, drop_last)
    tf32_before = backend.set_tf32(xp, tf32)
    try:
        if parallel is not None:
            parallel.open()  # dropout masks drawn for the global batch
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.stopped_early:
                break
            start = time.perf_counter()
            model.train()
            window = _LossWindow(epoch)
            lr = getattr(optimizer, "lr", None)
            correct = 0.0
            steps, known = 0, {}  # steps taken; the running means as last read back
            for hook in begin_hooks:
                hook(model, state, {"epoch": epoch, "epochs": epochs, "steps": n_batches})
            if streaming:
                source = host_batches(
                    X, y, batch_size, lambda a, b: to_model(model, a, b), rng=rng,
                    drop_last=drop_last, gather=gather,
                )  # fmt: skip
            else:
                source = batches(X, y, batch_size, rng=rng, drop_last=drop_last, shuffle=shuffle)
            for Xb, yb in source:
                if graph is not None:  # the whole step at once: a CUDA graph or a program
                    L, *counted = graph(Xb, yb, key=_graph_key(optimizer))
                    if labels:
                        correct = correct + counted[0]
                    window.add(xp.asarray(L, copy=True), Xb.shape[0])  # L is the graph's
                    if len(window.pending) >= check_every:
                        window.flush(xp)
                        if batch_hooks:
                            known = _running_means(window, correct, labels)
                    steps += 1
                    for hook in batch_hooks:
                        hook(model, state, {"step": steps, **known})
                    continue
                if parallel is not None:  # this process's share of the global batch
                    n_global = Xb.shape[0]
                    sharded = parallel.shard(Xb, yb)
                    if sharded is None:
                        continue  # a last batch with fewer rows than processes
                    Xb, yb, share = sharded
                out, L = step.forward(Xb, yb)
                if labels:
                    correct = correct + step.correct(out, yb)
                if parallel is None:
                    window.add(L, Xb.shape[0])
                else:  # the gradient of the global batch's mean loss, summed in one call
                    step.backward(share)
                    window.add(parallel.sum_gradients(L * share), n_global)
                if len(window.pending) >= check_every:
                    # reads the losses back: with check_every=1 before this step updates
                    # anything; on a device once per check_every steps
                    window.flush(xp)
                    if batch_hooks:
                        known = _running_means(window, correct, labels)
                if parallel is None:
                    step.backward()
                step.update()
                steps += 1
                for hook in batch_hooks:
                    hook(model, state, {"step": steps, **known})
            window.flush(xp)
            total_loss, seen = window.total, window.seen
            record = {"epoch": epoch, "loss": total_loss / seen}
            if labels:
                if comm is not None:
                    correct = comm.allreduce_sum(xp.reshape(xp.asarray(correct), (1,)))[0]
                record["accuracy"] = float(correct) / seen
            if lr is not None:
                record["lr"] = lr
            if max_loss is not None and record["loss"] > max_loss:
                raise TrainingDiverged(epoch, None, record["loss"], max_loss)
            if validation is not None:
                record["val_loss"], val_accuracy = evaluate(model, loss, *validation)
                if val_accuracy is not None:
                    record["val_accuracy"] = val_accuracy
            record["seconds"] = time.perf_counter() - start
            state.history.append(record)
            state.epoch = epoch
            state.rng_state = rng.bit_generator.state
            if scheduler is not None:
                scheduler.step()
            for callback in callbacks:
                callback.on_epoch_end(model, state, record)
    finally:  # the model is left as it was given
        backend.set_tf32(xp, tf32_before)
        if parallel is not None:
            parallel.close()
    for callback in callbacks:
        callback.on_fit_end(model, state)
    return state.history
