"""The compiled step (JAX): the readable step traced into one program computes the eager
step's numbers, compiles again exactly when what it read changes, and refuses what it
cannot hold. Runs where the library has a compiler (``nox -s "tests(backend='jax')"``)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray
from xpnet import backend
from xpnet.compiled import compile_refusal, compiled_step
from xpnet.data import load_digits
from xpnet.errors import XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, ReLU
from xpnet.optim import SGD, Adam, AdamW
from xpnet.optim.lr_scheduler import StepLR
from xpnet.step import Step
from xpnet.train import fit

OPTIMIZERS = {
    "sgd": lambda m: SGD(m, lr=0.1),
    "momentum": lambda m: SGD(m, lr=0.1, momentum=0.9),
    "nesterov+wd": lambda m: SGD(m, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
    "adam": lambda m: Adam(m, lr=1e-2),
    "adamw-amsgrad": lambda m: AdamW(m, lr=1e-2, weight_decay=0.1, amsgrad=True),
}


@pytest.fixture
def compiling(xp):
    if backend.compiler(xp) is None:
        pytest.skip(f"{backend.library_name(xp)} has no compiler of whole steps")
    return xp


def _batches(steps=20, rows=32, features=6, classes=4):
    rng = np.random.default_rng(0)
    return rng.standard_normal((steps, rows, features)), rng.integers(0, classes, (steps, rows))


def _train(xp, device, make_opt, *, compiled, batchnorm, dropout=0.0):
    """20 steps with a learning rate that changes at every step; everything a step
    changes, as NumPy arrays."""
    X, Y = _batches()
    model = MLP(
        [6, 16, 8, 4], batchnorm=batchnorm, dropout=dropout, xp=xp, device=device,
        dtype="float64", seed=1,
    )  # fmt: skip
    opt = make_opt(model)
    step = Step(model, CrossEntropyLoss(), opt)
    run = compiled_step(step) if compiled else None
    losses = []
    for i in range(X.shape[0]):
        opt.lr *= 0.95
        Xb, yb = asarray(xp, device, X[i]), asarray(xp, device, Y[i], "int64")
        L = run(Xb, yb)[0] if compiled else step(Xb, yb)[1]
        losses.append(float(L))
    state = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    state.update({f"grad {n}": backend.to_numpy(p.grad) for n, p in opt.params})
    for attr in opt.state_attributes:
        value = getattr(opt, attr)
        if isinstance(value, dict):
            state.update({f"{attr} {n}": backend.to_numpy(v) for n, v in value.items()})
        else:
            state[attr] = np.asarray(value)
    return losses, state, run


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_compiled_step_equals_the_eager_step(compiling, device, name, batchnorm):
    """Within 1e-12 relative over 20 float64 steps: parameters, gradients, BatchNorm's
    running statistics, the optimizer's state and the losses; one program for all 20
    (the learning rate is an argument)."""
    xp = compiling
    make = OPTIMIZERS[name]
    eager_losses, eager, _ = _train(xp, device, make, compiled=False, batchnorm=batchnorm)
    losses, state, run = _train(xp, device, make, compiled=True, batchnorm=batchnorm)
    assert run.traces == 1
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-12, atol=0)
    assert state.keys() == eager.keys()
    # The bias of a Linear followed by BatchNorm has an exact gradient of zero (BatchNorm
    # removes any shift): what is computed is rounding noise, which differs with the order
    # of additions. Its gradient, and optimizer state made of nothing else (no weight
    # decay), are held to 1e-12 of the weight gradient's scale instead of their own; Adam's
    # normalisation makes that noise a full step, so under Adam the bias and the running
    # mean it feeds are not compared. Everything else is held to 1e-12 of its own scale.
    noisy = ("layers.0.b", "layers.1.b") if batchnorm else ()
    for key, value in eager.items():
        kind, _, name_ = key.rpartition(" ")  # kind: "grad", "velocity", ... or ""
        if name_ in noisy and kind:
            scale = np.max(np.abs(eager[f"grad {name_[:-1]}W"]))
            if kind == "grad":
                assert np.max(np.abs(value)) < 1e-12 * scale, key  # noise indeed
            if np.max(np.abs(value)) < 1e-12 * scale:  # made of noise alone
                assert np.max(np.abs(state[key] - value)) <= 1e-12 * scale, key
                continue
        if name.startswith("adam") and (key in noisy or key.endswith("running_M")):
            continue
        assert _relative(state[key], value) <= 1e-12, key


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_dropout_masks_are_drawn_on_the_host_and_passed_in(compiling, device, batchnorm):
    """New masks at every step, the eager step's with the same seeds: 20 steps to 1e-12,
    from one program."""
    xp = compiling
    make = OPTIMIZERS["momentum"]
    eager_losses, eager, _ = _train(
        xp, device, make, compiled=False, batchnorm=batchnorm, dropout=0.3
    )
    losses, state, run = _train(xp, device, make, compiled=True, batchnorm=batchnorm, dropout=0.3)
    plain_losses, _, _ = _train(xp, device, make, compiled=False, batchnorm=batchnorm)
    assert run.traces == 1
    assert not np.allclose(eager_losses, plain_losses)  # the masks did something
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-12, atol=0)
    for key in ("layers.0.W", "layers.1.W", "layers.2.W"):
        assert _relative(state[key], eager[key]) <= 1e-12, key


def test_a_change_the_trace_read_compiles_again_and_nothing_else_does(compiling, device):
    xp = compiling
    X, Y = _batches(steps=1, rows=40)
    model = MLP([6, 16, 8, 4], batchnorm=True, xp=xp, device=device, dtype="float64", seed=1)
    opt = SGD(model, lr=0.1, momentum=0.9)
    run = compiled_step(Step(model, CrossEntropyLoss(), opt))

    def step(rows=32):
        run(asarray(xp, device, X[0, :rows]), asarray(xp, device, Y[0, :rows], "int64"))

    step()
    step()
    opt.lr = 0.01
    step()
    assert run.traces == 1
    step(rows=40)  # a new batch shape
    assert run.traces == 2
    opt.mu = 0.5  # a hyperparameter the trace read as a constant
    step()
    assert run.traces == 3
    model.f[0] = ReLU()  # a module replaced
    step()
    assert run.traces == 4
    model.bn_layers[0].eval()  # a mode the trace read
    step()
    assert run.traces == 5
    for _, m in model.named_modules():  # no placeholder of a trace is left on the model
        assert all(getattr(m, c) is None for c in m.declared_caches), m


def test_fit_compiled_equals_fit_eager(compiling, device):
    """Two epochs of the digits with a schedule halving the learning rate each epoch and
    a last partial batch: the same history and parameters to 1e-12."""
    xp = compiling
    data = load_digits()
    results = []
    for compile_ in (False, True):
        model = MLP([64, 32, 10], xp=xp, device=device, dtype="float64", seed=0)
        opt = SGD(model, lr=0.05, momentum=0.9)
        history = fit(
            model, CrossEntropyLoss(), opt, (data.X_train / 16, data.y_train), epochs=2,
            batch_size=50, scheduler=StepLR(opt, step_size=1, gamma=0.5), compile=compile_,
        )  # fmt: skip
        results.append((history, {k: backend.to_numpy(v) for k, v in model.state_dict().items()}))
    (eager, eager_state), (compiled, state) = results
    for a, b in zip(compiled, eager, strict=True):
        assert a["lr"] == b["lr"] and a["accuracy"] == b["accuracy"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    for key, value in eager_state.items():
        assert _relative(state[key], value) <= 1e-12, key


def test_what_cannot_be_compiled_is_refused(xp, device):
    assert compile_refusal() is None
    assert "sums gradients between processes" in compile_refusal(data_parallel=True)
    data = load_digits()
    train = (data.X_train, data.y_train)
    model = MLP([64, 16, 10], xp=xp, device=device)
    with pytest.raises(XpnetValueError, match="choose one"):
        fit(model, CrossEntropyLoss(), SGD(model), train, epochs=1, batch_size=32,
            cuda_graph=True, compile=True)  # fmt: skip
    if backend.compiler(xp) is None:
        with pytest.raises(XpnetValueError, match="has no compiler of whole functions"):
            fit(model, CrossEntropyLoss(), SGD(model), train, epochs=1, batch_size=32,
                compile=True)  # fmt: skip
