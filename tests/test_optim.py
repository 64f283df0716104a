"""SGD: the in-place update path equals the assignment path bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray
from xpnet import backend
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD


def _run(xp, device, inplace, monkeypatch, **sgd):
    with monkeypatch.context() as m:
        m.setattr(backend, "inplace_updates", lambda _xp: inplace)
        model = MLP([5, 7, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=2)
        opt = SGD(model, **sgd)
        loss = CrossEntropyLoss()
        rng = np.random.default_rng(0)
        for _ in range(5):
            X = asarray(xp, device, rng.standard_normal((8, 5)))
            y = asarray(xp, device, rng.integers(0, 3, 8), "int64")
            loss.forward(model.forward(X), y)
            model.backward(loss.backward())
            opt.step()
        return {k: backend.to_numpy(v) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "sgd",
    [
        {"lr": 0.1},
        {"lr": 0.1, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-2},
    ],
    ids=["plain", "momentum", "nesterov+wd"],
)
def test_inplace_path_equals_assignment_path(xp, device, monkeypatch, sgd):
    fast = _run(xp, device, True, monkeypatch, **sgd)
    generic = _run(xp, device, False, monkeypatch, **sgd)
    for key in generic:
        np.testing.assert_array_equal(fast[key], generic[key], err_msg=key)


def test_inplace_capability():
    assert backend.inplace_updates(backend.get("numpy"))
