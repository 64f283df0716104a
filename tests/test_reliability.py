"""Reliability: numerical extremes, non-finite losses, interrupted and resumed runs,
checkpoint writes that fail midway, and validation of the remaining entry points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import asarray, assert_close, run_cli, saved_arrays
from xpnet import backend
from xpnet import checkpoint as ckpt
from xpnet.app.folders import RESUME_FILE
from xpnet.app.runs import train_run
from xpnet.callbacks import EarlyStopping
from xpnet.data import load_digits
from xpnet.models import MLP
from xpnet.nn import GELU, BatchNorm1d, CrossEntropyLoss, Sigmoid, Softmax, Tanh
from xpnet.optim import SGD
from xpnet.train import FitState, TrainingDiverged, evaluate, fit

DTYPES = ["float32", "float64"]


# -- numerical extremes (the suite turns every warning into an error) -----------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_huge_logits(xp, device, dtype):
    # each row is shifted by its own maximum: the last row's is 2e4 below the others', so
    # shifting by the batch's maximum would leave it exp(-2e4) = 0 everywhere, and 0 / 0
    A = asarray(xp, device, [[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4], [-1e4, -1e4]], dtype)
    y = asarray(xp, device, [0, 0, 1, 0], "int64")
    loss = CrossEntropyLoss()
    L = loss.forward(A, y)
    # rows: correct and certain (0), wrong and certain (2e4), two ties (log 2)
    assert_close(L, (0 + 2e4 + 2 * np.log(2)) / 4, xp=xp, dtype=dtype, rtol=1e-6)
    expected = np.array([[0, 0], [-1, 1], [0.5, -0.5], [-0.5, 0.5]]) / 4
    assert_close(loss.backward(), expected, xp=xp, dtype=dtype, rtol=1e-6, atol=1e-7)
    f = Softmax()
    softmax = [[1, 0], [0, 1], [0.5, 0.5], [0.5, 0.5]]
    assert_close(f.forward(A), softmax, xp=xp, dtype=dtype, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("cls", "values", "derivatives"),
    [
        (Sigmoid, [0, 0, 1, 1, 0.5], [0, 0, 0, 0, 0.25]),
        (Tanh, [-1, -1, 1, 1, 0], [0, 0, 0, 0, 1]),
        (GELU, [-0.0, -0.0, 1e30, np.inf, 0], [0, 0, 1, 1, 0.5]),
    ],
)
def test_activations_saturate_without_warnings(xp, device, dtype, cls, values, derivatives):
    Z = asarray(xp, device, [[-np.inf, -1e30, 1e30, np.inf, 0.0]], dtype)
    f = cls()
    A = f.forward(Z)
    expected = np.array([values], dtype=np.float64)
    np.testing.assert_array_equal(backend.to_numpy(A), expected.astype(dtype))
    np.testing.assert_allclose(backend.to_numpy(f.backward()), [derivatives], atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", [Sigmoid, Tanh, GELU])
def test_activations_large_finite_inputs(xp, device, dtype, cls):
    Z = asarray(xp, device, np.linspace(-80, 80, 33).reshape(3, 11), dtype)
    f = cls()
    assert np.all(np.isfinite(backend.to_numpy(f.forward(Z))))
    assert np.all(np.isfinite(backend.to_numpy(f.backward(xp.ones_like(Z)))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_constant_feature_stays_finite(xp, device, dtype):
    Z = asarray(xp, device, [[3.0, 1.0], [3.0, 2.0], [3.0, 4.0]], dtype)
    bn = BatchNorm1d(2, xp=xp, device=device, dtype=dtype)
    out = backend.to_numpy(bn.forward(Z))
    assert np.all(np.isfinite(out)) and np.allclose(out[:, 0], 0.0, atol=1e-3)
    grad = backend.to_numpy(bn.backward(asarray(xp, device, [[1, 2], [3, 4], [5, 6.5]], dtype)))
    assert np.all(np.isfinite(grad))
    assert np.all(np.isfinite(backend.to_numpy(bn.running_V)))


# -- non-finite losses ---------------------------------------------------------------------
@pytest.mark.parametrize("check_every", [1, None])
def test_fit_stops_on_a_nan_loss(xp, device, check_every):
    """Every step checked: the NaN step updates nothing, on every backend. The default (on a
    GPU, losses read back every DEVICE_CHECK_EVERY steps): the run still stops and names the
    first bad step, and the parameters are finite only where each step was checked."""
    data = load_digits()
    X = data.X_train.copy()
    X[40] = np.nan  # row 40 is in the second batch of 32 when the order is not shuffled...
    model = MLP([64, 16, 10], xp=xp, device=device, dtype="float64", seed=0)
    opt = SGD(model, lr=0.05, momentum=0.9)
    before = {k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step \d+") as info:
        fit(
            model, CrossEntropyLoss(), opt, (X, data.y_train), epochs=2, batch_size=32,
            check_every=check_every,
        )  # fmt: skip
    assert info.value.epoch == 1 and info.value.step >= 1
    # ...but shuffled it lands in some batch: the one that fit names
    rows = np.random.default_rng(0).permutation(X.shape[0])
    assert 40 in rows[(info.value.step - 1) * 32 : info.value.step * 32]
    assert before.keys() == model.state_dict().keys()
    if check_every == 1 or backend.on_host(model.layers[0].W):
        for key, value in model.state_dict().items():
            assert np.all(np.isfinite(backend.to_numpy(value))), key


def test_cli_divergence_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--lr", "1e25", "--epochs", "3", "--out", out, "--quiet")
    assert result.returncode == 1
    assert "loss became nan at epoch 1, step" in result.stderr
    assert "Traceback" not in result.stderr and "RuntimeWarning" not in result.stderr
    assert f"{out / RESUME_FILE}" in result.stderr
    ckpt.load(out / RESUME_FILE)  # the last good state is intact and passes its probe
    assert not (out / "model.safetensors").exists()


# -- interrupted and resumed runs ----------------------------------------------------------
def _config(**changes):
    config = {
        "dataset": "digits",
        "label_column": None,
        "hidden": [32, 16],
        "activation": "relu",
        "batchnorm": True,
        "epochs": 6,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "early_stopping": None,
        "backend": "numpy",
        "device": None,
        "dtype": "float32",
        "seed": 3,
    }
    config.update(changes)
    return config


@pytest.mark.parametrize(
    "changes",
    [{}, {"dtype": "float64", "early_stopping": 2, "epochs": 8}, {"batchnorm": False}],
    ids=["batchnorm", "float64-early-stopping", "plain"],
)
def test_resumed_run_is_bit_identical(tmp_path, changes):
    whole = train_run(_config(**changes), tmp_path / "whole", echo=lambda _: None)
    first = _config(**changes)
    first["epochs"] = 3
    train_run(first, tmp_path / "parts", echo=lambda _: None)
    saved = ckpt.read_metadata(tmp_path / "parts" / RESUME_FILE)
    assert saved["user"]["resume"]["epoch"] == 3
    resumed = train_run(
        {**saved["user"]["config"], "epochs": whole["config"]["epochs"]},
        tmp_path / "parts",
        resume=True,
        echo=lambda _: None,
    )
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    a, b = (
        saved_arrays(tmp_path / "whole" / "model.safetensors"),
        saved_arrays(tmp_path / "parts" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert resumed["test_accuracy"] == whole["test_accuracy"]


@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "dropout": 0.2,
         "schedule": "cosine", "warmup_epochs": 2},
        {"optimizer": "adam", "lr": 1e-3, "schedule": "step", "batchnorm": False},
    ],
    ids=["adamw-dropout-warmup-cosine", "adam-step"],
)  # fmt: skip
def test_resumed_run_with_adam_dropout_and_schedule_is_bit_identical(
    tmp_path, monkeypatch, changes
):
    """Interrupted after epoch 3 of 6 (the schedule spans the 6) and resumed: the moment
    estimates, the step count, the schedule's position and the dropout generators all
    continue, so the result is the uninterrupted run's to the bit."""
    from xpnet.app import runs

    whole = train_run(_config(**changes), tmp_path / "whole", echo=lambda _: None)
    real = runs._save_resume

    def interrupt_after_epoch_3(path, model, optimizer, state, *args):
        real(path, model, optimizer, state, *args)
        if state.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_save_resume", interrupt_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(_config(**changes), tmp_path / "parts", echo=lambda _: None)
    monkeypatch.setattr(runs, "_save_resume", real)
    saved = ckpt.read_metadata(tmp_path / "parts" / RESUME_FILE)["user"]["config"]
    resumed = train_run(saved, tmp_path / "parts", resume=True, echo=lambda _: None)
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in whole["history"]]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    a, b = (
        saved_arrays(tmp_path / "whole" / "model.safetensors"),
        saved_arrays(tmp_path / "parts" / "model.safetensors"),
    )
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert len({h["lr"] for h in whole["history"]}) > 2


# preexec_fn makes Popen fork, and JAX (imported by the jax session) warns of any fork in a
# threaded process; the child runs one signal call and then execs, so no lock is taken
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_ctrl_c_leaves_a_resumable_run(tmp_path):
    args = ["train", "--epochs", "600", "--hidden", "16", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "xpnet", *args, "--out", tmp_path / "a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default action, whatever this process inherited: a shell's background
        # job ignores SIGINT, and so would the child (and train to the end)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    resume = tmp_path / "a" / RESUME_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if resume.exists() and ckpt.read_metadata(resume)["user"]["resume"]["epoch"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Continue with: xpnet train --resume {tmp_path / 'a'}" in err
    assert "Traceback" not in err
    stopped_at = ckpt.read_metadata(resume)["user"]["resume"]["epoch"]
    assert 2 <= stopped_at < 600
    done = run_cli("train", "--resume", tmp_path / "a", "--json")
    assert done.returncode == 0, done.stderr
    whole = run_cli(*args, "--out", tmp_path / "b", "--json")
    assert whole.returncode == 0, whole.stderr
    assert json.loads(done.stdout)["test_accuracy"] == json.loads(whole.stdout)["test_accuracy"]
    a, b = (
        saved_arrays(tmp_path / "a" / "model.safetensors"),
        saved_arrays(tmp_path / "b" / "model.safetensors"),
    )
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_resume_refuses_changed_data(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, X=rng.standard_normal((60, 4)), y=np.arange(60) % 3)
    assert (
        run_cli(
            "train", "--dataset", data, "--epochs", "2", "--out", tmp_path / "r", "--quiet"
        ).returncode
        == 0
    )
    np.savez(data, X=rng.standard_normal((60, 4)), y=np.arange(60) % 3)
    result = run_cli("train", "--resume", tmp_path / "r", "--epochs", "4")
    assert result.returncode == 2 and "the data file changed" in result.stderr


# -- checkpoint writes that fail midway ----------------------------------------------------
def test_write_failing_midway_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = ckpt.save(MLP([4, 3], seed=1), tmp_path / "m.safetensors")
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left on device"):
        ckpt.save(MLP([4, 3], seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()
    ckpt.load(path)


# -- validation of the remaining entry points -------------------------------------------
def test_fit_and_evaluate_arguments(xp, device):
    model = MLP([3, 2], xp=xp, device=device)
    opt, loss = SGD(model), CrossEntropyLoss()
    X, y = np.zeros((4, 3)), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="fit: epochs must be positive, got 0"):
        fit(model, loss, opt, (X, y), epochs=0, batch_size=2)
    with pytest.raises(ValueError, match="fit: batch_size must be positive, got -1"):
        fit(model, loss, opt, (X, y), epochs=1, batch_size=-1)
    with pytest.raises(ValueError, match=r"EarlyStopping needs a validation set \(validation="):
        fit(model, loss, opt, (X, y), epochs=1, batch_size=2, callbacks=[EarlyStopping(3)])
    with pytest.raises(ValueError, match=r"got X \(4, 3\) and y \(3,\)"):
        fit(model, loss, opt, (X, y[:3]), epochs=1, batch_size=2)
    with pytest.raises(TypeError, match="must be a pair"):
        fit(model, loss, opt, X, epochs=1, batch_size=2)
    with pytest.raises(ValueError, match=r"evaluate: the data must be X of shape"):
        evaluate(model, loss, X[:, :, None], y)
    state = FitState()
    fit(model, loss, opt, (X, y), epochs=2, batch_size=2, state=state)
    assert state.epoch == 2 and len(state.history) == 2


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda m: m.to("nosuchlib"), ValueError, "unknown backend 'nosuchlib'"),
        (lambda m: m.to("numpy", dtype="int8"), ValueError, "dtype must be one of"),
        (
            lambda m: m.load_state_dict({"layers.0.W": [[1.0]], "layers.0.b": [[0.0]]}),
            TypeError,
            "expected an array",
        ),
        (lambda m: m.load_state_dict([1, 2]), TypeError, "mapping of keys"),
    ],
)
def test_module_entry_points(call, exc, match):
    with pytest.raises(exc, match=match):
        call(MLP([1, 1]))
