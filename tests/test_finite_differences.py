"""Every hand-written gradient against central finite differences in float64.

For a component with output ``out(x)`` and a fixed random upstream ``R``, the scalar
``s(x) = Σ R ⊙ out(x)`` has gradient ``backward(R)``; each entry is checked against
``(s(x + h e_i) - s(x - h e_i)) / 2h``. Losses are scalars already.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet.backend import to_numpy
from xpnet.models import MLP
from xpnet.nn import (
    GELU,
    BatchNorm1d,
    CrossEntropyLoss,
    Identity,
    Linear,
    MSELoss,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)

H = 1e-6
FD = {"rtol": 1e-6, "atol": 1e-8}


def numeric_gradient(scalar, x):
    """Central differences of ``scalar`` (a function of a NumPy array) at ``x``."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = H
        grad[i] = (scalar(x + step) - scalar(x - step)) / (2 * H)
    return grad


def away_from_zero(rng, shape):
    """Normal samples kept 1e-2 away from 0, where ReLU has its kink."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 1e-2, 0.5, x)


@pytest.mark.parametrize(
    "cls", [Identity, Sigmoid, Tanh, ReLU, GELU, Softmax], ids=lambda c: c.__name__
)
def test_activation(xp, device, cls):
    rng = np.random.default_rng(0)
    Z, R = away_from_zero(rng, (3, 4)), rng.standard_normal((3, 4))
    f = cls()

    def s(z):
        return float(np.sum(R * to_numpy(f.forward(asarray(xp, device, z)))))

    f.forward(asarray(xp, device, Z))
    analytic = f.backward(asarray(xp, device, R))
    assert_close(analytic, numeric_gradient(s, Z), xp=xp, dtype="float64", **FD)


@pytest.mark.parametrize("target", ["one-hot", "soft", "labels"])
def test_cross_entropy(xp, device, target):
    rng = np.random.default_rng(1)
    A, labels = rng.standard_normal((4, 3)) * 2, np.array([0, 2, 1, 2])
    if target == "labels":
        Y = asarray(xp, device, labels, dtype="int64")
    else:
        P = np.eye(3)[labels] if target == "one-hot" else rng.dirichlet(np.ones(3), 4)
        Y = asarray(xp, device, P)
    loss = CrossEntropyLoss()

    def s(a):
        return float(loss.forward(asarray(xp, device, a), Y))

    s(A)
    assert_close(loss.backward(), numeric_gradient(s, A), xp=xp, dtype="float64", **FD)


def test_mse(xp, device):
    rng = np.random.default_rng(2)
    A, Y = rng.standard_normal((4, 3)), asarray(xp, device, rng.standard_normal((4, 3)))
    loss = MSELoss()

    def s(a):
        return float(loss.forward(asarray(xp, device, a), Y))

    s(A)
    assert_close(loss.backward(), numeric_gradient(s, A), xp=xp, dtype="float64", **FD)


def _param_scalar(module, name, A, R, xp, device, **forward_kw):
    def s(p):
        setattr(module, name, asarray(xp, device, p))
        return float(np.sum(R * to_numpy(module.forward(A, **forward_kw))))

    return s


def test_linear(xp, device):
    rng = np.random.default_rng(3)
    layer = Linear(4, 3, xp=xp, device=device, dtype="float64", seed=0)
    A, R = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    A_x = asarray(xp, device, A)
    W, b = to_numpy(layer.W).copy(), to_numpy(layer.b).copy()
    num_W = numeric_gradient(_param_scalar(layer, "W", A_x, R, xp, device), W)
    layer.W = asarray(xp, device, W)
    num_b = numeric_gradient(_param_scalar(layer, "b", A_x, R, xp, device), b)
    layer.b = asarray(xp, device, b)

    def s(a):
        return float(np.sum(R * to_numpy(layer.forward(asarray(xp, device, a)))))

    num_A = numeric_gradient(s, A)
    layer.forward(A_x)
    dLdA = layer.backward(asarray(xp, device, R))
    assert_close(dLdA, num_A, xp=xp, **FD)
    assert_close(layer.dLdW, num_W, xp=xp, **FD)
    assert_close(layer.dLdb, num_b, xp=xp, **FD)


@pytest.mark.parametrize("evaluate", [False, True], ids=["train", "eval"])
def test_batchnorm(xp, device, evaluate):
    rng = np.random.default_rng(4)
    bn = BatchNorm1d(3, xp=xp, device=device, dtype="float64")
    bn.BW = asarray(xp, device, rng.standard_normal((1, 3)))
    bn.Bb = asarray(xp, device, rng.standard_normal((1, 3)))
    bn.running_M = asarray(xp, device, rng.standard_normal((1, 3)))
    bn.running_V = asarray(xp, device, rng.uniform(0.5, 2, (1, 3)))
    Z, R = rng.standard_normal((5, 3)) * 2, rng.standard_normal((5, 3))
    Z_x = asarray(xp, device, Z)
    BW, Bb = to_numpy(bn.BW).copy(), to_numpy(bn.Bb).copy()
    num_BW = numeric_gradient(_param_scalar(bn, "BW", Z_x, R, xp, device, eval=evaluate), BW)
    bn.BW = asarray(xp, device, BW)
    num_Bb = numeric_gradient(_param_scalar(bn, "Bb", Z_x, R, xp, device, eval=evaluate), Bb)
    bn.Bb = asarray(xp, device, Bb)

    def s(z):
        return float(np.sum(R * to_numpy(bn.forward(asarray(xp, device, z), eval=evaluate))))

    num_Z = numeric_gradient(s, Z)
    bn.forward(Z_x, eval=evaluate)
    dLdZ = bn.backward(asarray(xp, device, R))
    assert_close(dLdZ, num_Z, xp=xp, **FD)
    assert_close(bn.dLdBW, num_BW, xp=xp, **FD)
    assert_close(bn.dLdBb, num_Bb, xp=xp, **FD)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_mlp_input_gradient(xp, device, activation):
    """The whole chain (Linear, BatchNorm, activation, cross-entropy) at once."""
    rng = np.random.default_rng(5)
    model = MLP(
        [3, 5, 4, 2],
        activation=activation,
        batchnorm=True,
        xp=xp,
        device=device,
        dtype="float64",
        seed=1,
    )
    X, y = rng.standard_normal((6, 3)), asarray(xp, device, [0, 1, 1, 0, 1, 0], "int64")
    loss = CrossEntropyLoss()

    def s(x):
        return float(loss.forward(model.forward(asarray(xp, device, x)), y))

    num = numeric_gradient(s, X)
    s(X)
    assert_close(model.backward(loss.backward()), num, xp=xp, **FD)
