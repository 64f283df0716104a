"""Training runs on disk, as ``xpnet train`` makes them, and the data that evaluates them.

A run folder holds ``resume.safetensors`` (rewritten atomically after every epoch: the
model, the optimizer's momentum buffers, the shuffling generator's state, early
stopping's bookkeeping and the history), and at the end ``model.safetensors``,
``metrics.json`` and ``curves.png``. ``xpnet train --resume DIR`` continues from
``resume.safetensors``; a resumed run ends bit-identical (on NumPy) to one that was never
interrupted, because every piece of state that the next epoch reads is restored.

Both checkpoints record the data they were trained on (:meth:`xpnet.data.Dataset.record`:
the dataset's name, a data file's absolute path and SHA-256, the label column and the
split's seed and test fraction), so :func:`evaluation_data` rebuilds exactly the test
rows that training held out, from any folder, and refuses a data file that changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend
from .._io import atomic_write
from ..checkpoint import LEGACY_FORMATS, load_all, read_metadata, save
from ..data import (
    SCALINGS,
    data_sha256,
    fixed_scaling,
    is_builtin,
    load_dataset,
    on_disk,
    read_arrays,
    standard_scaling,
    stratified_split,
)
from ..data.idx import is_idx_folder, stores_bytes
from ..data.npy import open_npy_folder
from ..errors import DataError, RunError, XpnetError
from ..models import ACTIVATIONS, MLP
from ..nn import CrossEntropyLoss, Softmax
from ..optim import OPTIMIZERS
from ..optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR, StepLR
from ..train import FitState, evaluate, fit

__all__ = [
    "DIVERGENCE_FACTOR",
    "RESUME_FILE",
    "SCHEDULES",
    "RunError",
    "config_of_run",
    "evaluation_data",
    "legacy_input_scale",
    "loss_bound",
    "predictions",
    "train_run",
    "write_predictions",
]

RESUME_FILE = "resume.safetensors"
#: The file whose OS lock marks the process that owns a run folder (it holds that pid).
LOCK_FILE = ".xpnet.lock"
#: Files of a finished run, which a new run does not overwrite without ``--force``.
RUN_FILES = ("model.safetensors", "metrics.json", RESUME_FILE)

#: A run stops as diverged when an epoch's mean cross-entropy exceeds this many times
#: ``ln(K)``, the loss of predicting all ``K`` classes as equally likely.
DIVERGENCE_FACTOR = 100.0


@contextlib.contextmanager
def owned_folder(folder):
    """Hold ``folder``'s exclusive lock while the block runs.

    One process trains in a run folder at a time. The lock is the operating system's
    (``fcntl.flock`` on :data:`LOCK_FILE`), so it is released when the process ends however
    it ends; nothing stale is left to clean up. The folder is created if missing. Where
    the platform has no ``fcntl`` (Windows), nothing is locked.

    Parameters
    ----------
    folder : Path
        The run folder.

    Yields
    ------
    None
        While the lock is held.

    Raises
    ------
    RunError
        Another process holds the folder (the message gives its pid), or the folder cannot
        be created.
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot create the run folder {folder}: {err.strerror}") from None
    try:
        import fcntl
    except ImportError:  # no advisory locks here: nothing to hold
        yield
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{folder} is in use by another xpnet process (pid {holder}); wait for it "
                f"to end, or choose another --out"
            ) from None
        locked = True
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if locked and created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            (folder / LOCK_FILE).unlink()  # a run that wrote nothing leaves no folder,
            with contextlib.suppress(OSError):  # nor the parents made for it (runs/)
                for made in created:
                    made.rmdir()
        os.close(fd)  # releases the lock


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


def config_of_run(folder):
    """The configuration saved in a run folder's resume checkpoint.

    Parameters
    ----------
    folder : str or Path
        A run folder that ``xpnet train`` wrote.

    Returns
    -------
    dict
        The run's configuration.

    Raises
    ------
    RunError
        The folder holds no resume checkpoint, or it has no configuration.
    """
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        raise RunError(f"{folder}: no {RESUME_FILE} here, so nothing to resume")
    config = read_metadata(path).get("user", {}).get("config")
    if not isinstance(config, dict):
        raise RunError(f"{path}: no training configuration in its metadata")
    _check_fields(path, "config", config, _CONFIG_FIELDS, required=_CONFIG_REQUIRED)
    return dict(config)


# -- what a resume file may hold: every field checked before it is used -----------------
class _Field:
    """How a metadata field is checked: a predicate, and what it says the value must be."""

    def __init__(self, ok, text):
        self.ok, self.text = ok, text

    def __call__(self, value):
        return self.ok(value)


def _int(low, high=None):
    return _Field(
        lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= (high or v),
        f"an integer of at least {low}" + ("" if high is None else f" and at most {high}"),
    )


def _number(low, high, *, open_low=False, open_high=False):
    return _Field(
        lambda v: (
            not isinstance(v, bool)
            and isinstance(v, (int, float))
            and math.isfinite(v)
            and (low < v if open_low else low <= v)
            and (v < high if open_high else v <= high)
        ),
        f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}",
    )


def _one_of(*choices):
    return _Field(lambda v: isinstance(v, str) and v in choices, f"one of {list(choices)}")


def _kind(*types, text):
    return _Field(
        lambda v: isinstance(v, types) and not (isinstance(v, bool) and bool not in types), text
    )


def _or_none(check):
    return _Field(lambda v: v is None or check(v), f"null or {check.text}")


def _list_of(check, text):
    return _Field(lambda v: isinstance(v, list) and all(check(x) for x in v), text)


#: The optimizers ``xpnet train --optimizer`` names.
#: The learning-rate schedules ``xpnet train --schedule`` names (stepped once per epoch).
SCHEDULES = ("constant", "step", "cosine")
_CONFIG_FIELDS = {
    "dataset": _kind(str, text="a dataset name or path"),
    "label_column": _or_none(_kind(int, str, text="a column index or name")),
    "scale": _one_of(*SCALINGS, "fixed"),  # fixed: what auto chose for data of known range
    "hidden": _list_of(_int(1), "a list of positive integers"),
    "activation": _one_of(*ACTIVATIONS),
    "batchnorm": _kind(bool, text="true or false"),
    "batch_size": _int(1),
    "optimizer": _one_of(*OPTIMIZERS),
    "lr": _number(0, math.inf, open_low=True, open_high=True),
    "momentum": _number(0, 1),
    "weight_decay": _number(0, math.inf, open_high=True),
    "schedule": _one_of(*SCHEDULES),
    "warmup_epochs": _int(0),
    "dropout": _number(0, 1, open_high=True),
    "early_stopping": _or_none(_int(1)),
    "backend": _one_of(*backend.SUPPORTED),
    "device": _or_none(_kind(str, text="a device name")),
    "dtype": _one_of("float32", "float64"),
    "seed": _int(0),
    "tf32": _kind(bool, text="true or false"),
    "cuda_graph": _kind(bool, text="true or false"),
    "epochs": _int(1),
    "data_path": _or_none(_kind(str, text="a path")),
    "data_sha256": _or_none(_kind(str, text="a hexadecimal SHA-256")),
}
_CONFIG_REQUIRED = ("dataset", "hidden", "activation", "batchnorm", "batch_size", "lr",
                    "momentum", "weight_decay", "early_stopping", "backend", "device", "dtype",
                    "seed", "epochs")  # fmt: skip
_RESUME_FIELDS = {
    "epoch": _int(0),
    "history": _list_of(_kind(dict, text="an object"), "a list of objects, one per epoch"),
    "rng_state": _or_none(_kind(dict, text="a NumPy generator state")),
    "best": _or_none(_number(-math.inf, math.inf)),
    "best_epoch": _or_none(_int(0)),
    "waited": _int(0),
    "stopped_early": _kind(bool, text="true or false"),
    "scheduler": _or_none(_kind(dict, text="a schedule's state")),
    "dropout_rng": _list_of(_kind(dict, text="a NumPy generator state"), "a list of states"),
}


def _check_fields(path, where, record, fields, *, required=()):
    """Refuse a record whose fields have the wrong type or range, naming the first."""
    for name in required:
        if name not in record:
            raise RunError(f"{path}: metadata field '{where}.{name}' is missing")
    for name, ok in fields.items():
        if name in record and not ok(record[name]):
            shown = repr(record[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RunError(
                f"{path}: metadata field '{where}.{name}' must be {ok.text}, got {shown}"
            )


def _generator_state(path, field, state, rng=None):
    """Set ``rng``'s state (a new generator's by default), or raise a RunError naming
    the field."""
    rng = np.random.default_rng() if rng is None else rng
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as err:
        raise RunError(
            f"{path}: metadata field '{field}' is not a generator state ({err})"
        ) from None
    return rng


def _save_resume(path, model, optimizer, state, config, data, scheduler=None):
    extras = {f"optimizer.{k}": v for k, v in optimizer.state_dict().items()}
    for key, value in (state.best_state or {}).items():
        extras[f"best.{key}"] = value
    resume = {
        "epoch": state.epoch,
        "history": state.history,
        "rng_state": state.rng_state,
        "best": None if state.best == float("inf") else state.best,
        "best_epoch": state.best_epoch,
        "waited": state.waited,
        "stopped_early": state.stopped_early,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "dropout_rng": [d.rng.bit_generator.state for d in model.dropout_layers],
    }
    save(
        model,
        path,
        probe=np.asarray(data.X_test[:8]),
        extra_tensors=extras,
        metadata={
            "dataset": str(data.name),
            "data": data.record(),
            "classes": data.classes,
            "config": config,
            "resume": resume,
        },
    )


def _restore(path, config, xp, device, data):
    model, extras, info = load_all(path, xp=xp, device=device)
    if info.get("format") in LEGACY_FORMATS and data.input_scale:
        raise RunError(
            f"{path}: this run was started by an xpnet that scaled {data.name}'s features "
            f"before the model saw them, and this version gives the model raw features; "
            f"finish the run with the xpnet that started it, or start a new run"
        )
    model.train()
    optimizer = _optimizer(model, config)
    optimizer.load_state_dict(
        {k[len("optimizer.") :]: v for k, v in extras.items() if k.startswith("optimizer.")}
    )
    saved = info.get("user", {}).get("resume") or {}
    if not isinstance(saved, dict):
        raise RunError(f"{path}: metadata field 'user.resume' must be an object")
    _check_fields(path, "user.resume", saved, _RESUME_FIELDS)
    if saved.get("rng_state") is not None:
        _generator_state(path, "user.resume.rng_state", saved["rng_state"])
    scheduler = _scheduler(optimizer, config)
    if scheduler is not None and saved.get("scheduler"):
        try:
            scheduler.load_state_dict(saved["scheduler"])
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise RunError(
                f"{path}: metadata field 'user.resume.scheduler' is not this run's schedule "
                f"state ({err})"
            ) from None
    for k, (layer, rng_state) in enumerate(
        zip(model.dropout_layers, saved.get("dropout_rng") or [], strict=False)
    ):
        _generator_state(path, f"user.resume.dropout_rng.{k}", rng_state, layer.rng)
    best_state = {k[len("best.") :]: v for k, v in extras.items() if k.startswith("best.")}
    state = FitState(
        epoch=int(saved.get("epoch", 0)),
        history=list(saved.get("history", [])),
        rng_state=saved.get("rng_state"),
        best=float("inf") if saved.get("best") is None else float(saved["best"]),
        best_epoch=saved.get("best_epoch"),
        waited=int(saved.get("waited", 0)),
        best_state=best_state or None,
        stopped_early=bool(saved.get("stopped_early", False)),
    )
    return model, optimizer, scheduler, state


def _optimizer(model, config):
    kind = config.get("optimizer", "sgd")
    if kind not in OPTIMIZERS:
        raise RunError(f"unknown optimizer {kind!r}; expected one of {', '.join(OPTIMIZERS)}")
    options = {"lr": config["lr"], "weight_decay": config["weight_decay"]}
    if kind == "sgd":
        options["momentum"] = config["momentum"]
    return OPTIMIZERS[kind](model, **options)


def _scheduler(optimizer, config):
    """The run's schedule, stepped once per epoch: an optional linear warm-up from a tenth
    of the rate over ``warmup_epochs``, then constant, step (a tenth every third of the
    remaining epochs) or cosine (to zero at the last epoch); None when constant without
    warm-up."""
    schedule = config.get("schedule", "constant")
    warmup = int(config.get("warmup_epochs", 0) or 0)
    rest = max(1, config["epochs"] - warmup)
    if schedule not in SCHEDULES:
        raise RunError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    warm = LinearLR(optimizer, start_factor=0.1, total_iters=warmup) if warmup else None
    if schedule == "step":
        main = StepLR(optimizer, step_size=max(1, rest // 3), gamma=0.1)
    elif schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=rest)
    else:
        return warm
    return main if warm is None else SequentialLR(optimizer, [warm, main], [warmup])


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
        model, optimizer, scheduler, state = _restore(resume_path, config, xp, device, data)
    else:
        config["scale"] = _resolved_scaling(config.get("scale", "auto"), data)
        sizes = [data.n_features, *config["hidden"], data.n_classes]
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
        optimizer = _optimizer(model, config)
        scheduler = _scheduler(optimizer, config)
        state = FitState()
        if root:  # with several processes, the first writes the run folder
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RunError(f"cannot create the run folder {folder}: {err.strerror}") from None
            _save_resume(resume_path, model, optimizer, state, config, data, scheduler)
    return model, optimizer, scheduler, state, data, config


def _resolved_scaling(choice, data):
    """``"standard"``, ``"fixed"`` (the dataset's range) or ``"none"`` for ``--scale``."""
    if choice not in SCALINGS:
        raise RunError(f"unknown scaling {choice!r}; expected one of {', '.join(SCALINGS)}")
    if choice != "auto":
        return choice
    if data.input_scale:
        return "fixed"
    return "none" if is_builtin(data.name) else "standard"


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

    def _log(record):
        if quiet:
            return
        line = _epoch_line(record, config["epochs"])
        if terminal:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def _checkpoint(fit_state):
        if root:
            _save_resume(resume_path, model, optimizer, fit_state, config, data, scheduler)

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
            early_stopping=config["early_stopping"],
            log=_log,
            state=state,
            on_epoch_end=_checkpoint,
            max_loss=loss_bound(data.n_classes),
            scheduler=scheduler,
            comm=comm,
            cuda_graph=bool(config.get("cuda_graph", False)),
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
    metrics["curves"] = _plot_curves(history, folder / "curves.png", best_epoch=best)
    return metrics


def _silent(text):
    """An echo that prints nothing (every process but the first)."""


def _recorded_data(user):
    """The data record of a checkpoint's metadata; older checkpoints, which have none,
    get one rebuilt from their training configuration."""
    record = user.get("data")
    if isinstance(record, dict) and isinstance(record.get("split"), dict):
        return record
    config = user.get("config") if isinstance(user.get("config"), dict) else {}
    return {
        "name": user.get("dataset"),
        "path": config.get("data_path"),
        "sha256": config.get("data_sha256"),
        "label_column": config.get("label_column"),
        "split": {"seed": config.get("seed", 0)},
    }


def legacy_input_scale(info):
    """What a checkpoint of the old format expects its features divided by, or None.

    Checkpoints of format 1 (:data:`xpnet.checkpoint.LEGACY_FORMATS`) came from an
    ``xpnet train`` that divided the digits by 16 and 8-bit IDX images by 255 before the
    model saw them, and recorded it nowhere; today's models carry their scaling.

    Parameters
    ----------
    info : dict
        The checkpoint's metadata.

    Returns
    -------
    float or None
        16 for the digits, 255 for an IDX folder of 8-bit images, None for anything else
        (and for every checkpoint of the current format).
    """
    if info.get("format") not in LEGACY_FORMATS:
        return None
    record = _recorded_data(info.get("user") or {})
    if record.get("name") == "digits":
        return 16.0
    path = record.get("path")
    if isinstance(path, str) and is_idx_folder(path) and stores_bytes(path):
        return 255.0
    return None


def evaluation_data(info, dataset=None, *, label_column=None, all_rows=False):
    """The rows to evaluate a checkpoint on, as ``(X, y, description)``.

    Without ``dataset``: the test split of the data the model was trained on, rebuilt
    from the checkpoint's record (same seed and test fraction; a data file found by its
    recorded absolute path when the path as given does not exist here, and refused when
    its SHA-256 changed). With ``dataset``: a built-in name or the training file itself
    (found by its SHA-256) gives that same test split; any other file is scored whole.
    ``all_rows`` scores every row of the data instead of the test split.

    Parameters
    ----------
    info : dict
        The checkpoint's metadata (:func:`xpnet.checkpoint.read_metadata`).
    dataset : str, optional
        A built-in dataset name or a ``.npz``/``.csv`` file.
    label_column : int or str, optional
        The CSV label column (default: the one training used, else the last).
    all_rows : bool
        Score all rows rather than the test split.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)`` features.
    y : numpy.ndarray
        ``(N,)`` class ids of the model's classes.
    description : str
        Which rows these are, for the user.

    Raises
    ------
    DataError
        The data cannot be found or read, changed since training, or has labels the model
        does not know.
    """
    user = info.get("user") or {}
    classes = user.get("classes")
    record = _recorded_data(user)
    split = record["split"]
    seed = split.get("seed", 0) if isinstance(split.get("seed", 0), int) else 0
    recorded_label = record.get("label_column")
    given = dataset if dataset is not None else record.get("name")
    if label_column is None and str(given).lower().endswith(".csv"):
        label_column = recorded_label  # the training file's column, for a CSV file
    if dataset is None:
        spec = record.get("name")
        if not isinstance(spec, str):
            raise DataError("the checkpoint does not name its dataset; pass --dataset")
        if not is_builtin(spec):
            spec = _recorded_file(spec, record)
        same = True
    elif is_builtin(dataset):
        spec, same = dataset, dataset == record.get("name")
    else:
        spec = dataset
        path = Path(dataset)
        if not path.exists():
            read_arrays(path)  # raises the DataError that names the problem
        same = record.get("sha256") is not None and data_sha256(path) == record["sha256"]
    legacy = info.get("format") in LEGACY_FORMATS
    if not same or all_rows:
        if is_builtin(spec):
            data = load_dataset(spec, seed=seed)
            X = _legacy_scaled(np.concatenate([data.X_train, data.X_test]), data, legacy)
            ids = np.concatenate([data.y_train, data.y_test])
            labels = [data.classes[i] for i in ids]
        else:
            X, labels = read_arrays(spec, label_column=label_column)
        y = _label_ids(labels, classes, spec)
        return X, y, f"{spec}: all {X.shape[0]} rows"
    if split.get("last"):  # a folder of .npy files split before splits were stratified
        X, labels, _, _ = open_npy_folder(spec)
        cut = X.shape[0] - max(1, X.shape[0] // 4)
        where = (
            f"test split, the last quarter of the rows ({X.shape[0] - cut} of {X.shape[0]} rows)"
        )
        return X[cut:], _label_ids(labels[cut:], classes, spec), f"{spec}: {where}"
    data = load_dataset(spec, label_column=label_column, seed=seed)
    if classes is not None and data.classes != classes:
        raise DataError(f"{spec}: classes {data.classes} differ from the checkpoint's {classes}")
    if split.get("official"):
        where = "official test split"
    else:
        where = f"test split, seed {seed}"
    total = len(data.y_train) + len(data.y_test)
    X = _legacy_scaled(data.X_test, data, legacy)
    return X, data.y_test, f"{spec}: {where} ({len(data.y_test)} of {total} rows)"


def _legacy_scaled(X, data, legacy):
    """``X`` as a format-1 checkpoint's training saw it: divided by the dataset's range."""
    return X / data.input_scale if legacy and data.input_scale else X


def _recorded_file(spec, record):
    """The training file of a checkpoint, checked against its recorded SHA-256."""
    path = Path(spec)
    if not path.exists() and record.get("path"):
        path = Path(record["path"])
    if not path.exists():
        raise DataError(
            f"the model was trained on {record.get('path') or spec}, which is not there; "
            f"pass --dataset FILE"
        )
    digest = record.get("sha256")
    if digest is not None and data_sha256(path) != digest:
        raise DataError(
            f"{path}: the file changed since the model was trained (SHA-256 differs), so "
            f"its test split is not the one training held out; pass --dataset {path} "
            f"--all-rows to score every row of it as it is now"
        )
    return str(path)


def _label_ids(labels, classes, source):
    if not isinstance(classes, list):
        raise DataError("the checkpoint records no classes; cannot map the labels")
    index = {str(c): i for i, c in enumerate(classes)}
    try:
        return np.asarray(
            [index[str(v.item() if hasattr(v, "item") else v)] for v in labels], dtype=np.int64
        )
    except KeyError as err:
        raise DataError(
            f"{source}: label {err.args[0]} is not one of the model's classes {classes}"
        ) from None


def _plot_curves(history, path, *, best_epoch=None):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [r[key] for r in history], label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [r[key] for r in history], label=label)
    if best_epoch is not None:  # the epoch whose parameters early stopping kept
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch}")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, image.getvalue())
    return str(path)


def predictions(model, X, classes=None, *, proba=False):
    """The model's predictions for host features ``X``, as an array and as text lines.

    Parameters
    ----------
    model : MLP
        A model in evaluation mode, on any backend.
    X : numpy.ndarray
        ``(N, F)`` features.
    classes : list, optional
        The label of each class id (default: the ids themselves).
    proba : bool
        Class probabilities (softmax of the logits) instead of labels.

    Returns
    -------
    result : numpy.ndarray
        ``(N,)`` labels, or ``(N, K)`` float64 probabilities.
    lines : list of str
        One line per row; with ``proba``, a header line of the class labels first.
    """
    xp = model.xp
    logits = model.forward(
        xp.asarray(X.astype(backend.dtype_name(model.dtype)), device=model.device)
    )
    classes = classes or list(range(model.sizes[-1]))
    if proba:
        result = backend.to_numpy(Softmax().forward(logits)).astype(np.float64)
        lines = [",".join(str(c) for c in classes)]
        lines += [",".join(f"{p:.6g}" for p in row) for row in result]
    else:
        ids = backend.to_numpy(xp.argmax(logits, axis=1))
        result = np.asarray([classes[i] for i in ids])
        lines = [str(v) for v in result]
    return result, lines


def write_predictions(path, result, lines):
    """Write predictions to a file: ``.npy`` gets the array, anything else the text lines.

    Parameters
    ----------
    path : str or Path
        The file.
    result : numpy.ndarray
        As :func:`predictions` returns it.
    lines : list of str
        As :func:`predictions` returns them.

    Raises
    ------
    RunError
        The file cannot be written.
    """
    out = Path(path)
    try:
        if out.suffix.lower() == ".npy":
            np.save(out, result, allow_pickle=False)
        else:
            out.write_text("\n".join(lines) + "\n")
    except (OSError, ValueError) as err:
        raise RunError(f"cannot write {out}: {err}") from None
