"""Initialisation with PyTorch's formulas and inverted dropout, both drawn on the host and
so the same on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet import backend
from xpnet.models import INITS, MLP
from xpnet.nn import CrossEntropyLoss, Dropout, init

SHAPE = (600, 500)  # 300,000 draws: the sample std is within 0.3% of the true one


@pytest.mark.parametrize(
    ("draw", "kind", "expected"),
    [
        (lambda: init.kaiming_uniform(SHAPE, nonlinearity="relu", seed=1, dtype="float64"),
         "uniform", math.sqrt(2.0) * math.sqrt(3.0 / 500)),
        (lambda: init.kaiming_normal(SHAPE, mode="fan_out", nonlinearity="tanh", seed=2,
                                     dtype="float64"), "normal", 5 / 3 / math.sqrt(600)),
        (lambda: init.kaiming_uniform(SHAPE, a=0.2, seed=3, dtype="float64"),
         "uniform", math.sqrt(2 / (1 + 0.04)) * math.sqrt(3.0 / 500)),
        (lambda: init.xavier_uniform(SHAPE, gain=2.0, seed=4, dtype="float64"),
         "uniform", 2.0 * math.sqrt(6.0 / 1100)),
        (lambda: init.xavier_normal(SHAPE, seed=5, dtype="float64"),
         "normal", math.sqrt(2.0 / 1100)),
    ],
    ids=["kaiming_uniform", "kaiming_normal-fan_out-tanh", "kaiming-leaky", "xavier_uniform",
         "xavier_normal"],
)  # fmt: skip
def test_formulas_on_large_draws(draw, kind, expected):
    """``expected`` is the uniform bound or the normal standard deviation, from PyTorch's
    formulas written out here."""
    W = draw()
    assert W.shape == SHAPE and abs(float(np.mean(W))) < 0.01 * expected
    if kind == "uniform":
        assert np.max(np.abs(W)) <= expected and np.max(np.abs(W)) > 0.999 * expected
        assert np.std(W) == pytest.approx(expected / math.sqrt(3), rel=0.005)
    else:
        assert np.std(W) == pytest.approx(expected, rel=0.005)


def test_gains_equal_torch():
    torch = pytest.importorskip("torch")
    for name in ("linear", "sigmoid", "tanh", "relu"):
        assert init.calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", 0.2)
    )
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("name", ["kaiming_normal", "xavier_uniform"])
def test_bit_identical_across_backends(xp, device, name):
    fn = getattr(init, name)
    ours = fn((7, 5), seed=11, xp=xp, device=device, dtype="float32")
    reference = fn((7, 5), seed=11, dtype="float32")
    assert_close(ours, reference, xp=xp, dtype="float32", rtol=0, atol=0)
    assert backend.device(ours) == (device if device is not None else backend.default_device(xp))


def test_mlp_init_option(xp, device):
    model = MLP([50, 40, 3], init="kaiming_uniform", xp=xp, device=device, dtype="float64")
    W, b = backend.to_numpy(model.layers[0].W), backend.to_numpy(model.layers[0].b)
    assert np.max(np.abs(W)) <= math.sqrt(6.0 / 50) and np.all(b == 0)
    assert model.config()["init"] == "kaiming_uniform"
    assert "init" not in MLP([2, 2]).config()  # the default keeps old checkpoints' format
    with pytest.raises(ValueError, match="unknown init 'he'"):
        MLP([2, 2], init="he")


@pytest.mark.parametrize("name", sorted(INITS))
def test_gelu_takes_relus_gain_under_every_init(name):
    made = {a: MLP([6, 5, 3], activation=a, init=name, seed=3) for a in ("gelu", "relu", "tanh")}
    for g, r in zip(made["gelu"].layers, made["relu"].layers, strict=True):
        np.testing.assert_array_equal(g.W, r.W)
    # the same draws with tanh's gain (5/3 against √2) are other weights
    assert not np.array_equal(made["gelu"].layers[0].W, made["tanh"].layers[0].W)


def test_dropout_is_inverted_and_evaluation_is_the_identity():
    drop = Dropout(0.3, seed=0)
    X = np.ones((400, 500))
    out = drop.forward(X)
    zeros = np.mean(out == 0)
    assert zeros == pytest.approx(0.3, abs=0.005)
    assert set(np.unique(out)) == {0.0, 1 / 0.7}
    assert np.mean(out) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_array_equal(drop.backward(np.full_like(X, 2.0)), 2.0 * out)
    drop.eval()
    assert drop.forward(X) is X and drop.backward(X) is X
    with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\)"):
        Dropout(1.0)
    with pytest.raises(RuntimeError, match="backward"):
        Dropout(0.5).backward(X)


def test_dropout_masks_are_the_same_on_every_backend(xp, device):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    outputs = []
    for lib, dev in ((xp, device), (backend.get("numpy"), None)):
        model = MLP([6, 9, 7, 3], dropout=0.4, xp=lib, device=dev, dtype="float64", seed=3)
        out = model.forward(asarray(lib, dev, X))
        CrossEntropyLoss().forward(out, asarray(lib, dev, y, "int64"))
        outputs.append(backend.to_numpy(out))
        outputs.append(backend.to_numpy(model.dropout_layers[1].mask))
    np.testing.assert_array_equal(outputs[1], outputs[3])
    np.testing.assert_allclose(outputs[0], outputs[2], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_an_mlp_s_dropout_layers_drop_with_its_probability(p):
    """Every Dropout of ``MLP(dropout=p)`` zeroes a share ``p`` and scales the rest by
    ``1 / (1 - p)``; mutation testing showed the probability unchecked (0.5 passed)."""
    model = MLP([50, 50, 50, 3], dropout=p, dtype="float64", seed=0)
    model.forward(np.ones((400, 50)))
    assert [d.p for d in model.dropout_layers] == [p, p]
    for d in model.dropout_layers:
        assert set(np.unique(d.mask)) == {0.0, 1 / (1 - p)}
        assert np.mean(d.mask == 0) == pytest.approx(p, abs=0.015)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_dropout_layer_of_an_mlp_draws_its_own_masks(seed):
    """The layers' generators are seeded apart: no two of forty equal layers share a mask
    (seeds drawn from a small range would collide; the masks would then be equal)."""
    model = MLP([4] * 41 + [2], dropout=0.5, dtype="float64", seed=seed)
    model.forward(np.ones((8, 4)))
    masks = {d.mask.tobytes() for d in model.dropout_layers}
    assert len(model.dropout_layers) == 40 and len(masks) == 40


def test_mlp_with_dropout_gradients_match_finite_differences():
    """With the masks held fixed (each Dropout's generator rewound before every forward),
    the network is a fixed function, and backward is its exact gradient."""
    rng = np.random.default_rng(1)
    model = MLP([4, 6, 5, 3], dropout=0.5, dtype="float64", seed=2)
    X, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    states = [d.rng.bit_generator.state for d in model.dropout_layers]
    loss = CrossEntropyLoss()

    def value(X):
        for d, state in zip(model.dropout_layers, states, strict=True):
            d.rng.bit_generator.state = state
        return float(loss.forward(model.forward(X), y))

    value(X)
    dX = model.backward(loss.backward())
    dW = model.layers[1].dLdW.copy()
    eps = 1e-6
    for idx in np.ndindex(*X.shape):
        plus, minus = X.copy(), X.copy()
        plus[idx] += eps
        minus[idx] -= eps
        assert (value(plus) - value(minus)) / (2 * eps) == pytest.approx(dX[idx], abs=1e-8)
    W = model.layers[1].W
    for idx in [(0, 0), (2, 3), (4, 5)]:
        old = W[idx]
        W[idx] = old + eps
        up = value(X)
        W[idx] = old - eps
        down = value(X)
        W[idx] = old
        assert (up - down) / (2 * eps) == pytest.approx(dW[idx], abs=1e-8)
    assert np.any(model.dropout_layers[0].mask == 0)


@pytest.mark.parametrize(
    "name",
    ["kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "zeros", "ones"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_initialiser_makes_its_array_where_and_as_asked(xp, device, name, dtype):
    """Library, device, dtype and shape as asked, the same numbers on every backend for
    one seed; mutation testing showed the xp, device and dtype arguments unguarded."""
    make = getattr(init, name)
    seeded = {} if name in ("zeros", "ones") else {"seed": 3}
    out = make((5, 4), xp=xp, device=device, dtype=dtype, **seeded)
    assert backend.library_name(backend.namespace(out)) == backend.library_name(xp)
    assert backend.dtype_name(out.dtype) == dtype and tuple(out.shape) == (5, 4)
    if device is not None:
        want = backend.device_name(backend.resolve_device(xp, device))
        assert backend.device_name(backend.device(out)) == want
    host = make((5, 4), xp="numpy", dtype=dtype, **seeded)
    np.testing.assert_array_equal(backend.to_numpy(out), host)


# -- boundaries that mutation testing found unguarded ---------------------------------------
@pytest.mark.parametrize("shape", [(6, 5), (8, 4, 5), (8, 4, 3, 3)], ids=["2d", "3d", "4d"])
@pytest.mark.parametrize(
    ("name", "options", "scale"),
    [
        # the defaults (kaiming: a=0 with leaky_relu, fan_in; xavier: gain 1) and the
        # documented formula of each scale, fan_in = shape[1]·r, fan_out = shape[0]·r with
        # r the product of the dimensions after the second (PyTorch's)
        ("kaiming_uniform", {}, lambda fi, fo: math.sqrt(2.0) * math.sqrt(3.0 / fi)),
        ("kaiming_normal", {}, lambda fi, fo: math.sqrt(2.0) / math.sqrt(fi)),
        ("kaiming_normal", {"a": 0.3, "mode": "fan_out"},
         lambda fi, fo: math.sqrt(2.0 / 1.09) / math.sqrt(fo)),
        ("xavier_uniform", {}, lambda fi, fo: math.sqrt(6.0 / (fi + fo))),
        ("xavier_normal", {}, lambda fi, fo: math.sqrt(2.0 / (fi + fo))),
    ],
    ids=["kaiming_uniform", "kaiming_normal", "kaiming_normal-a-fan_out", "xavier_uniform",
         "xavier_normal"],
)  # fmt: skip
def test_each_draw_is_the_generator_s_at_the_documented_scale(shape, name, options, scale):
    """Exactly the host generator's uniform or normal draw at the scale the docstring
    gives, for Linear-like and convolution-like shapes; each default is the formula's."""
    receptive = math.prod(shape[2:])
    bound = scale(shape[1] * receptive, shape[0] * receptive)
    W = getattr(init, name)(shape, seed=11, dtype="float64", **options)
    rng = np.random.default_rng(11)
    if name.endswith("uniform"):
        expected = rng.uniform(-bound, bound, size=shape)
    else:
        expected = rng.normal(0.0, bound, size=shape)
    np.testing.assert_allclose(W, expected, rtol=1e-13, atol=0)


def test_leaky_relu_s_default_slope_is_torch_s():
    torch = pytest.importorskip("torch")
    assert init.calculate_gain("leaky_relu") == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu"), rel=1e-15
    )
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2.0 / (1 + 0.01**2)))
    with pytest.raises(ValueError, match=r"expected one of \[.*'relu', 'leaky_relu'\]"):
        init.calculate_gain("swish")


def test_fans_are_refused_by_name():
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got \(5,\)"):
        init.xavier_uniform((5,))
    with pytest.raises(ValueError, match=r"mode must be 'fan_in' or 'fan_out', got 'fan_both'"):
        init.kaiming_uniform((3, 4), mode="fan_both")


def test_dropout_refusals_name_the_layer(xp, device):
    with pytest.raises(ValueError, match=r"^Dropout: p must .*1\.0"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"^Dropout: p must"):
        Dropout(-0.1)
    drop = Dropout(0.5, seed=0)
    assert drop.mask is None  # nothing drawn yet
    X = asarray(xp, device, np.ones((4, 3)), dtype="float32")
    with pytest.raises(RuntimeError, match=r"^Dropout\(p=0\.5\)"):
        drop.backward(X)
    with pytest.raises(TypeError, match=r"^Dropout\(p=0\.5\).*must be a floating"):
        drop.forward(xp.ones((4, 3), dtype=xp.int32, device=device))
    drop.forward(X)
    with pytest.raises(TypeError, match=r"^Dropout\(p=0\.5\)\.backward: dLdY must be a floating"):
        drop.backward(xp.ones((4, 3), dtype=xp.int32, device=device))
    shapes = r"dLdY must have shape \(4, 3\), got \(4, 2\)$"
    with pytest.raises(ValueError, match=r"^Dropout\(p=0\.5\)\.backward: " + shapes):
        drop.backward(asarray(xp, device, np.ones((4, 2)), dtype="float32"))


def test_dropout_with_p_0_draws_nothing(xp, device):
    drop = Dropout(0.0, seed=3)
    before = drop.rng.bit_generator.state
    X = asarray(xp, device, np.arange(12.0).reshape(4, 3), dtype="float32")
    assert drop.forward(X) is X and drop.mask is None
    assert drop.rng.bit_generator.state == before


def test_dropout_masks_live_on_the_input_s_device(xp, device):
    drop = Dropout(0.5, seed=0)
    X = asarray(xp, device, np.ones((6, 4)), dtype="float32")
    out = drop.forward(X)
    assert backend.device(drop.mask) == backend.device(X) == backend.device(out)
    grad = drop.backward(X)
    assert backend.device(grad) == backend.device(X)


def test_dropout_s_default_probability_is_torch_s():
    torch = pytest.importorskip("torch")
    assert Dropout().p == torch.nn.Dropout().p == 0.5
