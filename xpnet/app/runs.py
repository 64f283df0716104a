"""Training runs as ``xpnet train`` makes them: :func:`train_run` in a run folder.

The configuration is :mod:`~xpnet.app.config`'s, the folder and its lock
:mod:`~xpnet.app.folders`', the per-epoch resume checkpoint :mod:`~xpnet.app.resume`'s.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend
from .._io import atomic_write
from ..callbacks import EarlyStopping, LambdaCallback
from ..checkpoint import save
from ..data import (
    fixed_scaling,
    is_builtin,
    load_dataset,
    on_disk,
    standard_scaling,
    stratified_split,
)
from ..distributed import convert_sync_batchnorm
from ..errors import RunError, XpnetError
from ..models import MLP
from ..nn import CrossEntropyLoss
from ..train import FitState, evaluate, fit
from .config import _resolved_scaling, check_model_fits, make_optimizer, make_scheduler
from .folders import RESUME_FILE
from .plots import plot_curves
from .resume import restore as _restore
from .resume import save_resume as _save_resume

__all__ = ["DIVERGENCE_FACTOR", "loss_bound", "train_run"]

#: A run stops as diverged when an epoch's mean cross-entropy exceeds this many times
#: ``ln(K)``, the loss of predicting all ``K`` classes as equally likely.
DIVERGENCE_FACTOR = 100.0


def loss_bound(n_classes):
    """The mean training loss above which a run counts as diverged.

    Parameters
    ----------
    n_classes : int
        ``K``.

    Returns
    -------
    float
        ``DIVERGENCE_FACTOR * ln(K)`` (230 for 10 classes).
    """
    return DIVERGENCE_FACTOR * math.log(n_classes)


def _data_source(config):
    """Where a run's data is: the built-in name, else the file as given when it exists
    here, else the absolute path recorded when the run started."""
    spec = config["dataset"]
    if is_builtin(spec) or Path(spec).exists() or not config.get("data_path"):
        return spec
    return config["data_path"]


def _setup(config, folder, resume, root=True, comm=None):
    """Data, model, optimizer and fit state of a new or resumed run (may raise)."""
    xp = backend.get(config["backend"])
    device = backend.resolve_device(xp, config["device"])
    if comm is not None and config["device"] is None:  # a machine's GPUs in turn
        local = backend.rank_device(xp, comm.local_rank)
        device = device if local is None else local
    data = load_dataset(
        _data_source(config), label_column=config["label_column"], seed=config["seed"]
    )
    if resume and data.sha256 != config.get("data_sha256"):
        raise RunError(
            f"{data.path}: the data file changed since the run started; "
            f"resuming on other data would not continue the same run"
        )
    config = {**config, "data_sha256": data.sha256, "data_path": data.path}
    resume_path = folder / RESUME_FILE
    if resume:
        if root:  # a process killed while saving leaves its temporary file: not a checkpoint
            for stale in folder.glob(".*.safetensors.*.tmp"):
                stale.unlink(missing_ok=True)
        model, optimizer, scheduler, state = _restore(
            resume_path, config, xp, device, data, comm=comm
        )
    else:
        config["scale"] = _resolved_scaling(config.get("scale", "auto"), data)
        sizes = [data.n_features, *config["hidden"], data.n_classes]
        check_model_fits(sizes, config, xp, device)
        model = MLP(
            sizes,
            activation=config["activation"],
            batchnorm=config["batchnorm"],
            xp=xp,
            device=device,
            dtype=config["dtype"],
            seed=config["seed"],
            dropout=config.get("dropout", 0.0),
            standardize=config["scale"] != "none",
        )
        if config["scale"] == "standard":
            mean, scale = standard_scaling(data.X_train)
        elif config["scale"] == "fixed":
            mean, scale = fixed_scaling(data.n_features, data.input_scale)
        for layer in model.standardize_layers:
            layer.load_state_dict({"mean": mean, "scale": scale})
        if comm is not None:  # BatchNorm over the global batch, before the optimizer
            convert_sync_batchnorm(model, comm)
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config)
        state = FitState()
        if root:  # with several processes, the first writes the run folder
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RunError(f"cannot create the run folder {folder}: {err.strerror}") from None
            _save_resume(resume_path, model, optimizer, state, config, data, scheduler)
    return model, optimizer, scheduler, state, data, config


def _scaling_note(model):
    """How the model scales its inputs, for the ``data:`` line."""
    if not model.standardize_layers:
        return "inputs unscaled"
    scale = backend.to_numpy(model.standardize_layers[0].scale)
    mean = backend.to_numpy(model.standardize_layers[0].mean)
    if not np.any(mean) and np.all(scale == scale[0, 0]):
        return f"inputs divided by {scale[0, 0]:g} in the model"
    return "inputs standardised in the model (mean and deviation of the training split)"


def _epoch_line(record, epochs):
    extra = (
        f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
        if "val_loss" in record
        else ""
    )
    return (
        f"epoch {record['epoch']:>3}/{epochs}  loss {record['loss']:.4f}  "
        f"acc {record['accuracy']:.4f}{extra}"
    )


def train_run(config, folder, *, resume=False, quiet=False, echo=print, comm=None):
    """Train (or, with ``resume``, continue) the run described by ``config`` in ``folder``.

    Progress: one line per epoch on stderr unless ``quiet`` (above a progress bar on a
    terminal, plain lines in a log file).

    Parameters
    ----------
    config : dict
        The run configuration (as ``xpnet train`` builds it, or :func:`config_of_run`
        reads it back).
    folder : str or Path
        The run folder.
    resume : bool
        Continue the run saved in ``folder``.
    quiet : bool
        No progress output.
    echo : callable
        Prints the run's summary lines.
    comm : MPICommunicator, optional
        Train data-parallel (:mod:`xpnet.distributed`); the first process alone prints
        and writes the run folder, and the metadata records the number of processes.

    Returns
    -------
    dict
        The metrics that ``metrics.json`` holds.

    Raises
    ------
    RunError, DataError, CheckpointError
        A configuration, data file or resume checkpoint that cannot be used.
    TrainingDiverged
        The loss became non-finite, or an epoch's mean loss exceeded :func:`loss_bound`;
        the last good epoch stays in ``resume.safetensors``. ``KeyboardInterrupt`` is let
        through after the same guarantee.
    """
    wall = time.perf_counter()
    folder = Path(folder)
    root = comm is None or comm.rank == 0
    if not root:
        quiet, echo = True, _silent
    config = {**config, "world_size": 1 if comm is None else comm.size}
    try:
        setup = _setup(config, folder, resume, root, comm)
    except XpnetError:  # its message names the file already
        raise
    except OSError as err:
        raise RunError(f"{err.filename or folder}: {err.strerror or err}") from None
    model, optimizer, scheduler, state, data, config = setup
    if resume and (state.epoch >= config["epochs"] or state.stopped_early):
        done = "stopped early" if state.stopped_early else f"trained its {state.epoch} epochs"
        scheduled = config.get("schedule", "constant") != "constant" or config.get("warmup_epochs")
        more = (
            ""
            if state.stopped_early or scheduled
            else f"; pass --epochs N with N above {state.epoch} to train further"
        )
        raise RunError(
            f"{folder}: the run is finished (it {done}), so there is nothing to resume{more}; "
            f"its model is {folder / 'model.safetensors'}"
        )
    resume_path = folder / RESUME_FILE
    lib, dev = backend.placement(model.layers[0].W)
    echo(
        f"data: {data.name}, {len(data.y_train)} train / {len(data.y_test)} test, "
        f"{data.n_features} features, {data.n_classes} classes; {_scaling_note(model)}"
    )
    warnings = data.split_warnings()
    for text in warnings:
        echo(f"warning: {text}")
    processes = "" if comm is None else f", {comm.size} processes"
    echo(
        f"model: {type(model).__name__}({model.extra_repr()}) on {lib} ({dev}{processes}), "
        f"{config['dtype']}" + (f"; resuming after epoch {state.epoch}" if resume else "")
    )

    X_train, y_train = data.X_train, data.y_train
    validation = None
    if config["early_stopping"]:
        if on_disk(X_train):  # on disk: the last tenth, as views of the file
            cut = X_train.shape[0] - max(1, X_train.shape[0] // 10)
            validation = (X_train[cut:], y_train[cut:])
            X_train, y_train = X_train[:cut], y_train[:cut]
        else:
            keep, held = stratified_split(y_train, test_fraction=0.1, seed=config["seed"] + 1)
            validation = (X_train[held], y_train[held])
            X_train, y_train = X_train[keep], y_train[keep]
    loss = CrossEntropyLoss()
    terminal = sys.stderr.isatty()

    def _epoch_done(_model, fit_state, record):
        """Log the epoch's line, then save the resume checkpoint (the first process)."""
        if not quiet:
            line = _epoch_line(record, config["epochs"])
            if terminal:
                from tqdm.auto import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
        if root:
            _save_resume(resume_path, model, optimizer, fit_state, config, data, scheduler)

    callbacks = [LambdaCallback(on_epoch_end=_epoch_done)]
    if config["early_stopping"]:  # first: the checkpoint saves its bookkeeping
        callbacks.insert(0, EarlyStopping(config["early_stopping"]))

    start = time.perf_counter()
    # fit stops on a non-finite loss itself, naming the epoch and step; the library's own
    # overflow warnings on the way there would only add noise
    with backend.quiet_float_errors(model.xp):
        history = fit(
            model,
            loss,
            optimizer,
            (X_train, y_train),
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            validation=validation,
            seed=config["seed"],
            progress=not quiet and terminal,
            callbacks=callbacks,
            state=state,
            max_loss=loss_bound(data.n_classes),
            scheduler=scheduler,
            comm=comm,
            cuda_graph=bool(config.get("cuda_graph", False)),
            compile=bool(config.get("jit", False)),
            tf32=bool(config.get("tf32", False)),
        )
    train_seconds = time.perf_counter() - start
    test_loss, test_accuracy = evaluate(model, loss, data.X_test, data.y_test)
    model_path = folder / "model.safetensors"
    stopping = None
    if config["early_stopping"]:
        stopping = {
            "patience": config["early_stopping"],
            "stopped_early": state.stopped_early,
            "stopped_at_epoch": state.epoch,
            "best_epoch": state.best_epoch,
            "best_val_loss": None if state.best == float("inf") else state.best,
        }
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs_run": len(history),
        "early_stopping": stopping,
        "history": history,
        "config": config,
        "data": data.record(),
        "warnings": warnings,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall,
        "checkpoint": str(model_path),
    }
    if not root:
        return metrics
    save(
        model,
        model_path,
        probe=np.asarray(data.X_test[:8]),
        metadata={
            "dataset": str(data.name),
            "data": data.record(),
            "classes": data.classes,
            "config": config,
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "early_stopping": stopping,
        },
    )
    atomic_write(folder / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    best = stopping["best_epoch"] if stopping else None
    metrics["curves"] = plot_curves(history, folder / "curves.png", best_epoch=best)
    return metrics


def _silent(text):
    """An echo that prints nothing (every process but the first)."""
