"""Every component against PyTorch autograd in float64, on random shapes (N, C in 1..9).

Inputs are drawn in NumPy, run through xpnet on the backend under test and through
``torch`` on the CPU; every gradient xpnet computes by hand is compared with the one
autograd derives from the same scalar.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from xpnet.backend import to_numpy
from xpnet.models import MLP, MLP0, MLP1, MLP4
from xpnet.nn import (
    BatchNorm1d,
    CrossEntropyLoss,
    Linear,
    MSELoss,
    Softmax,
)
from xpnet.optim import SGD

torch = pytest.importorskip("torch")
from tests.torch_reference import TORCH_ACTIVATIONS, F, t, torch_copy  # noqa: E402

SEEDS = range(6)
RTOL = 1e-12  # float64 against float64: both are exact to rounding


def shapes(seed, min_n=1):
    rng = np.random.default_rng(seed)
    return rng, int(rng.integers(min_n, 10)), int(rng.integers(1, 10))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", list(TORCH_ACTIVATIONS), ids=lambda c: c.__name__)
def test_activation(xp, device, cls, seed):
    rng, N, C = shapes(seed)
    Z = rng.standard_normal((N, C)) * 3
    R = rng.standard_normal((N, C))
    f = cls()
    A = f.forward(asarray(xp, device, Z))
    dLdZ = f.backward(asarray(xp, device, R))

    z = t(Z, grad=True)
    a = TORCH_ACTIVATIONS[cls](z)
    (a * t(R)).sum().backward()
    assert_close(A, a.detach().numpy(), xp=xp, dtype="float64", rtol=RTOL, atol=1e-15)
    assert_close(dLdZ, z.grad.numpy(), xp=xp, dtype="float64", rtol=1e-11, atol=1e-15)
    if cls is not Softmax:  # elementwise dA/dZ equals the gradient of sum(A)
        z2 = t(Z, grad=True)
        TORCH_ACTIVATIONS[cls](z2).sum().backward()
        assert_close(f.backward(), z2.grad.numpy(), xp=xp, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
def test_mse(xp, device, seed):
    rng, N, C = shapes(seed)
    A, Y = rng.standard_normal((N, C)), rng.standard_normal((N, C))
    loss = MSELoss()
    L = loss.forward(asarray(xp, device, A), asarray(xp, device, Y))
    a = t(A, grad=True)
    ref = F.mse_loss(a, t(Y))
    ref.backward()
    assert_close(L, ref.item(), xp=xp, dtype="float64", rtol=RTOL)
    assert_close(loss.backward(), a.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", ["one-hot", "soft", "labels"])
def test_cross_entropy(xp, device, seed, target):
    rng, N, C = shapes(seed)
    A = rng.standard_normal((N, C)) * 4
    labels = rng.integers(0, C, N)
    if target == "labels":
        Y, torch_target = asarray(xp, device, labels, dtype="int64"), torch.tensor(labels)
    else:
        P = np.eye(C)[labels] if target == "one-hot" else rng.dirichlet(np.ones(C), N)
        Y, torch_target = asarray(xp, device, P), t(P)
    loss = CrossEntropyLoss()
    L = loss.forward(asarray(xp, device, A), Y)
    a = t(A, grad=True)
    ref = F.cross_entropy(a, torch_target)
    ref.backward()
    assert L.ndim == 0
    assert_close(L, ref.item(), xp=xp, dtype="float64", rtol=RTOL, atol=1e-15)
    assert_close(loss.backward(), a.grad.numpy(), xp=xp, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("seed", SEEDS)
def test_linear(xp, device, seed):
    rng, N, C_in = shapes(seed)
    C_out = int(rng.integers(1, 10))
    layer = Linear(C_in, C_out, xp=xp, device=device, dtype="float64", seed=seed)
    A = rng.standard_normal((N, C_in))
    R = rng.standard_normal((N, C_out))
    Z = layer.forward(asarray(xp, device, A))
    dLdA = layer.backward(asarray(xp, device, R))

    W, b, a = t(to_numpy(layer.W), True), t(to_numpy(layer.b), True), t(A, True)
    z = F.linear(a, W, b[:, 0])
    (z * t(R)).sum().backward()
    assert_close(Z, z.detach().numpy(), xp=xp, dtype="float64", rtol=RTOL, atol=1e-15)
    assert_close(dLdA, a.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)
    assert_close(layer.dLdW, W.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)
    assert_close(layer.dLdb, b.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)
    assert tuple(layer.dLdb.shape) == (C_out, 1)


def _random_bn(xp, device, rng, C, alpha=0.9):
    bn = BatchNorm1d(C, alpha=alpha, xp=xp, device=device, dtype="float64")
    bn.BW = asarray(xp, device, rng.standard_normal((1, C)))
    bn.Bb = asarray(xp, device, rng.standard_normal((1, C)))
    return bn


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_train(xp, device, seed):
    rng, N, C = shapes(seed, min_n=2)
    bn = _random_bn(xp, device, rng, C)
    Z = rng.standard_normal((N, C)) * 2 + 1
    R = rng.standard_normal((N, C))
    BZ = bn.forward(asarray(xp, device, Z))
    dLdZ = bn.backward(asarray(xp, device, R))

    z, w, b = t(Z, True), t(to_numpy(bn.BW)[0], True), t(to_numpy(bn.Bb)[0], True)
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64)
    out = F.batch_norm(z, rm, rv, w, b, training=True, momentum=0.1, eps=1e-8)
    (out * t(R)).sum().backward()
    assert_close(BZ, out.detach().numpy(), xp=xp, dtype="float64", rtol=1e-11, atol=1e-12)
    assert_close(dLdZ, z.grad.numpy(), xp=xp, rtol=1e-9, atol=1e-10)
    assert_close(bn.dLdBW, w.grad.numpy()[None], xp=xp, rtol=1e-11, atol=1e-12)
    assert_close(bn.dLdBb, b.grad.numpy()[None], xp=xp, rtol=RTOL, atol=1e-13)
    assert_close(bn.running_M, rm.numpy()[None], xp=xp, rtol=RTOL, atol=1e-15)
    # PyTorch keeps the unbiased variance; xpnet the biased one, as the handout does.
    assert_close(bn.running_V, 0.9 + 0.1 * Z.var(axis=0)[None], xp=xp, rtol=RTOL)
    assert_close(bn.V, Z.var(axis=0)[None], xp=xp, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_eval(xp, device, seed):
    rng, N, C = shapes(seed)
    bn = _random_bn(xp, device, rng, C).eval()
    mean, var = rng.standard_normal((1, C)), rng.uniform(0.5, 2.0, (1, C))
    bn.running_M, bn.running_V = asarray(xp, device, mean), asarray(xp, device, var)
    Z, R = rng.standard_normal((N, C)), rng.standard_normal((N, C))
    BZ = bn.forward(asarray(xp, device, Z))
    dLdZ = bn.backward(asarray(xp, device, R))

    z, w, b = t(Z, True), t(to_numpy(bn.BW)[0], True), t(to_numpy(bn.Bb)[0], True)
    rm, rv = t(mean[0]), t(var[0])
    out = F.batch_norm(z, rm, rv, w, b, training=False, eps=1e-8)
    (out * t(R)).sum().backward()
    assert_close(BZ, out.detach().numpy(), xp=xp, dtype="float64", rtol=1e-11, atol=1e-14)
    assert_close(dLdZ, z.grad.numpy(), xp=xp, rtol=1e-11, atol=1e-14)
    assert_close(bn.dLdBW, w.grad.numpy()[None], xp=xp, rtol=1e-11, atol=1e-14)
    assert_close(bn.running_M, mean, xp=xp, rtol=0, atol=0)  # untouched
    assert_close(bn.running_V, var, xp=xp, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [MLP0, MLP1, MLP4], ids=lambda c: c.__name__)
@pytest.mark.parametrize("seed", SEEDS)
def test_handout_mlps(xp, device, cls, seed):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(1, 10))
    model = cls(xp=xp, device=device, dtype="float64", seed=seed)
    ref = torch_copy(model)
    A0 = rng.standard_normal((N, 2))
    out = model.forward(asarray(xp, device, A0))
    R = rng.standard_normal(tuple(out.shape))
    dLdA0 = model.backward(asarray(xp, device, R))

    a0 = t(A0, True)
    o = ref(a0)
    (o * t(R)).sum().backward()
    assert_close(out, o.detach().numpy(), xp=xp, dtype="float64", rtol=RTOL, atol=1e-15)
    assert_close(dLdA0, a0.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)
    linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
    for layer, lin in zip(model.layers, linears, strict=True):
        assert_close(layer.dLdW, lin.weight.grad.numpy(), xp=xp, rtol=RTOL, atol=1e-15)
        assert_close(layer.dLdb, lin.bias.grad.numpy()[:, None], xp=xp, rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu"])
def test_mlp_with_batchnorm_gradients(xp, device, activation):
    rng = np.random.default_rng(7)
    model = MLP(
        [5, 7, 6, 3],
        activation=activation,
        batchnorm=True,
        xp=xp,
        device=device,
        dtype="float64",
        seed=3,
    )
    ref = torch_copy(model)
    X = rng.standard_normal((8, 5))
    y = rng.integers(0, 3, 8)
    loss = CrossEntropyLoss()
    L = loss.forward(model.forward(asarray(xp, device, X)), asarray(xp, device, y, "int64"))
    dX = model.backward(loss.backward())
    x = t(X, True)
    ref_L = F.cross_entropy(ref(x), torch.tensor(y))
    ref_L.backward()
    assert_close(L, ref_L.item(), xp=xp, rtol=RTOL)
    assert_close(dX, x.grad.numpy(), xp=xp, rtol=1e-9, atol=1e-14)
    bns = [m for m in ref if isinstance(m, torch.nn.BatchNorm1d)]
    for bn, tbn in zip(model.bn_layers, bns, strict=True):
        assert_close(bn.dLdBW, tbn.weight.grad.numpy()[None], xp=xp, rtol=1e-9, atol=1e-14)
        assert_close(bn.dLdBb, tbn.bias.grad.numpy()[None], xp=xp, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize(
    ("momentum", "weight_decay", "nesterov"),
    [(0.9, 0.0, False), (0.9, 1e-2, True)],
    ids=["momentum", "nesterov+weight-decay"],
)
def test_ten_sgd_steps_match_torch(xp, device, momentum, weight_decay, nesterov):
    """10 steps of an MLP with BatchNorm: the same losses and parameters as torch.nn +
    torch.optim.SGD to 1e-8 relative."""
    rng = np.random.default_rng(11)
    model = MLP([6, 9, 7, 4], batchnorm=True, xp=xp, device=device, dtype="float64", seed=5)
    ref = torch_copy(model)
    opt = SGD(model, lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    ref_opt = torch.optim.SGD(
        ref.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    ref_bns = [m for m in ref if isinstance(m, torch.nn.BatchNorm1d)]
    by_hand_V = [np.ones(bn.num_features) for bn in ref_bns]

    def track(i):
        def hook(module, inputs):
            var = inputs[0].detach().numpy().var(axis=0)  # biased
            by_hand_V[i] = 0.9 * by_hand_V[i] + 0.1 * var

        return hook

    for i, bn in enumerate(ref_bns):
        bn.register_forward_pre_hook(track(i))
    loss = CrossEntropyLoss()
    for _ in range(10):
        X, y = rng.standard_normal((16, 6)), rng.integers(0, 4, 16)
        L = loss.forward(model.forward(asarray(xp, device, X)), asarray(xp, device, y, "int64"))
        model.backward(loss.backward())
        opt.step()
        ref_opt.zero_grad()
        ref_L = F.cross_entropy(ref(t(X)), torch.tensor(y))
        ref_L.backward()
        ref_opt.step()
        assert_close(L, ref_L.item(), xp=xp, rtol=1e-8, atol=0)

    linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
    for layer, lin in zip(model.layers, linears, strict=True):
        assert_close(layer.W, lin.weight.detach().numpy(), xp=xp, rtol=1e-8, atol=1e-12)
        assert_close(layer.b, lin.bias.detach().numpy()[:, None], xp=xp, rtol=1e-8, atol=1e-12)
    for bn, tbn, V in zip(model.bn_layers, ref_bns, by_hand_V, strict=True):
        assert_close(bn.BW, tbn.weight.detach().numpy()[None], xp=xp, rtol=1e-8, atol=1e-12)
        assert_close(bn.Bb, tbn.bias.detach().numpy()[None], xp=xp, rtol=1e-8, atol=1e-12)
        assert_close(bn.running_M, tbn.running_mean.numpy()[None], xp=xp, rtol=1e-8, atol=1e-12)
        assert_close(bn.running_V, V[None], xp=xp, rtol=1e-8, atol=1e-12)
