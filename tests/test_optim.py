"""SGD: the three update paths (assignment, in-place per parameter, flat arrays) compute
the same numbers bit for bit, and each is the one taken when its capability says so."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, strict_devices, to_numpy
from xpnet import backend
from xpnet.errors import XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD, Adam, sgd

PATHS = {  # path -> (inplace_updates, flat_views, the method that must run)
    "assign": (False, False, "_update_assign"),
    "inplace": (True, False, "_update_inplace"),
    "flat": (True, True, "_update_flat"),
}


def _run(xp, device, path, monkeypatch, **options):
    inplace, flat, method = PATHS[path]
    calls = []
    with monkeypatch.context() as m:
        m.setattr(backend, "inplace_updates", lambda _xp: inplace)
        m.setattr(backend, "flat_views", lambda _xp: flat)
        real = getattr(SGD, method)

        def spy(self, *args):
            calls.append(method)
            return real(self, *args)

        m.setattr(SGD, method, spy)
        model = MLP([5, 7, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=2)
        opt = SGD(model, **options)
        loss = CrossEntropyLoss()
        rng = np.random.default_rng(0)
        for step in range(5):
            X = asarray(xp, device, rng.standard_normal((8, 5)))
            y = asarray(xp, device, rng.integers(0, 3, 8), "int64")
            loss.forward(model.forward(X), y)
            model.backward(loss.backward())
            opt.step()
            if step == 2:  # a parameter replaced from outside must be picked up
                model.layers[0].W = model.layers[0].W * 1.0
        assert calls and set(calls) == {method}
        return {k: backend.to_numpy(v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("path", ["inplace", "flat"])
@pytest.mark.parametrize(
    "options",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-2},
        {"lr": 0.05, "weight_decay": 1e-2},
    ],
    ids=["plain", "momentum", "nesterov+wd", "wd"],
)
def test_fast_paths_equal_the_assignment_path(xp, device, monkeypatch, path, options):
    inplace, flat, _ = PATHS[path]
    if (inplace and not backend.inplace_updates(xp)) or (flat and not backend.flat_views(xp)):
        pytest.skip(f"{backend.library_name(xp)}'s arrays cannot take the {path} path")
    fast = _run(xp, device, path, monkeypatch, **options)
    generic = _run(xp, device, "assign", monkeypatch, **options)
    for key in generic:
        np.testing.assert_array_equal(fast[key], generic[key], err_msg=key)


def test_the_flat_path_takes_models_of_at_most_flat_limit_values():
    """MLP([255, 256]) holds 256 * 256 = FLAT_LIMIT values, MLP([65536, 1]) one more."""
    for sizes, flat in (([255, 256], True), ([sgd.FLAT_LIMIT, 1], False)):
        model = MLP(sizes)
        n = sum(int(np.prod(p.shape)) for p in model.parameters())
        assert n - sgd.FLAT_LIMIT == (0 if flat else 1)
        assert (SGD(model, momentum=0.9)._flat is not None) is flat


def test_sgd_defaults_are_the_handouts():
    """``SGD(model)`` is the handout's ``SGD(model, lr=0.1, momentum=0)``, without weight
    decay or Nesterov momentum."""
    opt = SGD(MLP([2, 3]))
    assert (opt.lr, opt.mu, opt.weight_decay, opt.nesterov) == (0.1, 0.0, 0.0, False)


def test_path_choice():
    xp = backend.get("numpy")
    assert backend.inplace_updates(xp) and backend.flat_views(xp)
    small = MLP([4, 8, 2])
    big = MLP([300, 300, 2])
    assert sum(int(np.prod(p.shape)) for p in big.parameters()) > sgd.FLAT_LIMIT
    for model, flat in ((small, True), (big, False)):
        opt = SGD(model, lr=0.1, momentum=0.9)
        loss = CrossEntropyLoss()
        loss.forward(model.forward(np.ones((4, model.sizes[0]), np.float32)), np.arange(4) % 2)
        model.backward(loss.backward())
        opt.step()
        assert (opt._flat is not None) is flat


def test_flat_buffers_hold_the_parameters_as_views(xp, device):
    """flat_buffers moves a model above FLAT_LIMIT into two flat arrays whose slices are the
    model's parameters and velocities; a parameter replaced since is copied back in; a
    library without views refuses by name."""
    model = MLP([300, 300, 2], xp=xp, device=device, seed=1)
    opt = SGD(model, lr=0.1, momentum=0.9)
    if not backend.flat_views(xp):
        with pytest.raises(
            XpnetValueError, match=r"SGD\.flat_buffers\(\): \w+'s arrays have no views"
        ):
            opt.flat_buffers()
        return
    before = {k: to_numpy(v) for k, v in model.state_dict().items()}
    P, V = opt.flat_buffers()
    n = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert P.shape == V.shape == (n,)
    assert {k: to_numpy(v) for k, v in model.state_dict().items()}.keys() == before.keys()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), before[key], err_msg=key)
    P[...] = 0.0  # the parameters are views of P, and the velocities of V
    V[...] = 1.0
    assert float(xp.max(xp.abs(model.layers[1].W))) == 0.0
    assert float(xp.min(opt.velocity["layers.1.b"])) == 1.0
    assert opt.flat_buffers()[0] is P  # unchanged: the same arrays
    model.layers[0].W = xp.ones_like(model.layers[0].W)  # replaced: copied back in
    P2, _ = opt.flat_buffers()
    assert P2 is not P and float(xp.sum(P2)) == 300.0 * 300.0


def test_flat_buffers_refuses_a_library_without_views_in_every_session():
    """The refusal above, in the NumPy session too (where the mutation runs happen, and
    where NumPy's own arrays have views), as its whole message."""
    model = MLP([3, 2], xp="array_api_strict")
    with pytest.raises(XpnetValueError) as info:
        SGD(model, lr=0.1, momentum=0.9).flat_buffers()
    assert str(info.value) == "SGD.flat_buffers(): array_api_strict's arrays have no views"


def test_load_state_dict_reads_the_old_buffer_names_and_ignores_other_keys():
    """xpnet 0.1 named momentum buffers v_W.0, v_b.0, ...; they load as layers.0.W, ...
    Keys of no buffer, with or without an index (another optimizer's step.0), are ignored
    rather than misread."""
    model = MLP([3, 4, 2], batchnorm=True, seed=0)
    source = SGD(model, lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    state = {
        k: rng.standard_normal(tuple(v.shape)).astype(np.float32)
        for k, v in source.state_dict().items()
    }
    old = {}
    for key, value in state.items():
        _, index, attr = key.split(".")
        old[f"v_{attr}.{index}"] = value  # layers.0.W -> v_W.0, bn_layers.0.BW -> v_BW.0
    old["step.0"] = np.zeros(1, dtype=np.float32)
    old["note"] = np.zeros(1, dtype=np.float32)
    target = SGD(model, lr=0.1, momentum=0.9).load_state_dict(old)
    for key, value in target.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), state[key], err_msg=key)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_loaded_state_lands_where_the_parameters_are(kind):
    """Buffers loaded from NumPy arrays go to the parameters' library, device and dtype,
    and the next step runs there."""
    strict, _, other = strict_devices()
    make = {"sgd": lambda m: SGD(m, lr=0.1, momentum=0.9), "adam": lambda m: Adam(m)}[kind]
    source = MLP([3, 4, 2], seed=0)
    loss = CrossEntropyLoss()
    loss.forward(source.forward(np.eye(3, dtype=np.float32)), np.array([0, 1, 1]))
    source.backward(loss.backward())
    first = make(source)
    first.step()
    state = {k: to_numpy(v) for k, v in first.state_dict().items()}

    model = MLP([3, 4, 2], seed=0).to(strict, device=other)
    opt = make(model).load_state_dict(state)
    buffers = [v for k, v in opt.state_dict().items() if k != "step"]
    assert buffers and all(
        backend.namespace(v) is backend.namespace(model.layers[0].W)
        and backend.device(v) == other
        and v.dtype == strict.float32
        for v in buffers
    )
    X = strict.asarray(np.eye(3, dtype=np.float32), device=other)
    loss.forward(model.forward(X), strict.asarray(np.array([0, 1, 1]), device=other))
    model.backward(loss.backward())
    opt.step()
