"""Property-based tests: every component against PyTorch autograd in float64, on shapes
and values that hypothesis draws (a few hundred examples per component)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tests.helpers import asarray, assert_close
from xpnet.models import MLP
from xpnet.nn import (
    BatchNorm1d,
    CrossEntropyLoss,
    Linear,
    MSELoss,
)

torch = pytest.importorskip("torch")
from tests.torch_reference import TORCH_ACTIVATIONS, F, t, torch_copy  # noqa: E402

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def floats(bound=30.0):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def matrices(draw, min_rows=1, bound=30.0, columns=None):
    n = draw(st.integers(min_rows, 9))
    c = columns if columns is not None else draw(st.integers(1, 9))
    return draw(arrays(np.float64, (n, c), elements=floats(bound)))


def as_computed(values, xp, device):
    """``values`` as the library computes with them: XLA (JAX on CPU) flushes subnormal
    floats to zero in every operation, so the reference gets zeros there too."""
    tiny = np.finfo(np.float64).tiny
    flushes = not bool(asarray(xp, device, tiny / 4) > 0)
    return np.where(np.abs(values) < tiny, 0.0, values) if flushes else values


def close(actual, expected, xp, rtol=1e-10):
    """Relative to the largest reference value, so that near-zero entries compare sensibly."""
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    assert_close(actual, expected, xp=xp, dtype="float64", rtol=rtol, atol=1e-13 + rtol * scale)


@pytest.mark.parametrize("cls", list(TORCH_ACTIVATIONS), ids=lambda c: c.__name__)
@PROPERTY
@given(data=st.data())
def test_activation(xp, device, cls, data):
    Z = as_computed(data.draw(matrices()), xp, device)
    R = data.draw(arrays(np.float64, Z.shape, elements=floats(5)))
    f = cls()
    A = f.forward(asarray(xp, device, Z))
    dLdZ = f.backward(asarray(xp, device, R))
    z = t(Z, True)
    a = TORCH_ACTIVATIONS[cls](z)
    (a * t(R)).sum().backward()
    close(A, a.detach().numpy(), xp)
    close(dLdZ, z.grad.numpy(), xp, rtol=1e-9)


@PROPERTY
@given(data=st.data())
def test_mse(xp, device, data):
    A = data.draw(matrices())
    Y = data.draw(arrays(np.float64, A.shape, elements=floats()))
    loss = MSELoss()
    L = loss.forward(asarray(xp, device, A), asarray(xp, device, Y))
    a = t(A, True)
    ref = F.mse_loss(a, t(Y))
    ref.backward()
    close(L, ref.item(), xp)
    close(loss.backward(), a.grad.numpy(), xp)


@pytest.mark.parametrize("target", ["labels", "one-hot", "soft"])
@PROPERTY
@given(data=st.data())
def test_cross_entropy(xp, device, target, data):
    A = data.draw(matrices(bound=50.0))
    N, C = A.shape
    labels = np.asarray(data.draw(st.lists(st.integers(0, C - 1), min_size=N, max_size=N)))
    if target == "labels":
        Y, ref_target = asarray(xp, device, labels, "int64"), torch.tensor(labels)
    elif target == "one-hot":
        P = np.eye(C)[labels]
        Y, ref_target = asarray(xp, device, P), t(P)
    else:
        W = data.draw(arrays(np.float64, (N, C), elements=st.floats(0.01, 1.0)))
        P = W / W.sum(axis=1, keepdims=True)
        Y, ref_target = asarray(xp, device, P), t(P)
    loss = CrossEntropyLoss()
    L = loss.forward(asarray(xp, device, A), Y)
    a = t(A, True)
    ref = F.cross_entropy(a, ref_target)
    ref.backward()
    close(L, ref.item(), xp)
    close(loss.backward(), a.grad.numpy(), xp)


@PROPERTY
@given(data=st.data())
def test_linear(xp, device, data):
    A = data.draw(matrices())
    out = data.draw(st.integers(1, 9))
    layer = Linear(A.shape[1], out, xp=xp, device=device, dtype="float64", seed=0)
    W = data.draw(arrays(np.float64, (out, A.shape[1]), elements=floats(3)))
    b = data.draw(arrays(np.float64, (out, 1), elements=floats(3)))
    R = data.draw(arrays(np.float64, (A.shape[0], out), elements=floats(3)))
    layer.W, layer.b = asarray(xp, device, W), asarray(xp, device, b)
    Z = layer.forward(asarray(xp, device, A))
    dLdA = layer.backward(asarray(xp, device, R))
    tw, tb, ta = t(W, True), t(b[:, 0], True), t(A, True)
    z = F.linear(ta, tw, tb)
    (z * t(R)).sum().backward()
    close(Z, z.detach().numpy(), xp)
    close(dLdA, ta.grad.numpy(), xp)
    close(layer.dLdW, tw.grad.numpy(), xp)
    close(layer.dLdb, tb.grad.numpy()[:, None], xp)


@pytest.mark.parametrize("mode", ["train", "eval"])
@PROPERTY
@given(data=st.data())
def test_batchnorm(xp, device, mode, data):
    Z = data.draw(matrices(min_rows=2))
    N, C = Z.shape
    if mode == "train":
        # the gradient is ill-conditioned as the variance goes to zero (constant features
        # are covered by tests/test_reliability.py)
        assume(np.all(Z.var(axis=0) > 1e-2))
    BW = data.draw(arrays(np.float64, (1, C), elements=floats(3)))
    Bb = data.draw(arrays(np.float64, (1, C), elements=floats(3)))
    R = data.draw(arrays(np.float64, (N, C), elements=floats(3)))
    mean = data.draw(arrays(np.float64, (1, C), elements=floats(3)))
    var = data.draw(arrays(np.float64, (1, C), elements=st.floats(0.1, 10.0)))
    bn = BatchNorm1d(C, xp=xp, device=device, dtype="float64")
    bn.BW, bn.Bb = asarray(xp, device, BW), asarray(xp, device, Bb)
    bn.running_M, bn.running_V = asarray(xp, device, mean), asarray(xp, device, var)
    training = mode == "train"
    BZ = bn.forward(asarray(xp, device, Z), eval=not training)
    dLdZ = bn.backward(asarray(xp, device, R))
    z, w, b = t(Z, True), t(BW[0], True), t(Bb[0], True)
    rm, rv = t(mean[0]), t(var[0])
    out = F.batch_norm(z, rm, rv, w, b, training=training, momentum=0.1, eps=1e-8)
    (out * t(R)).sum().backward()
    close(BZ, out.detach().numpy(), xp, rtol=1e-9)
    close(dLdZ, z.grad.numpy(), xp, rtol=1e-8)
    close(bn.dLdBW, w.grad.numpy()[None], xp, rtol=1e-9)
    close(bn.dLdBb, b.grad.numpy()[None], xp)
    if training:
        close(bn.running_M, rm.numpy()[None], xp)
        close(bn.running_V, 0.9 * var + 0.1 * Z.var(axis=0)[None], xp)
    else:
        close(bn.running_V, var, xp, rtol=0)


@PROPERTY
@given(data=st.data())
def test_mlp_with_batchnorm(xp, device, data):
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    activation = data.draw(st.sampled_from(["relu", "sigmoid", "tanh", "gelu"]))
    X = data.draw(matrices(min_rows=2, bound=3.0, columns=sizes[0]))
    labels = np.asarray(
        data.draw(st.lists(st.integers(0, sizes[-1] - 1), min_size=X.shape[0], max_size=X.shape[0]))
    )
    model = MLP(
        sizes,
        activation=activation,
        batchnorm=True,
        xp=xp,
        device=device,
        dtype="float64",
        seed=data.draw(st.integers(0, 1000)),
    )
    ref = torch_copy(model)
    variances = []
    for module in ref:
        if isinstance(module, torch.nn.BatchNorm1d):
            module.register_forward_pre_hook(
                lambda _, inputs: variances.append(inputs[0].detach().numpy().var(axis=0))
            )
    x = t(X, True)
    ref_L = F.cross_entropy(ref(x), torch.tensor(labels))
    ref_L.backward()
    # BatchNorm's gradient is ill-conditioned for (near-)constant features
    assume(all(np.all(v > 1e-2) for v in variances))
    loss = CrossEntropyLoss()
    L = loss.forward(model.forward(asarray(xp, device, X)), asarray(xp, device, labels, "int64"))
    dX = model.backward(loss.backward())
    # inputs and weights are O(1): absolute differences below 1e-11 are rounding
    tol = {"xp": xp, "dtype": "float64", "rtol": 1e-7, "atol": 1e-11}
    assert_close(L, ref_L.item(), **tol)
    assert_close(dX, x.grad.numpy(), **tol)
    linears = [m for m in ref if isinstance(m, torch.nn.Linear)]
    for layer, lin in zip(model.layers, linears, strict=True):
        assert_close(layer.dLdW, lin.weight.grad.numpy(), **tol)
        assert_close(layer.dLdb, lin.bias.grad.numpy()[:, None], **tol)
