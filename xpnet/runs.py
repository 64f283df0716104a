"""Training runs on disk, as ``xpnet train`` makes them.

A run folder holds ``resume.safetensors`` (rewritten atomically after every epoch: the
model, the optimizer's momentum buffers, the shuffling generator's state, early
stopping's bookkeeping and the history), and at the end ``model.safetensors``,
``metrics.json`` and ``curves.png``. ``xpnet train --resume DIR`` continues from
``resume.safetensors``; a resumed run ends bit-identical (on NumPy) to one that was never
interrupted, because every piece of state that the next epoch reads is restored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from . import backend
from .checkpoint import load_all, read_metadata, save
from .data import load_dataset, stratified_split
from .models import MLP
from .nn import CrossEntropyLoss
from .optim import SGD
from .train import FitState, evaluate, fit, to_model

__all__ = ["RESUME_FILE", "RunError", "config_of_run", "train_run"]

RESUME_FILE = "resume.safetensors"


class RunError(ValueError):
    """A run folder or configuration that cannot be used; the message says why."""


def _file_digest(spec):
    path = Path(spec)
    if spec in ("digits", "mnist1d") or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_of_run(folder):
    """The configuration saved in a run folder's resume checkpoint."""
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        raise RunError(f"{folder}: no {RESUME_FILE} here, so nothing to resume")
    config = read_metadata(path).get("user", {}).get("config")
    if not isinstance(config, dict):
        raise RunError(f"{path}: no training configuration in its metadata")
    return dict(config)


def _save_resume(path, model, optimizer, state, config, data):
    extras = {f"optimizer.{k}": v for k, v in optimizer.state_dict().items()}
    for key, value in (state.best_state or {}).items():
        extras[f"best.{key}"] = value
    resume = {
        "epoch": state.epoch,
        "history": state.history,
        "rng_state": state.rng_state,
        "best": None if state.best == float("inf") else state.best,
        "waited": state.waited,
        "stopped_early": state.stopped_early,
    }
    save(
        model,
        path,
        probe=data.X_test[:8],
        extra_tensors=extras,
        metadata={
            "dataset": str(data.name),
            "classes": data.classes,
            "config": config,
            "resume": resume,
        },
    )


def _restore(path, config, xp, device):
    model, extras, info = load_all(path, xp=xp, device=device)
    model.train()
    optimizer = _optimizer(model, config)
    optimizer.load_state_dict(
        {k[len("optimizer.") :]: v for k, v in extras.items() if k.startswith("optimizer.")}
    )
    saved = info.get("user", {}).get("resume") or {}
    best_state = {k[len("best.") :]: v for k, v in extras.items() if k.startswith("best.")}
    state = FitState(
        epoch=int(saved.get("epoch", 0)),
        history=list(saved.get("history", [])),
        rng_state=saved.get("rng_state"),
        best=float("inf") if saved.get("best") is None else float(saved["best"]),
        waited=int(saved.get("waited", 0)),
        best_state=best_state or None,
        stopped_early=bool(saved.get("stopped_early", False)),
    )
    return model, optimizer, state


def _optimizer(model, config):
    return SGD(
        model, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"]
    )


def _setup(config, folder, resume):
    """Data, model, optimizer and fit state of a new or resumed run (may raise)."""
    xp = backend.get(config["backend"])
    device = backend.resolve_device(xp, config["device"])
    data = load_dataset(config["dataset"], label_column=config["label_column"], seed=config["seed"])
    digest = _file_digest(config["dataset"])
    if resume and digest != config.get("data_sha256"):
        raise RunError(
            f"{config['dataset']}: the data file changed since the run started; "
            f"resuming on other data would not continue the same run"
        )
    config = {**config, "data_sha256": digest}
    resume_path = folder / RESUME_FILE
    if resume:
        model, optimizer, state = _restore(resume_path, config, xp, device)
    else:
        sizes = [data.n_features, *config["hidden"], data.n_classes]
        model = MLP(
            sizes,
            activation=config["activation"],
            batchnorm=config["batchnorm"],
            xp=xp,
            device=device,
            dtype=config["dtype"],
            seed=config["seed"],
        )
        optimizer = _optimizer(model, config)
        state = FitState()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create the run folder {folder}: {err.strerror}") from None
        _save_resume(resume_path, model, optimizer, state, config, data)
    return model, optimizer, state, data, config


def train_run(config, folder, *, resume=False, quiet=False, echo=print):
    """Train (or, with ``resume``, continue) the run described by ``config`` in ``folder``.

    Returns the metrics dict that ``metrics.json`` holds. Raises
    :class:`~xpnet.train.TrainingDiverged` (the last good epoch stays in
    ``resume.safetensors``) and lets ``KeyboardInterrupt`` through after the same
    guarantee.
    """
    wall = time.perf_counter()
    folder = Path(folder)
    try:
        setup = _setup(config, folder, resume)
    except RunError:
        raise
    except (ValueError, TypeError, ModuleNotFoundError, RuntimeError, OSError) as err:
        # bad configuration, data or checkpoint: say it in one line
        raise RunError(str(err)) from None
    model, optimizer, state, data, config = setup
    resume_path = folder / RESUME_FILE
    lib, dev = backend.placement(model.layers[0].W)
    echo(
        f"data: {data.name}, {len(data.y_train)} train / {len(data.y_test)} test, "
        f"{data.n_features} features, {data.n_classes} classes"
    )
    echo(
        f"model: {model._label()} on {lib} ({dev}), {config['dtype']}"
        + (f"; resuming after epoch {state.epoch}" if resume else "")
    )

    X_train, y_train = data.X_train, data.y_train
    validation = None
    if config["early_stopping"]:
        keep, held = stratified_split(y_train, test_fraction=0.1, seed=config["seed"] + 1)
        validation = (X_train[held], y_train[held])
        X_train, y_train = X_train[keep], y_train[keep]
    loss = CrossEntropyLoss()
    show = not quiet and sys.stderr.isatty()

    def log(record):
        if show:
            from tqdm.auto import tqdm

            extra = (
                f"  val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
                if "val_loss" in record
                else ""
            )
            tqdm.write(
                f"epoch {record['epoch']:>3}/{config['epochs']}  loss "
                f"{record['loss']:.4f}  acc {record['accuracy']:.4f}{extra}",
                file=sys.stderr,
            )

    def checkpoint(fit_state):
        _save_resume(resume_path, model, optimizer, fit_state, config, data)

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
            progress=show,
            early_stopping=config["early_stopping"],
            log=log,
            state=state,
            on_epoch_end=checkpoint,
        )
    train_seconds = time.perf_counter() - start
    X_test, y_test = to_model(model, data.X_test, data.y_test)
    test_loss, test_accuracy = evaluate(model, loss, X_test, y_test)
    model_path = folder / "model.safetensors"
    save(
        model,
        model_path,
        probe=data.X_test[:8],
        metadata={
            "dataset": str(data.name),
            "classes": data.classes,
            "config": config,
            "test_accuracy": test_accuracy,
            "test_loss": test_loss,
        },
    )
    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "epochs_run": len(history),
        "history": history,
        "config": config,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - wall,
        "checkpoint": str(model_path),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["curves"] = _plot_curves(history, folder / "curves.png")
    return metrics


def _plot_curves(history, path):
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
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
