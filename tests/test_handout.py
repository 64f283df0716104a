"""The handout's worked examples on the backend under test (docs: the contract)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet.models import MLP0, MLP1, MLP4
from xpnet.nn import (
    BatchNorm1d,
    CrossEntropyLoss,
    Identity,
    Linear,
    MSELoss,
    ReLU,
    Sigmoid,
    Tanh,
)
from xpnet.optim import SGD

X = np.array([[-4.0, -3.0], [-2.0, -1.0], [0.0, 1.0], [2.0, 3.0]])
Y = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

# The handout prints four decimals.
HANDOUT = {"rtol": 0, "atol": 5e-5}


@pytest.mark.parametrize(
    ("cls", "forward", "derivative"),
    [
        (Identity, X, np.ones_like(X)),
        (
            Sigmoid,
            [[0.018, 0.0474], [0.1192, 0.2689], [0.5, 0.7311], [0.8808, 0.9526]],
            [[0.0177, 0.0452], [0.105, 0.1966], [0.25, 0.1966], [0.105, 0.0452]],
        ),
        (
            Tanh,
            [[-0.9993, -0.9951], [-0.964, -0.7616], [0, 0.7616], [0.964, 0.9951]],
            [[0.0013, 0.0099], [0.0707, 0.42], [1, 0.42], [0.0707, 0.0099]],
        ),
        (ReLU, [[0, 0], [0, 0], [0, 1], [2, 3]], [[0, 0], [0, 0], [0, 1], [1, 1]]),
    ],
)
def test_activation_examples(xp, device, cls, forward, derivative):
    f = cls()
    A = f.forward(asarray(xp, device, X))
    assert_close(A, forward, xp=xp, dtype="float64", **HANDOUT)
    assert_close(f.backward(), derivative, xp=xp, dtype="float64", **HANDOUT)
    upstream = asarray(xp, device, Y + 1.0)
    exact = f.backward(upstream)
    assert_close(exact, (Y + 1.0) * f_derivative_exact(cls, X), xp=xp, dtype="float64")


def f_derivative_exact(cls, Z):
    if cls is Identity:
        return np.ones_like(Z)
    if cls is Sigmoid:
        s = 1 / (1 + np.exp(-Z))
        return s * (1 - s)
    if cls is Tanh:
        return 1 - np.tanh(Z) ** 2
    return (Z > 0).astype(float)


def test_mse_example(xp, device):
    mse = MSELoss()
    L = mse.forward(asarray(xp, device, X), asarray(xp, device, Y))
    assert L.ndim == 0 and type(L) is type(asarray(xp, device, 0.0))  # a 0-d array
    assert_close(L, 6.5, xp=xp, dtype="float64")
    assert_close(mse.backward(), 2 * (X - Y) / 8, xp=xp, dtype="float64")


@pytest.mark.parametrize("labels", [False, True])
def test_cross_entropy_example(xp, device, labels):
    ce = CrossEntropyLoss()
    target = asarray(xp, device, [1, 0, 0, 1], dtype="int64") if labels else asarray(xp, device, Y)
    L = ce.forward(asarray(xp, device, X), target)
    assert L.ndim == 0 and type(L) is type(asarray(xp, device, 0.0))
    assert_close(L, 0.8133, xp=xp, dtype="float64", **HANDOUT)
    expected = [[0.0672, -0.0672], [-0.1828, 0.1828], [-0.1828, 0.1828], [0.0672, -0.0672]]
    assert_close(ce.backward(), expected, xp=xp, dtype="float64", **HANDOUT)


def test_linear_example(xp, device):
    layer = Linear(2, 3, xp=xp, device=device, dtype=xp.float64)
    layer.W = asarray(xp, device, [[-2, -1], [0, 1], [2, 3]])
    layer.b = asarray(xp, device, [[-1], [0], [1]])
    Z = layer.forward(asarray(xp, device, X))
    assert_close(Z, [[10, -3, -16], [4, -1, -6], [-2, 1, 4], [-8, 3, 14]], xp=xp)
    dLdA = layer.backward(asarray(xp, device, [[-4, -3, -2], [-1, 0, 1], [2, 3, 4], [5, 6, 7]]))
    assert_close(dLdA, [[4, -5], [4, 4], [4, 13], [4, 22]], xp=xp, dtype="float64")
    assert_close(layer.dLdW, [[28, 30], [24, 30], [20, 30]], xp=xp, dtype="float64")
    assert_close(layer.dLdb, [[2], [6], [10]], xp=xp, dtype="float64")


def _bn(xp, device):
    bn = BatchNorm1d(2, xp=xp, device=device, dtype="float64")
    bn.BW = asarray(xp, device, [[2, 5]])
    bn.Bb = asarray(xp, device, [[-1, 2]])
    return bn


BN_IN = [[1, 4], [7, 0], [1, 0], [7, 4]]


def test_batchnorm_example(xp, device):
    bn = _bn(xp, device)
    BZ = bn.forward(asarray(xp, device, BN_IN))
    assert_close(BZ, [[-3, 7], [1, -3], [-3, -3], [1, 7]], xp=xp, dtype="float64", rtol=1e-8)
    # the handout's attributes: the input, its normalised form and the output
    assert_close(bn.Z, BN_IN, xp=xp, dtype="float64", rtol=0)
    assert_close(bn.NZ, [[-1, 1], [1, -1], [-1, -1], [1, 1]], xp=xp, dtype="float64", rtol=1e-8)
    assert bn.BZ is BZ
    dLdZ = bn.backward(asarray(xp, device, [[-6, 2], [-12, 16], [-12, 20], [-6, 2]]))
    assert_close(dLdZ, [[2, 0], [-2, -5], [-2, 5], [2, 0]], xp=xp, rtol=1e-8, atol=1e-7)
    assert_close(bn.dLdBW, [[0, -32]], xp=xp, rtol=1e-8, atol=1e-7)
    assert_close(bn.dLdBb, [[-36, 40]], xp=xp)
    assert_close(bn.M, [[4, 2]], xp=xp)
    assert_close(bn.V, [[9, 4]], xp=xp)
    assert_close(bn.running_M, [[0.4, 0.2]], xp=xp)
    assert_close(bn.running_V, [[1.8, 1.3]], xp=xp)


def test_batchnorm_eval_example(xp, device):
    bn = _bn(xp, device)
    out = bn.forward(asarray(xp, device, BN_IN), eval=True)
    # running statistics at their initial zeros/ones: BZ = BW*Z/sqrt(1+eps) + Bb
    assert_close(out, [[1, 22], [13, 2], [1, 2], [13, 22]], xp=xp, rtol=1e-8)
    assert_close(bn.Z, BN_IN, xp=xp, dtype="float64", rtol=0)
    assert_close(bn.M, [[0, 0]], xp=xp)  # the statistics it normalised with
    assert_close(bn.V, [[1, 1]], xp=xp)
    assert_close(bn.running_M, [[0, 0]], xp=xp)
    assert_close(bn.running_V, [[1, 1]], xp=xp)


class PseudoModel:
    """The handout's section 7.3 test model."""

    def __init__(self, xp, device):
        self.layers = [Linear(3, 2, xp=xp, device=device, dtype="float64")]
        self.f = [ReLU()]


@pytest.mark.parametrize(("momentum", "expected"), [(0.0, [0.91, 0.82]), (0.9, [0.91, 0.739])])
def test_sgd_pseudo_model(xp, device, momentum, expected):
    model = PseudoModel(xp, device)
    layer = model.layers[0]
    layer.W = xp.ones((2, 3), dtype=xp.float64, device=device)
    layer.b = xp.ones((2, 1), dtype=xp.float64, device=device)
    layer.dLdW = layer.W / 10
    layer.dLdb = layer.b / 10
    opt = SGD(model, lr=0.9, momentum=momentum)
    for value in expected:
        opt.step()
        assert_close(layer.W, np.full((2, 3), value), xp=xp, dtype="float64")
        assert_close(layer.b, np.full((2, 1), value), xp=xp, dtype="float64")


def test_sgd_takes_a_pseudo_model_with_and_without_bn_layers(xp, device):
    """A handout-style object is read by its ``layers`` and, where it has them, its
    ``bn_layers``; the handout's buffer lists follow (empty without BatchNorm)."""
    model = PseudoModel(xp, device)
    opt = SGD(model, momentum=0.9)
    assert [name for name, _ in opt.params] == ["layers.0.W", "layers.0.b"]
    assert (len(opt.v_W), len(opt.v_b), opt.v_BW, opt.v_Bb) == (1, 1, [], [])
    model.bn_layers = [BatchNorm1d(2, xp=xp, device=device, dtype="float64")]
    opt = SGD(model, momentum=0.9)
    assert [name for name, _ in opt.params] == [
        "layers.0.W", "layers.0.b", "bn_layers.0.BW", "bn_layers.0.Bb"
    ]  # fmt: skip
    assert opt.v_BW[0] is opt.velocity["bn_layers.0.BW"]
    assert opt.v_Bb[0] is opt.velocity["bn_layers.0.Bb"]


@pytest.mark.parametrize(
    ("cls", "shapes"),
    [
        (MLP0, [(3, 2)]),
        (MLP1, [(3, 2), (2, 3)]),
        (MLP4, [(4, 2), (8, 4), (8, 8), (4, 8), (2, 4)]),
    ],
)
def test_handout_topologies(xp, device, cls, shapes):
    model = cls(xp=xp, device=device, dtype="float64")
    assert [tuple(layer.W.shape) for layer in model.layers] == shapes
    assert [type(f) for f in model.f] == [ReLU] * len(shapes)
    out = model.forward(asarray(xp, device, X))
    assert tuple(out.shape) == (4, shapes[-1][0])
    assert float(xp.min(out)) >= 0.0  # a ReLU after the last layer too
    dLdA0 = model.backward(xp.ones_like(out))
    assert_close(dLdA0, to_reference_dLdA0(model, X), xp=xp, dtype="float64")


def to_reference_dLdA0(model, X):
    """dLdA0 of sum(output) for a ReLU MLP, by hand in NumPy."""
    from xpnet.backend import to_numpy

    Ws = [to_numpy(layer.W) for layer in model.layers]
    bs = [to_numpy(layer.b) for layer in model.layers]
    A, masks = X, []
    for W, b in zip(Ws, bs, strict=True):
        Z = A @ W.T + b.T
        masks.append(Z > 0)
        A = np.maximum(Z, 0)
    g = np.ones_like(A)
    for W, mask in zip(reversed(Ws), reversed(masks), strict=True):
        g = (g * mask) @ W
    return g


@pytest.mark.parametrize("cls", [MLP0, MLP1, MLP4], ids=lambda c: c.__name__)
def test_the_handout_mlps_take_every_option_of_mlp(xp, device, cls):
    """MLP0, MLP1 and MLP4 pass each keyword on to MLP: the same options give the model
    that MLP builds from the handout's sizes, with a ReLU-like activation after the last
    Linear too; the defaults are MLP's."""
    from xpnet import backend
    from xpnet.models import MLP

    options = {
        "activation": "tanh",
        "batchnorm": True,
        "dropout": 0.25,
        "init": "xavier_uniform",
        "standardize": True,
        "seed": 7,
        "dtype": "float64",
    }
    model = cls(xp=xp, device=device, **options)
    assert model.config() == {
        "class": cls.__name__,
        "sizes": list(cls._sizes),
        **{k: v for k, v in options.items() if k not in ("seed", "dtype")},
    }
    assert len(model.f) == len(model.bn_layers) == len(model.dropout_layers) == len(model.layers)
    # the same seed draws the same Linear layers as MLP's (whose last layer has no
    # BatchNorm, so only the arrays both have are compared)
    reference = MLP(list(cls._sizes), xp=xp, device=device, **options).state_dict()
    for key, value in model.state_dict().items():
        if key in reference:
            assert_close(value, reference[key], xp=xp, dtype="float64", rtol=0, atol=0)
    assert "layers.0.W" in reference and "standardize_layers.0.scale" in reference
    other = cls(xp=xp, device=device, **{**options, "seed": 8})
    assert not np.array_equal(
        backend.to_numpy(other.layers[0].W), backend.to_numpy(model.layers[0].W)
    )
    if device is not None:
        want = backend.device_name(backend.resolve_device(xp, device))
        assert all(
            backend.device_name(backend.device(v)) == want for v in model.state_dict().values()
        )
    default = cls(xp=xp, device=device)
    assert default.config() == {"class": cls.__name__, "sizes": list(cls._sizes),
                                "activation": "relu", "batchnorm": False}  # fmt: skip
    assert default.dtype == xp.float32 and not default.standardize_layers
    np.testing.assert_array_equal(  # seed 0 by default
        backend.to_numpy(default.layers[0].W),
        backend.to_numpy(cls(xp=xp, device=device, seed=0).layers[0].W),
    )
