"""The training loop: history, progress, validation and early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet import backend
from xpnet.callbacks import Callback, EarlyStopping, LambdaCallback, ProgressBar
from xpnet.data import load_digits
from xpnet.errors import XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, MSELoss
from xpnet.optim import SGD
from xpnet.step import Step
from xpnet.train import FitState, evaluate, fit


def _setup(xp, device, **sgd):
    data = load_digits()
    data.X_train, data.X_test = data.X_train / 16, data.X_test / 16  # pixels in [0, 1]
    model = MLP([64, 32, 10], batchnorm=True, xp=xp, device=device, seed=0)
    return data, model, CrossEntropyLoss(), SGD(model, **sgd)


def test_history_and_evaluate(xp, device):
    data, model, loss, opt = _setup(xp, device, lr=0.05, momentum=0.9)
    history = fit(
        model,
        loss,
        opt,
        (data.X_train, data.y_train),
        epochs=3,
        batch_size=64,
        validation=(data.X_test, data.y_test),
        progress=False,
    )
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history[0])
    assert model.training  # fit leaves the model in training mode; evaluate restores it
    val_loss, accuracy = evaluate(model, loss, data.X_test, data.y_test)
    assert model.training
    assert np.isclose(val_loss, history[-1]["val_loss"]) and accuracy > 0.8


def test_progress_bar_goes_to_stderr(capsys):
    data, model, loss, opt = _setup(backend.get("numpy"), None, lr=0.05)
    fit(model, loss, opt, (data.X_train, data.y_train), epochs=1, batch_size=128, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 1/1" in captured.err


def test_early_stopping_restores_the_best_epoch(xp, device):
    data, model, loss, opt = _setup(xp, device, lr=0.5, momentum=0.9)
    # a tiny training set and a large learning rate overfit within a few epochs
    X, y = data.X_train[:60], data.y_train[:60]
    snapshots = {}

    def remember(_model, state, _record):
        snapshots[state.epoch] = {
            k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()
        }

    state = FitState()
    history = fit(
        model,
        loss,
        opt,
        (X, y),
        epochs=60,
        batch_size=20,
        validation=(data.X_test, data.y_test),
        callbacks=[EarlyStopping(3), LambdaCallback(on_epoch_end=remember)],
        state=state,
        progress=False,
    )
    assert state.stopped_early and len(history) < 60
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    assert len(history) == best + 3
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(value), snapshots[best][key], err_msg=key)


def test_fit_takes_the_librarys_own_dataset(xp, device):
    """fit(model, loss, opt, data) trains on data's training split, as (X_train, y_train)."""
    data = load_digits()
    results = []
    for train_data in (data, (data.X_train, data.y_train)):
        model = MLP([64, 16, 10], xp=xp, device=device, seed=0)
        history = fit(
            model, CrossEntropyLoss(), SGD(model, lr=0.01), train_data, epochs=1, batch_size=64
        )
        results.append(history[0]["loss"])
    assert results[0] == results[1]


def test_callbacks_run_in_order_after_the_schedule_and_may_stop_training():
    """Each epoch: the record is complete and the schedule has stepped when the callbacks
    run, in the order given; one may end training by setting ``stopped_early``; the
    ``on_fit_end`` hooks run once, after the last epoch."""
    from xpnet.optim.lr_scheduler import StepLR

    data = load_digits()
    model = MLP([64, 16, 10], seed=0)
    opt = SGD(model, lr=0.1)
    calls = []

    class Stop(Callback):
        def on_epoch_end(self, model, state, record):
            calls.append(("stop", record["epoch"], opt.lr, sorted(record)))
            state.stopped_early = record["epoch"] == 3

        def on_fit_end(self, model, state):
            calls.append(("end", state.epoch))

    log = LambdaCallback(on_epoch_end=lambda m, s, r: calls.append(("log", r["epoch"])))
    history = fit(model, CrossEntropyLoss(), opt, (data.X_train, data.y_train), epochs=10,
                  batch_size=64, scheduler=StepLR(opt, 1, gamma=0.5), progress=False,
                  callbacks=[Stop(), log])  # fmt: skip
    assert len(history) == 3
    keys = ["accuracy", "epoch", "loss", "lr", "seconds"]
    assert calls == [
        ("stop", 1, 0.05, keys), ("log", 1),
        ("stop", 2, 0.025, keys), ("log", 2),
        ("stop", 3, 0.0125, keys), ("log", 3),
        ("end", 3),
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"^EarlyStopping: patience must be positive, got 0"):
        EarlyStopping(0)


def test_fit_trains_on_float_targets(xp, device):
    """(N, K) float targets (regression, MSELoss) train as targets: one full batch of fit
    is the readable step on the whole data (a cast to class ids would truncate them), the
    history has no accuracy, and evaluate returns None for it."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((32, 3))
    T = X @ rng.standard_normal((3, 2)) + 0.25  # not integers
    models = [MLP([3, 8, 2], xp=xp, device=device, dtype="float64", seed=1) for _ in range(2)]
    history = fit(models[0], MSELoss(), SGD(models[0], lr=0.1), (X, T), epochs=1,
                  batch_size=32, validation=(X, T))  # fmt: skip
    assert set(history[0]) == {"epoch", "loss", "lr", "seconds", "val_loss"}
    step = Step(models[1], MSELoss(), SGD(models[1], lr=0.1))
    _, L = step(xp.asarray(X, device=device), xp.asarray(T, device=device))
    np.testing.assert_allclose(history[0]["loss"], float(L), rtol=1e-12)
    for key, value in models[1].state_dict().items():
        np.testing.assert_allclose(
            backend.to_numpy(models[0].state_dict()[key]), backend.to_numpy(value),
            rtol=1e-12, atol=1e-15, err_msg=key,
        )  # fmt: skip
    loss, accuracy = evaluate(models[0], MSELoss(), X, T)
    assert accuracy is None and loss == pytest.approx(history[0]["val_loss"], rel=1e-12)
    with pytest.raises(XpnetValueError, match=r"y of shape \(N,\) or \(N, targets\)"):
        fit(models[0], MSELoss(), SGD(models[0]), (X, T[:, :, None]), epochs=1, batch_size=8)


@pytest.mark.parametrize("check_every", [1, 3])
def test_callbacks_see_every_epoch_and_step(check_every):
    """on_epoch_begin before each epoch with its step count; on_batch_end after every step
    with the running means as last read back (from the first read on), the last of an
    epoch equal to its record; a plain Callback beside it does nothing."""
    data = load_digits()
    X, y = data.X_train[:300] / 16, data.y_train[:300]
    model = MLP([64, 16, 10], seed=0)
    seen = []

    class Watch(Callback):
        def on_epoch_begin(self, model, state, epoch):
            seen.append(("begin", epoch, state.epoch))

        def on_batch_end(self, model, state, batch):
            seen.append(("batch", dict(batch)))

        def on_epoch_end(self, model, state, record):
            seen.append(("end", record))

    history = fit(model, CrossEntropyLoss(), SGD(model, lr=0.1), (X, y), epochs=2,
                  batch_size=64, check_every=check_every, progress=False,
                  callbacks=[Watch(), Callback()])  # fmt: skip
    assert [e for e in seen if e[0] == "begin"] == [
        ("begin", {"epoch": 1, "epochs": 2, "steps": 5}, 0),
        ("begin", {"epoch": 2, "epochs": 2, "steps": 5}, 1),
    ]
    batches = [e[1] for e in seen if e[0] == "batch"]
    assert [b["step"] for b in batches] == [1, 2, 3, 4, 5] * 2
    for k, b in enumerate(batches[:5], 1):  # read back at steps check_every, 2 check_every..
        assert ("loss" in b) == (k >= check_every) and ("accuracy" in b) == ("loss" in b)
    ends = [k for k, e in enumerate(seen) if e[0] == "end"]
    last = seen[ends[0] - 1][1]
    if check_every == 1:  # every step read: the last running means are the epoch's
        assert last["loss"] == pytest.approx(history[0]["loss"], rel=1e-12)
        assert last["accuracy"] == pytest.approx(history[0]["accuracy"], rel=1e-12)


def test_progress_is_a_callback_of_ones_own(monkeypatch, capsys):
    """progress=True adds a ProgressBar in front unless the callbacks hold one; a bar of
    one's own replaces it; refresh must be positive."""
    opened = []
    monkeypatch.setattr(
        ProgressBar,
        "on_epoch_begin",
        lambda self, *a: opened.append(self) or ProgressBar._close(self),
    )
    monkeypatch.setattr(ProgressBar, "on_batch_end", lambda self, *a: None)
    data = load_digits()
    model = MLP([64, 16, 10], seed=0)
    args = (model, CrossEntropyLoss(), SGD(model), (data.X_train[:128], data.y_train[:128]))
    fit(*args, epochs=2, batch_size=64, progress=True)
    assert len(opened) == 2 and opened[0] is opened[1]
    mine = ProgressBar(refresh=3)
    fit(*args, epochs=2, batch_size=64, progress=True, callbacks=[mine])
    assert opened[2:] == [mine, mine]
    fit(*args, epochs=1, batch_size=64, progress=False)
    assert len(opened) == 4
    with pytest.raises(ValueError, match=r"^ProgressBar: refresh must be positive, got 0"):
        ProgressBar(refresh=0)
