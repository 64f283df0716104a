"""Training steps as CUDA graphs: the same numbers as eager steps.

On CuPy (the GPU check) ``fit(cuda_graph=True)`` is compared bit for bit with the eager
``fit``. Everywhere, the graph runner's bookkeeping runs against a stand-in of CuPy's
capture interface, and ``fit``'s graph branch (losses copied out of the graph, accuracy,
the checks every few steps, the last partial batch) against a runner that replays by
running the step again.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import xpnet
from tests.helpers import to_numpy
from xpnet import backend
from xpnet.data import load_digits
from xpnet.errors import TrainingDiverged, XpnetValueError
from xpnet.executors import make_step
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, Linear, MSELoss
from xpnet.optim import SGD, Adam
from xpnet.optim.lr_scheduler import StepLR
from xpnet.step import Step, cuda_graph_refusal, graph_step
from xpnet.train import fit


def _fit(xp, device, *, batchnorm, cuda_graph, epochs=3, batch_size=50, scheduler=False, **kw):
    data = load_digits()
    model = MLP([64, 32, 16, 10], batchnorm=batchnorm, xp=xp, device=device, seed=3)
    opt = SGD(model, lr=0.05, momentum=0.9)
    sched = StepLR(opt, step_size=1, gamma=0.5) if scheduler else None
    history = fit(
        model, CrossEntropyLoss(), opt, (data.X_train, data.y_train), epochs=epochs,
        batch_size=batch_size, seed=1, scheduler=sched, cuda_graph=cuda_graph, **kw,
    )  # fmt: skip
    return model, history


class _Replay:
    """A runner that 'replays' by running the step again: fit's graph branch, no GPU.
    Like a graph, it returns the same output arrays every time, overwritten."""

    def __init__(self, step, like):
        self.step, self.calls, self.outputs = step, 0, None

    def __call__(self, X, y, *, key=None):
        self.calls += 1
        out = self.step(X, y)
        if self.outputs is None:
            self.outputs = tuple(backend.namespace(o).asarray(o, copy=True) for o in out)
        elif not backend.inplace_updates(backend.namespace(out[0])):
            self.outputs = tuple(out)  # immutable arrays (JAX): fit's branch runs all the same
        else:
            for mine, new in zip(self.outputs, out, strict=True):
                mine[...] = new
        return self.outputs


@pytest.mark.parametrize("batchnorm", [False, True])
def test_fit_with_cuda_graph_equals_eager(xp, device, monkeypatch, batchnorm):
    """1347 rows in batches of 50: a last partial batch of 47 (without BatchNorm), and a
    learning rate halved every epoch (a new graph each epoch on a GPU)."""
    eager_model, eager = _fit(xp, device, batchnorm=batchnorm, cuda_graph=False, scheduler=True)
    runners = []
    if backend.library_name(xp) != "cupy":

        def replay(step, like):
            runners.append(_Replay(step, like))
            return runners[-1]

        monkeypatch.setattr(xpnet.backend, "cuda_graph_step", replay)
    else:
        real = backend.cuda_graph_step
        monkeypatch.setattr(
            xpnet.backend, "cuda_graph_step", lambda s, l: runners.append(real(s, l)) or runners[-1]
        )
    model, graphed = _fit(xp, device, batchnorm=batchnorm, cuda_graph=True, scheduler=True)
    assert [r["loss"] for r in graphed] == [r["loss"] for r in eager]
    assert [r["accuracy"] for r in graphed] == [r["accuracy"] for r in eager]
    for (key, value), (_, other) in zip(
        model.state_dict().items(), eager_model.state_dict().items(), strict=True
    ):
        np.testing.assert_array_equal(to_numpy(value), to_numpy(other), err_msg=key)
    (runner,) = runners
    steps = 3 * (1347 // 50 if batchnorm else -(-1347 // 50))
    if isinstance(runner, _Replay):
        assert runner.calls == steps
    else:  # per shape: eager once, then one capture per learning rate (3 epochs)
        shapes = 1 if batchnorm else 2
        assert runner.eager == shapes and runner.eager + runner.replays == steps
        assert runner.captures == 3 * shapes - (0 if batchnorm else 1)


def test_a_nan_step_stops_a_graphed_run(xp, device, monkeypatch):
    if backend.library_name(xp) != "cupy":
        monkeypatch.setattr(xpnet.backend, "cuda_graph_step", _Replay)
    data = load_digits()
    X = data.X_train.copy()
    X[40] = np.nan
    model = MLP([64, 16, 10], xp=xp, device=device, dtype="float64", seed=0)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step \d+") as info:
        fit(
            model, CrossEntropyLoss(), SGD(model, lr=0.05), (X, data.y_train), epochs=2,
            batch_size=32, cuda_graph=True, check_every=5,
        )  # fmt: skip
    rows = np.random.default_rng(0).permutation(X.shape[0])
    assert 40 in rows[(info.value.step - 1) * 32 : info.value.step * 32]


def test_what_a_graph_cannot_capture_is_refused(xp, device):
    data = load_digits()
    model = MLP([64, 16, 10], xp=xp, device=device)
    train = (data.X_train, data.y_train)
    cupy = backend.library_name(xp) == "cupy"
    cases = [(Adam(model), "Adam changes its step size every step")]
    if not cupy:
        cases.append((SGD(model), "not CuPy's"))
    for opt, why in cases:
        with pytest.raises(XpnetValueError, match=why):
            fit(model, CrossEntropyLoss(), opt, train, epochs=1, batch_size=32, cuda_graph=True)
    dropping = MLP([64, 16, 10], xp=xp, device=device, dropout=0.2)
    if cupy:
        with pytest.raises(XpnetValueError, match="dropout draws its masks"):
            fit(dropping, CrossEntropyLoss(), SGD(dropping), train, epochs=1, batch_size=32,
                cuda_graph=True)  # fmt: skip


def test_the_refusals_are_decided_in_one_place():
    """cuda_graph_refusal names each reason in full, the first that applies, and lets a
    step through only with SGD-like optimizers, no dropout, one process and CuPy (or a
    library left to the recorder)."""

    class Plain:  # an optimizer that does not say its update is the same every step
        pass

    host = "the model's arrays are {}'s, not CuPy's (CUDA graphs need backend 'cupy')"
    cases = [
        ({"library": "cupy", "optimizer": SGD}, None),
        ({"library": None, "optimizer": SGD}, None),
        ({"library": "cupy", "optimizer": SGD, "dropout": 0.0}, None),
        ({"library": "cupy", "optimizer": SGD, "dropout": 1e-9},
         "dropout draws its masks on the host every step"),
        ({"library": "cupy", "optimizer": Adam, "dropout": 0.5, "data_parallel": True},
         "data-parallel runs sum gradients outside the step"),
        ({"library": "cupy", "optimizer": Adam, "dropout": 0.5},
         "dropout draws its masks on the host every step"),
        ({"library": "cupy", "optimizer": Adam},
         "Adam changes its step size every step (bias correction)"),
        ({"library": "cupy", "optimizer": Plain},
         "Plain changes its step size every step (bias correction)"),
        ({"library": "numpy", "optimizer": SGD}, host.format("numpy")),
        ({"library": "torch", "optimizer": SGD}, host.format("torch")),
    ]  # fmt: skip
    for kwargs, want in cases:
        assert cuda_graph_refusal(**kwargs) == want, kwargs


def test_graph_step_records_the_step_or_says_why_not(xp, device, monkeypatch):
    """graph_step hands the step and the model's first weight to the recorder; refuses
    dropout and data-parallel runs before asking it, and a library without CUDA graphs
    after, in whole messages."""
    model = MLP([64, 10], xp=xp, device=device, seed=0)  # one layer
    step = make_step(model, CrossEntropyLoss(), SGD(model))
    prefix = "fit: cuda_graph=True is not possible here: "
    if backend.library_name(xp) != "cupy":
        with pytest.raises(XpnetValueError) as info:
            graph_step(step)
        name = backend.library_name(xp)
        assert str(info.value) == prefix + (
            f"the model's arrays are {name}'s, not CuPy's (CUDA graphs need backend 'cupy')"
        )
    asked = []
    monkeypatch.setattr(xpnet.backend, "cuda_graph_step", lambda s, like: asked.append(like) or s)
    assert graph_step(step) is not None and asked == [model.layers[0].W]
    with pytest.raises(XpnetValueError) as info:
        graph_step(step, data_parallel=True)
    assert str(info.value) == prefix + "data-parallel runs sum gradients outside the step"
    dropping = MLP([64, 16, 10], xp=xp, device=device, dropout=0.1)
    with pytest.raises(XpnetValueError) as info:
        graph_step(make_step(dropping, CrossEntropyLoss(), SGD(dropping)))
    assert str(info.value) == prefix + "dropout draws its masks on the host every step"
    assert len(asked) == 1
    # a model of one's own without dropout layers at all (only layers and xp are read)
    layer = Linear(4, 3, xp=xp, device=device)
    own = types.SimpleNamespace(layers=[layer], xp=xp)
    assert graph_step(Step(own, CrossEntropyLoss(), SGD(layer.named_parameters()))) is not None
    assert asked[1] is layer.W


def test_a_graphed_regression_equals_eager(xp, device, monkeypatch):
    """(N, K) float targets through fit's graph branch: the recorded step returns the loss
    alone (no count of right predictions), and the run equals the eager one."""
    if backend.library_name(xp) != "cupy":
        monkeypatch.setattr(xpnet.backend, "cuda_graph_step", _Replay)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((90, 5))
    T = X @ rng.standard_normal((5, 3))
    runs = []
    for graphed in (False, True):
        model = MLP([5, 8, 3], xp=xp, device=device, dtype="float64", seed=4)
        history = fit(model, MSELoss(), SGD(model, lr=0.05), (X, T), epochs=2, batch_size=32,
                      cuda_graph=graphed)  # fmt: skip
        assert "accuracy" not in history[0]
        runs.append(([r["loss"] for r in history], model.state_dict()))
    assert runs[1][0] == runs[0][0]
    for key, value in runs[0][1].items():
        np.testing.assert_array_equal(to_numpy(runs[1][1][key]), to_numpy(value), err_msg=key)


# -- the runner's bookkeeping against a stand-in of CuPy's capture interface ---------------
class _Graph:
    def __init__(self, replay):
        self.replay = replay

    def launch(self, stream=None):
        self.replay()


class _Stream:
    capturing = None  # the stream in capture, if any

    def __init__(self, non_blocking=False):
        self.ptr = id(self)

    def record(self):
        return object()

    def wait_event(self, event):
        pass

    def begin_capture(self):
        _Stream.capturing, self.recorded = self, []

    def end_capture(self):
        _Stream.capturing = None
        recorded = self.recorded
        return _Graph(lambda: [work() for work in recorded])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Pool:
    def __init__(self):
        self.allocated = 0

    def malloc(self, size):
        self.allocated += size
        return size


def _stand_in():
    pool = _Pool()
    cuda = types.SimpleNamespace(
        Stream=_Stream,
        get_current_stream=lambda: _Stream(),
        using_allocator=lambda allocator: _Allocating(allocator),
    )
    return types.SimpleNamespace(
        cuda=cuda,
        empty=np.empty,
        copyto=np.copyto,
        get_default_memory_pool=lambda: pool,
        pool=pool,
    )


class _Allocating:
    current = None

    def __init__(self, allocator):
        self.allocator = allocator

    def __enter__(self):
        _Allocating.current = self.allocator

    def __exit__(self, *exc):
        _Allocating.current = None
        return False


class _Device:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_runner_captures_once_per_shape_and_key(monkeypatch):
    fake = _stand_in()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    total = np.zeros(1)
    log = []

    def step(X, y):
        """Adds the batch's sum to ``total``: now (eager) or at each replay (captured)."""

        def work():
            total[0] += X.sum() + y.sum()

        if _Stream.capturing is not None:
            _Allocating.current(64)  # what an array of the step would allocate
            _Stream.capturing.recorded.append(work)
            log.append("capture")
        else:
            work()
            log.append("eager")
        return (total,)

    like = types.SimpleNamespace(device=_Device())
    run = backend.CudaGraphStep(step, like)
    rng = np.random.default_rng(0)
    expected = 0.0
    for shape, key in [(8, 1), (8, 1), (8, 1), (3, 1), (3, 1), (8, 2), (8, 2), (3, 2)]:
        X, y = rng.standard_normal((shape, 4)), rng.integers(0, 5, shape)
        (out,) = run(X, y, key=key)
        expected += X.sum() + y.sum()
        np.testing.assert_allclose(out, [expected])  # each batch counted once, its own
    assert log == ["eager", "capture", "eager", "capture", "capture", "capture"]
    assert (run.eager, run.captures, run.replays) == (2, 4, 6)
    assert fake.pool.allocated == 4 * 64  # kept: one allocation per capture
