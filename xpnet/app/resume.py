"""The resume checkpoint: everything the next epoch reads, saved after every epoch.

``xpnet train --resume DIR`` continues from it; a resumed run ends bit-identical (on
NumPy) to one that was never interrupted, because every piece of state that the next
epoch reads is restored. Every field of its metadata is checked before it is used.
"""

from __future__ import annotations

import math

import numpy as np

from ..checkpoint import LEGACY_FORMATS, load_all, save
from ..distributed import convert_sync_batchnorm
from ..errors import RunError
from ..train import FitState
from .config import (
    _check_fields,
    _int,
    _kind,
    _list_of,
    _number,
    _or_none,
    make_optimizer,
    make_scheduler,
)

__all__ = ["restore", "save_resume"]

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


def _check_history(path, history, epochs, config):
    """Refuse a history that is not this run's: one entry per epoch run, numbered from 1,
    each with the numbers this run records (the metrics and the curves read them all)."""
    keys = {"epoch", "loss", "accuracy", "lr", "seconds"}
    if config["early_stopping"]:
        keys |= {"val_loss", "val_accuracy"}
    for number, record in enumerate(history, start=1):
        if set(record) != keys:
            problem = f"holds {sorted(record)}; this run records {sorted(keys)}"
        elif type(record["epoch"]) is not int or record["epoch"] != number:
            problem = f"is numbered {record['epoch']!r}, not {number}"
        elif any(type(record[key]) not in (int, float) for key in keys - {"epoch"}):
            problem = "holds a value that is not a number"
        else:
            continue
        raise RunError(f"{path}: metadata field 'user.resume.history.{number - 1}' {problem}")
    if len(history) != epochs:
        raise RunError(
            f"{path}: metadata field 'user.resume.history' holds {len(history)} epochs, "
            f"'user.resume.epoch' says {epochs}"
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


def save_resume(path, model, optimizer, state, config, data, scheduler=None):
    """Write the resume checkpoint: everything the next epoch reads.

    The model, the optimizer's and the schedule's state, the fit state and the dropout
    generators, with the run's configuration and data record.

    Parameters
    ----------
    path : Path
        ``resume.safetensors`` in the run folder.
    model : MLP
        The model.
    optimizer : Optimizer
        Its optimizer.
    state : FitState
        Where ``fit`` stands.
    config : dict
        The run's configuration.
    data : Dataset
        The run's data (its record and a probe batch).
    scheduler : LRScheduler, optional
        The run's schedule.
    """
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


def restore(path, config, xp, device, data, *, comm=None):
    """Everything :func:`save_resume` wrote, rebuilt on a backend, every field checked.

    Parameters
    ----------
    path : Path
        ``resume.safetensors``.
    config : dict
        The run's configuration.
    xp : namespace
        The library to rebuild on.
    device : object
        Its device.
    data : Dataset
        The run's data.
    comm : MPICommunicator, optional
        The processes of a data-parallel run: BatchNorm is synchronised before the
        optimizer is made.

    Returns
    -------
    tuple
        The model, optimizer, schedule (or None) and :class:`~xpnet.train.FitState`.

    Raises
    ------
    RunError
        A field that is malformed or does not belong to this run.
    """
    model, extras, info = load_all(path, xp=xp, device=device)
    if info.get("format") in LEGACY_FORMATS and data.input_scale:
        raise RunError(
            f"{path}: this run was started by an xpnet that scaled {data.name}'s features "
            f"before the model saw them, and this version gives the model raw features; "
            f"finish the run with the xpnet that started it, or start a new run"
        )
    model.train()
    if comm is not None:
        convert_sync_batchnorm(model, comm)
    optimizer = make_optimizer(model, config)
    optimizer.load_state_dict(
        {k[len("optimizer.") :]: v for k, v in extras.items() if k.startswith("optimizer.")}
    )
    saved = info.get("user", {}).get("resume") or {}
    if not isinstance(saved, dict):
        raise RunError(f"{path}: metadata field 'user.resume' must be an object")
    _check_fields(path, "user.resume", saved, _RESUME_FIELDS)
    _check_history(path, saved.get("history", []), saved.get("epoch", 0), config)
    if saved.get("rng_state") is not None:
        _generator_state(path, "user.resume.rng_state", saved["rng_state"])
    scheduler = make_scheduler(optimizer, config)
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
