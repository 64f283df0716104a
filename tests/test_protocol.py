"""The public module protocol: parameters with their gradients by name, one unchecked entry
per direction, and optimizers that update whatever a module declares."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet import backend
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, Linear, Module, Param
from xpnet.optim import SGD, Adam, AdamW


class Scale(Module):
    """A layer written outside xpnet: ``Y = X ⊙ s`` with a learned ``(1, C)`` scale."""

    declared_parameters: ClassVar[dict[str, str]] = {"s": "dLds"}
    declared_caches: ClassVar[tuple[str, ...]] = ("X",)

    def __init__(self, s):
        self.s, self.dLds, self.X = s, None, None

    def forward(self, X):
        return self.forward_unchecked(X, backend.namespace(X, self.s))

    def forward_unchecked(self, X, xp):
        self.X = X
        return X * self.s

    def backward_unchecked(self, dLdY, xp, *, input_grad=True):
        self.dLds = xp.sum(dLdY * self.X, axis=0, keepdims=True)
        return dLdY * self.s if input_grad else None


class Net(Module):
    declared_children: ClassVar[tuple[str, ...]] = ("parts",)

    def __init__(self, xp, device):
        self.parts = [
            Linear(3, 4, xp=xp, device=device, dtype="float64", seed=0),
            Scale(asarray(xp, device, [[1.0, 2.0, 0.5, -1.0]])),
        ]

    def forward(self, X):
        xp = backend.namespace(X)
        for part in self.parts:
            X = part.forward_unchecked(X, xp)
        return X

    def backward(self, dLdY):
        xp = backend.namespace(dLdY)
        for part in reversed(self.parts[1:]):
            dLdY = part.backward_unchecked(dLdY, xp)
        return self.parts[0].backward_unchecked(dLdY, xp, input_grad=False)


def test_named_parameters_pair_each_array_with_its_gradient(xp, device):
    model = MLP([3, 5, 2], batchnorm=True, xp=xp, device=device, dtype="float64")
    named = list(model.named_parameters())
    assert [n for n, _ in named] == [
        "layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b", "bn_layers.0.BW", "bn_layers.0.Bb"
    ]  # fmt: skip
    assert all(isinstance(p, Param) and p.grad is None for _, p in named)
    assert named[4][1].value is model.bn_layers[0].BW
    X = asarray(xp, device, np.random.default_rng(0).standard_normal((6, 3)))
    loss = CrossEntropyLoss()
    loss.forward(model.forward(X), asarray(xp, device, [0, 1, 0, 1, 1, 0], "int64"))
    model.backward(loss.backward())
    assert named[2][1].grad is model.layers[1].dLdW
    assert named[5][1].grad is model.bn_layers[0].dLdBb


def test_a_new_layer_needs_no_optimizer_change(xp, device):
    """SGD updates the new layer's declared parameter, through the model or a list of
    its parameters, and the step is exactly p - lr * g."""
    for make_params in (lambda net: net, lambda net: net.named_parameters()):
        net = Net(xp, device)
        opt = SGD(make_params(net), lr=0.5)
        X = asarray(xp, device, np.random.default_rng(1).standard_normal((4, 3)))
        loss = CrossEntropyLoss()
        loss.forward(net.forward(X), asarray(xp, device, [0, 1, 2, 3], "int64"))
        net.backward(loss.backward())
        s, g = backend.to_numpy(net.parts[1].s).copy(), backend.to_numpy(net.parts[1].dLds)
        assert np.any(g != 0)
        opt.step()
        assert_close(net.parts[1].s, s - 0.5 * g, xp=xp, dtype="float64", rtol=0, atol=1e-15)
        assert "parts.1.s" in opt.state_dict() or "1" in opt.state_dict()


@pytest.mark.parametrize("make", [SGD, Adam, AdamW], ids=lambda c: c.__name__)
def test_an_optimizer_over_a_single_parameter(xp, device, make):
    """A layer with one parameter is a model an optimizer takes on its own: each one's
    first step moves ``s`` against its gradient (Adam's by lr per element)."""
    layer = Scale(asarray(xp, device, [[1.0, 2.0]]))
    opt = make(layer, lr=0.5)
    layer.forward(asarray(xp, device, [[3.0, -1.0]]))
    layer.backward_unchecked(asarray(xp, device, [[1.0, 1.0]]), xp)
    opt.step()
    want = {SGD: [[1.0 - 1.5, 2.0 + 0.5]], Adam: [[0.5, 2.5]], AdamW: [[0.5 - 0.005, 2.5 - 0.01]]}
    assert_close(layer.s, want[make], xp=xp, dtype="float64", rtol=1e-7)


def test_bare_parameter_handles_are_named_by_position(xp, device):
    """An iterable of Param handles (no names) gives names "0", "1", ... in its order, and
    steps as the model itself does."""
    models = [MLP([3, 4, 2], xp=xp, device=device, dtype="float64", seed=5) for _ in range(2)]
    by_model = SGD(models[0], lr=0.5, momentum=0.9)
    by_handle = SGD([p for _, p in models[1].named_parameters()], lr=0.5, momentum=0.9)
    assert [name for name, _ in by_handle.params] == ["0", "1", "2", "3"]
    X = asarray(xp, device, np.random.default_rng(6).standard_normal((4, 3)))
    y = asarray(xp, device, [0, 1, 1, 0], "int64")
    for _ in range(2):
        for model, opt in zip(models, (by_model, by_handle), strict=True):
            loss = CrossEntropyLoss()
            loss.forward(model.forward(X), y)
            model.backward(loss.backward())
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_parameters_keep_their_identity_across_steps(xp, device):
    if not backend.inplace_updates(xp):
        pytest.skip(f"{backend.library_name(xp)}'s arrays are immutable: a step assigns new ones")
    model = MLP([4, 6, 3], batchnorm=True, xp=xp, device=device, dtype="float64")
    opt = SGD(model, lr=0.1, momentum=0.9)
    held = model.parameters()
    before = [backend.to_numpy(p).copy() for p in held]
    loss = CrossEntropyLoss()
    X = asarray(xp, device, np.random.default_rng(2).standard_normal((8, 4)))
    y = asarray(xp, device, [0, 1, 2, 0, 1, 2, 0, 1], "int64")
    for _ in range(3):
        loss.forward(model.forward(X), y)
        model.backward(loss.backward())
        opt.step()
    assert all(a is b for a, b in zip(model.parameters(), held, strict=True))
    # updated where the user holds them (the weights; a bias before BatchNorm has a gradient
    # of pure rounding noise)
    for k in (0, 2, 4):
        assert np.any(backend.to_numpy(held[k]) != before[k])


def test_unchecked_entries_compute_what_forward_and_backward_compute(xp, device):
    model = MLP([4, 6, 3], batchnorm=True, xp=xp, device=device, dtype="float64", seed=4)
    X = asarray(xp, device, np.random.default_rng(3).standard_normal((5, 4)))
    dY = asarray(xp, device, np.random.default_rng(4).standard_normal((5, 3)))
    checked = backend.to_numpy(model.forward(X)), backend.to_numpy(model.backward(dY))
    model_xp = backend.namespace(X)
    out = model.forward_unchecked(X, model_xp)
    dX = model.backward_unchecked(dY, model_xp)
    np.testing.assert_array_equal(backend.to_numpy(out), checked[0])
    np.testing.assert_array_equal(backend.to_numpy(dX), checked[1])
    assert model.backward_unchecked(dY, model_xp, input_grad=False) is None
    grads = [backend.to_numpy(p.grad).copy() for _, p in model.named_parameters()]
    assert model.backward(dY, input_grad=False) is None  # the checked entry passes it on
    for (_, p), want in zip(model.named_parameters(), grads, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), want)
