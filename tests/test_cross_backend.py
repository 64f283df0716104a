"""Every backend agrees with NumPy: bit-identical initial parameters from one seed, and a
20-step float64 training run to 1e-10 relative."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet.backend import to_numpy
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, Linear, MSELoss
from xpnet.optim import SGD


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_same_seed_bit_identical_parameters(xp, device, dtype, batchnorm):
    model = MLP([7, 11, 5, 3], batchnorm=batchnorm, xp=xp, device=device, dtype=dtype, seed=42)
    reference = MLP([7, 11, 5, 3], batchnorm=batchnorm, dtype=dtype, seed=42)
    state, ref_state = model.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys()
    for key, value in state.items():
        host = to_numpy(value)
        assert host.dtype == np.dtype(dtype), key
        np.testing.assert_array_equal(host, ref_state[key], err_msg=key)


def test_linear_seed_matches_host_generator(xp, device):
    """Linear draws W then b from U(±1/sqrt(in)) of numpy.random.default_rng(seed)."""
    layer = Linear(3, 2, xp=xp, device=device, dtype="float64", seed=9)
    rng = np.random.default_rng(9)
    bound = 1 / np.sqrt(3)
    np.testing.assert_array_equal(to_numpy(layer.W), rng.uniform(-bound, bound, (2, 3)))
    np.testing.assert_array_equal(to_numpy(layer.b), rng.uniform(-bound, bound, (2, 1)))


def _train(model, loss, xp, device, steps=20, **sgd):
    rng = np.random.default_rng(123)
    opt = SGD(model, **sgd)
    losses = []
    for _ in range(steps):
        X = rng.standard_normal((12, model.sizes[0]))
        y = rng.integers(0, model.sizes[-1], 12)
        target = (
            asarray(xp, device, y, "int64")
            if isinstance(loss, CrossEntropyLoss)
            else asarray(xp, device, np.eye(model.sizes[-1])[y])
        )
        L = loss.forward(model.forward(asarray(xp, device, X)), target)
        model.backward(loss.backward())
        opt.step()
        losses.append(float(L))
    return losses


@pytest.mark.parametrize(
    ("activation", "loss_cls", "sgd"),
    [
        ("relu", CrossEntropyLoss, {"lr": 0.1, "momentum": 0.9}),
        (
            "gelu",
            CrossEntropyLoss,
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        ),
        ("tanh", MSELoss, {"lr": 0.2}),
    ],
    ids=["relu-ce-momentum", "gelu-ce-nesterov", "tanh-mse-plain"],
)
def test_twenty_steps_agree_with_numpy(xp, device, activation, loss_cls, sgd):
    kw = {"activation": activation, "batchnorm": True, "dtype": "float64", "seed": 4}
    model = MLP([5, 8, 6, 3], xp=xp, device=device, **kw)
    reference = MLP([5, 8, 6, 3], **kw)
    losses = _train(model, loss_cls(), xp, device, **sgd)
    ref_losses = _train(reference, loss_cls(), np, None, **sgd)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10, atol=0)
    ref_state = reference.state_dict()
    for key, value in model.state_dict().items():
        assert_close(value, ref_state[key], xp=xp, dtype="float64", rtol=1e-10, atol=1e-13)
