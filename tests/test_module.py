"""Module bookkeeping: parameters, state dicts, modes, dtype casting and ``to()``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close, strict_devices
from xpnet import backend
from xpnet.backend import to_numpy
from xpnet.models import MLP, MLP0, MLP1, MLP4
from xpnet.nn import BatchNorm1d, CrossEntropyLoss, Linear, ReLU
from xpnet.optim import SGD


def test_state_dict_keys_and_parameters(xp, device):
    model = MLP([4, 6, 5, 3], batchnorm=True, xp=xp, device=device)
    keys = list(model.state_dict())
    assert keys == [
        "layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b", "layers.2.W", "layers.2.b",
        "bn_layers.0.BW", "bn_layers.0.Bb", "bn_layers.0.running_M", "bn_layers.0.running_V",
        "bn_layers.1.BW", "bn_layers.1.Bb", "bn_layers.1.running_M", "bn_layers.1.running_V",
    ]  # fmt: skip
    params = model.parameters()
    assert len(params) == 6 + 4
    assert params[0] is model.layers[0].W and params[-1] is model.bn_layers[1].Bb
    assert MLP([4, 3], xp=xp, device=device).bn_layers == []


def test_load_state_dict_round_trip(xp, device):
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((5, 4)), "float32")
    source = MLP([4, 6, 3], batchnorm=True, xp=xp, device=device, seed=1)
    source.forward(X)  # moves the running statistics away from their initial values
    target = MLP([4, 6, 3], batchnorm=True, xp=xp, device=device, seed=2).eval()
    host_state = {k: to_numpy(v) for k, v in source.state_dict().items()}
    target.load_state_dict(host_state)  # NumPy arrays load into any backend
    source.eval()
    assert_close(target.forward(X), source.forward(X), xp=xp, dtype="float32", rtol=0, atol=0)
    for key, value in target.state_dict().items():
        assert backend.library_name(backend.namespace(value)) == backend.library_name(xp), key


def test_train_eval_switch_batchnorm(xp, device):
    model = MLP([3, 4, 2], batchnorm=True, xp=xp, device=device, dtype="float64")
    X = asarray(xp, device, np.arange(12.0).reshape(4, 3))
    assert model.training and all(m.training for _, m in model.named_modules())
    model.forward(X)
    after_train = to_numpy(model.bn_layers[0].running_M).copy()
    assert not np.allclose(after_train, 0)
    assert model.eval() is model
    assert not any(m.training for _, m in model.named_modules())
    model.forward(X)
    np.testing.assert_array_equal(to_numpy(model.bn_layers[0].running_M), after_train)
    model.train()
    assert model.bn_layers[0].training


def test_float_inputs_cast_to_parameter_dtype(xp, device):
    layer = Linear(2, 3, xp=xp, device=device, dtype="float64")
    out = layer.forward(xp.ones((4, 2), dtype=xp.float32, device=device))
    assert out.dtype == xp.float64
    model = MLP([2, 3], xp=xp, device=device)  # float32 by default
    assert model.dtype == xp.float32
    assert model.forward(xp.ones((4, 2), dtype=xp.float64, device=device)).dtype == xp.float32


def test_activation_keeps_dtype(xp, device):
    Z = xp.ones((2, 2), dtype=xp.float32, device=device)
    assert ReLU().forward(Z).dtype == xp.float32


@pytest.mark.parametrize("target", ["numpy", "array_api_strict", "torch"])
def test_to_moves_everything(xp, device, target):
    """Train on the backend under test, move with .to(), get the same outputs there."""
    pytest.importorskip(target)
    rng = np.random.default_rng(3)
    model = MLP([4, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=0)
    loss = CrossEntropyLoss()
    opt = SGD(model, lr=0.1, momentum=0.9)
    X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
    for _ in range(3):
        loss.forward(model.forward(asarray(xp, device, X)), asarray(xp, device, y, "int64"))
        model.backward(loss.backward())
        opt.step()
    expected = to_numpy(model.eval().forward(asarray(xp, device, X)))
    moved = model.to(target)
    assert moved is model
    txp = backend.get(target)
    for key, value in model.state_dict().items():
        assert backend.library_name(backend.namespace(value)) == target, key
    assert backend.library_name(backend.namespace(model.layers[0].dLdW)) == target
    assert model.layers[0].A is None  # caches are dropped
    with pytest.raises(RuntimeError, match="before forward"):
        model.backward(txp.ones((16, 3), dtype=txp.float64))
    out = model.forward(txp.asarray(X))
    assert_close(out, expected, xp=txp, dtype="float64", rtol=1e-12, atol=1e-14)


def test_to_changes_dtype(xp, device):
    model = MLP4(xp=xp, device=device, dtype="float64")
    model.to(xp, device=device, dtype="float32")
    assert all(p.dtype == xp.float32 for p in model.parameters())


def test_repr_names_the_architecture():
    model = MLP([2, 3, 4], batchnorm=True)
    text = repr(model)
    assert text.startswith("MLP(sizes=[2, 3, 4], activation='relu', batchnorm=True")
    assert "(layers.1): Linear(in_features=3, out_features=4)" in text
    assert "(bn_layers.0): BatchNorm1d(3, alpha=0.9, eps=1e-08)" in text
    assert repr(BatchNorm1d(5)) == "BatchNorm1d(5, alpha=0.9, eps=1e-08)"


def test_sgd_state_dict_round_trip(xp, device):
    model = MLP([3, 4, 2], batchnorm=True, xp=xp, device=device, dtype="float64")
    opt = SGD(model, lr=0.1, momentum=0.9)
    X, y = asarray(xp, device, np.eye(3)[[0, 1, 2, 0]]), asarray(xp, device, [0, 1, 1, 0], "int64")
    loss = CrossEntropyLoss()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    opt.step()
    state = {k: to_numpy(v) for k, v in opt.state_dict().items()}
    assert list(state) == [name for name, _ in model.named_parameters()]
    fresh = SGD(model, lr=0.1, momentum=0.9).load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert_close(value, state[key], xp=xp, dtype="float64", rtol=0, atol=0)
    # xpnet 0.1's keys (resume checkpoints written before) still load
    legacy = {
        "v_W.0": state["layers.0.W"],
        "v_W.1": state["layers.1.W"],
        "v_b.0": state["layers.0.b"],
        "v_b.1": state["layers.1.b"],
        "v_BW.0": state["bn_layers.0.BW"],
        "v_Bb.0": state["bn_layers.0.Bb"],
    }
    old = SGD(model, lr=0.1, momentum=0.9).load_state_dict(legacy)
    assert_close(old.v_BW[0], state["bn_layers.0.BW"], xp=xp, dtype="float64", rtol=0, atol=0)
    assert_close(old.v_W[1], state["layers.1.W"], xp=xp, dtype="float64", rtol=0, atol=0)


def test_repr_puts_each_child_on_its_own_line():
    """PyTorch's layout: the head, one indented line per child, a closing parenthesis."""
    text = repr(MLP([2, 3, 2], batchnorm=True))
    assert text.splitlines() == [
        "MLP(sizes=[2, 3, 2], activation='relu', batchnorm=True",
        "  (layers.0): Linear(in_features=2, out_features=3)",
        "  (layers.1): Linear(in_features=3, out_features=2)",
        "  (bn_layers.0): BatchNorm1d(3, alpha=0.9, eps=1e-08)",
        "  (f.0): ReLU()",
        "  (f.1): Identity()",
        ")",
    ]
    assert repr(Linear(2, 3)) == "Linear(in_features=2, out_features=3)"


def test_what_a_new_layer_has_not_written_is_named():
    """A module that declares nothing yet: each entry point says which method it lacks,
    and calling the module is calling its forward."""
    from xpnet.nn import Module, Param
    from xpnet.optim.lr_scheduler import LRScheduler
    from xpnet.optim.optimizer import Optimizer

    class Sketch(Module):
        pass

    layer = Sketch()
    for call, method in [
        (lambda: layer(1.0), "forward"),
        (lambda: layer.forward(1.0), "forward"),
        (lambda: layer.backward(1.0), "backward"),
        (lambda: layer.forward_unchecked(1.0, np), "forward_unchecked"),
        (lambda: layer.backward_unchecked(1.0, np), "backward_unchecked"),
    ]:
        with pytest.raises(NotImplementedError, match=rf"^Sketch does not define {method}$"):
            call()

    class Still(Optimizer):
        pass

    model = MLP([2, 3, 2])
    with pytest.raises(NotImplementedError, match=r"^Still does not define step$"):
        Still(model, lr=0.1).step()

    class Flat(LRScheduler):
        pass

    with pytest.raises(NotImplementedError, match=r"^Flat does not define get_lr$"):
        Flat(SGD(model))
    assert repr(Param(model.layers[0], "W", "dLdW")) == "Param(Linear.W, grad in .dLdW)"


def test_repr_names_dropout_and_input_scaling():
    text = repr(MLP([2, 3, 2], dropout=0.5, standardize=True)).splitlines()[0]
    assert text == (
        "MLP(sizes=[2, 3, 2], activation='relu', batchnorm=False, dropout=0.5, standardize=True"
    )


@pytest.mark.parametrize("cls", [MLP, MLP0, MLP1, MLP4])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("standardize", [False, True])
def test_state_shapes_are_the_models_without_building_it(cls, batchnorm, standardize):
    """What a checkpoint compares a file's arrays with before allocating: the keys, order
    and shapes of the state_dict of the model those flags build (the handout's models
    ignore the sizes given, and activate, so normalise, their last layer too)."""
    sizes = [5, 7, 3] if cls is MLP else None
    model = (cls(sizes, batchnorm=batchnorm, standardize=standardize) if cls is MLP
             else cls(batchnorm=batchnorm, standardize=standardize))  # fmt: skip
    want = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert (
        list(cls.state_shapes(sizes, batchnorm=batchnorm, standardize=standardize).items()) == want
    )
    if not batchnorm and not standardize:  # the defaults are the constructor's
        assert list(cls.state_shapes(sizes).items()) == want
    if cls is not MLP:
        assert cls.state_shapes([9, 9]) == cls.state_shapes(None, batchnorm=False)


def test_a_module_called_is_its_forward(xp, device):
    """``module(...)`` passes positional and keyword arguments on to ``forward``, as
    PyTorch's modules do; the result is the same array math."""
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((5, 4)), "float32")
    layer = Linear(4, 3, xp=xp, device=device)
    assert_close(layer(X), layer.forward(X), xp=xp, dtype="float32", rtol=0, atol=0)
    A = layer.forward(X)
    Y = asarray(xp, device, np.eye(3)[[0, 1, 2, 0, 1]], "float32")
    loss = CrossEntropyLoss()
    expected = float(loss.forward(A, Y))
    assert float(loss(A, Y=Y)) == float(loss(A=A, Y=Y)) == expected


def test_to_puts_every_array_on_the_device_asked_for():
    """``to(xp, device)`` moves parameters, gradients and running statistics to that device,
    and ``to(xp)`` to the library's default device, wherever they were (array-api-strict
    has three devices, so this runs in every session)."""
    strict, default, other = strict_devices()
    model = MLP([4, 8, 3], batchnorm=True, seed=0)
    loss = CrossEntropyLoss()
    loss.forward(model.forward(np.ones((5, 4), dtype=np.float32)), np.arange(5) % 3)
    model.backward(loss.backward())

    def devices():
        arrays = [*model.state_dict().values(), *(p.grad for _, p in model.named_parameters())]
        return {backend.device(a) for a in arrays}

    model.to("array_api_strict", device=other)
    assert devices() == {other}
    model.to("array_api_strict")
    assert devices() == {default}
    model.to(strict, device=other)
    assert devices() == {other}


def test_a_loaded_state_is_the_module_s_own(xp, device):
    """Arrays of the module's own library, device and dtype are copied in: an optimizer
    that updates the parameters in place leaves the caller's arrays as they were."""
    model = MLP([3, 4, 2], xp=xp, device=device, seed=0)
    given = dict(MLP([3, 4, 2], xp=xp, device=device, seed=1).state_dict())
    before = {k: to_numpy(v).copy() for k, v in given.items()}
    model.load_state_dict(given)
    assert all(model.state_dict()[k] is not v for k, v in given.items())
    loss = CrossEntropyLoss()
    X = asarray(xp, device, np.ones((4, 3)), "float32")
    loss.forward(model.forward(X), asarray(xp, device, [0, 1, 1, 0], "int64"))
    model.backward(loss.backward())
    SGD(model, lr=0.5).step()
    for key, value in given.items():
        np.testing.assert_array_equal(to_numpy(value), before[key], err_msg=key)


@pytest.mark.parametrize(
    "make",
    [lambda **kw: MLP([4, 8, 3], batchnorm=True, dropout=0.5, **kw), MLP0, MLP1, MLP4],
    ids=["MLP", "MLP0", "MLP1", "MLP4"],
)
def test_a_model_without_a_seed_is_seeded_with_0(make):
    """The documented default ``seed=0``: a model built without a seed has the weights of
    ``seed=0``, not of another seed."""
    default, zero, one = (make(**kw).state_dict() for kw in ({}, {"seed": 0}, {"seed": 1}))
    for key, value in default.items():
        np.testing.assert_array_equal(value, zero[key], err_msg=key)
    assert any(not np.array_equal(value, one[key]) for key, value in default.items())
