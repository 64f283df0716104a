"""The training loop: history, progress, validation and early stopping."""

from __future__ import annotations

import types
from typing import ClassVar

import numpy as np
import pytest

from xpnet import backend
from xpnet.callbacks import Callback, EarlyStopping, LambdaCallback, ProgressBar
from xpnet.data import load_digits
from xpnet.errors import XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, Module, MSELoss
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


class _Bar:
    """A stand-in for tqdm that keeps what the progress bar asked of it."""

    made: ClassVar[list] = []

    def __init__(self, **kwargs):
        self.kwargs, self.steps, self.shown, self.closed = kwargs, 0, [], 0
        _Bar.made.append(self)

    def update(self, n):
        self.steps += n

    def set_postfix(self, shown):
        self.shown.append((self.steps, shown))

    def close(self):
        self.closed += 1


@pytest.mark.parametrize(
    ("refresh", "check_every", "loss", "shown_at"),
    [
        (3, 1, CrossEntropyLoss, [3, 6, 9]),  # every refresh steps once the losses are known
        (3, 4, CrossEntropyLoss, [4, 7, 10]),  # known from step 4 on; refresh steps apart
        (None, 1, CrossEntropyLoss, [10]),  # 10 by default
        (3, 1, MSELoss, [3, 6, 9]),  # no accuracy for float targets
    ],
)  # fmt: skip
def test_progress_bar_counts_steps_and_shows_the_running_means(
    monkeypatch, refresh, check_every, loss, shown_at
):
    """One transient bar per epoch on stderr counting its steps, showing the running loss
    (and accuracy, for class labels) as last read back, every ``refresh`` steps."""
    import sys

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    monkeypatch.setattr(_Bar, "made", [])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((160, 4))
    y = rng.integers(0, 3, 160) if loss is CrossEntropyLoss else rng.standard_normal((160, 3))
    model = MLP([4, 8, 3], seed=0)
    batches = []

    class Watch(Callback):
        def on_batch_end(self, model, state, batch):
            batches.append(dict(batch))

    bar = ProgressBar() if refresh is None else ProgressBar(refresh=refresh)
    fit(model, loss(), SGD(model, lr=0.1), (X, y), epochs=2, batch_size=16,
        check_every=check_every, callbacks=[bar, Watch()])  # fmt: skip
    assert len(_Bar.made) == 2
    for epoch, made in enumerate(_Bar.made, 1):
        expected = dict(total=10, desc=f"epoch {epoch}/2", leave=False, unit="batch",
                        file=sys.stderr, dynamic_ncols=True)  # fmt: skip
        assert made.kwargs == expected
        assert made.steps == 10 and made.closed == 1
        assert [at for at, _ in made.shown] == shown_at
        for at, shown in made.shown:
            known = batches[(epoch - 1) * 10 + at - 1]
            want = {"loss": f"{known['loss']:.4f}"}
            if loss is CrossEntropyLoss:
                want["acc"] = f"{known['accuracy']:.4f}"
            assert shown == want


def test_early_stopping_counts_a_tie_as_no_progress():
    """Only a lower val_loss is progress: the best epoch stays the first of equals."""
    model = MLP([4, 8, 3], seed=0)
    state, stop = FitState(), EarlyStopping(2)
    stop.on_epoch_end(model, state, {"epoch": 1, "val_loss": 0.5})
    first = state.best_state
    for epoch, waited in ((2, 1), (3, 2)):
        stop.on_epoch_end(model, state, {"epoch": epoch, "val_loss": 0.5})
        assert (state.best_epoch, state.waited) == (1, waited)
        assert state.best_state is first
    assert state.stopped_early


def test_lambda_callback_passes_its_hooks_what_fit_passes():
    calls = []

    class Record(Callback):
        def on_epoch_end(self, model, state, record):
            calls.append(("record", model, state, record))

        def on_fit_end(self, model, state):
            calls.append(("record end", model, state))

    hooks = LambdaCallback(
        on_epoch_end=lambda *args: calls.append(("lambda", *args)),
        on_fit_end=lambda *args: calls.append(("lambda end", *args)),
    )
    model = MLP([4, 8, 3], seed=0)
    X, y = np.ones((8, 4)), np.arange(8) % 3
    fit(model, CrossEntropyLoss(), SGD(model), (X, y), epochs=2, batch_size=4,
        callbacks=[Record(), hooks, LambdaCallback()])  # fmt: skip
    kinds = [c[0] for c in calls]
    assert kinds == ["record", "lambda"] * 2 + ["record end", "lambda end"]
    for mine, theirs in zip(calls[::2], calls[1::2], strict=True):  # the same objects
        assert all(a is b for a, b in zip(mine[1:], theirs[1:], strict=True))


class _OwnLoss(Module):
    """A loss of one's own: CrossEntropyLoss's numbers through its checked forward only."""

    def __init__(self):
        self.inner, self.forwards = CrossEntropyLoss(), 0

    def forward(self, A, Y):
        self.forwards += 1
        return self.inner.forward(A, Y)

    def backward(self):
        return self.inner.backward()


@pytest.mark.parametrize("kind", ["module", "object"])
def test_a_loss_of_one_s_own_trains_through_its_forward(kind):
    """A loss written as a Module (which has a layer's forward_unchecked) or as any object
    with forward and backward: fit calls its forward every step and trains as xpnet's
    own loss does."""
    loss = _OwnLoss() if kind == "module" else types.SimpleNamespace()
    if kind == "object":
        inner = _OwnLoss()
        loss.forward, loss.backward = inner.forward, inner.backward
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
    results = []
    for each in (CrossEntropyLoss(), loss):
        model = MLP([4, 8, 3], seed=0)
        history = fit(model, each, SGD(model, lr=0.1), (X, y), epochs=2, batch_size=8)
        results.append(([backend.to_numpy(p.value) for _, p in model.named_parameters()],
                        [r["loss"] for r in history]))  # fmt: skip
    (want, want_losses), (got, got_losses) = results
    assert (loss if kind == "module" else inner).forwards == 10
    assert got_losses == want_losses
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_step_s_backward_scales_and_gives_the_input_gradient_when_asked(xp, device):
    """backward() sets the gradients and returns nothing (training needs no dLdX);
    backward(scale) scales the loss's gradient; input_grad=True returns dLdX as the
    model's own backward does."""
    rng = np.random.default_rng(0)
    X = backend.convert(rng.standard_normal((6, 4)), xp, device=device)
    y = backend.convert(rng.integers(0, 3, 6), xp, device=device)
    model = MLP([4, 8, 3], dtype="float64", xp=xp, device=device, seed=0)
    loss = CrossEntropyLoss()
    loss.forward(model.forward(X), y)
    dLdX = backend.to_numpy(model.backward(loss.backward()))
    grads = [backend.to_numpy(p.grad).copy() for _, p in model.named_parameters()]
    step = Step(model, loss, SGD(model))
    for scale, asked in ((None, False), (0.5, False), (None, True)):
        step.forward(X, y)
        got = step.backward(scale, input_grad=asked) if asked else step.backward(scale)
        assert (got is None) != asked
        if asked:
            np.testing.assert_allclose(backend.to_numpy(got), dLdX, rtol=1e-12)
        factor = 1.0 if scale is None else scale
        for g, (_, p) in zip(grads, model.named_parameters(), strict=True):
            np.testing.assert_allclose(backend.to_numpy(p.grad), factor * g, rtol=1e-12)
