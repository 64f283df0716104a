"""The fused kernels compute what the Array API code they replace computes.

On CuPy (the GPU check) the real kernels run against the same modules with
``backend.use_fused(False)``. In the NumPy session the same kernel source runs on the CPU
(``tests/cuda_emulation.py``: compiled as C++, one host thread per CUDA thread), through
the unchanged ``CupyFused``, against NumPy's own array code. Other sessions skip: their
arrays are neither CuPy's nor NumPy's.

Element-wise kernels do the array code's operations in its order without fused
multiply-adds: on the GPU they round as the array code does, on the CPU they differ only
by the C library's ``exp``/``tanh``/``erfc`` against NumPy's. Reductions add in another
order. The tolerances say which is which.
"""

from __future__ import annotations

import contextlib
import types
from pathlib import Path

import numpy as np
import pytest

import xpnet
from tests.helpers import rst_python_blocks, to_numpy
from xpnet import backend
from xpnet.errors import XpnetValueError
from xpnet.executors import make_step
from xpnet.fused import FUSED_ACTIVATIONS, FusedPlan
from xpnet.models import MLP
from xpnet.nn import GELU, BatchNorm1d, CrossEntropyLoss, Identity, ReLU, Sigmoid, Tanh
from xpnet.optim import SGD
from xpnet.step import Step

from . import cuda_emulation

KINDS = {"identity": Identity, "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU}
#: relative tolerance: element-wise (libm against NumPy on the CPU) and after reductions
ELEMENTWISE = {"float32": 2e-6, "float64": 1e-13}
REDUCED = {"float32": 2e-5, "float64": 1e-12}


@pytest.fixture
def fused_case(xp, device, monkeypatch):
    """(ops, generic): the fused kernels for ``xp`` and a context for the array code."""
    lib = backend.library_name(xp)
    if lib == "cupy":
        ops = backend.fused(xp)
        assert ops is not None, "CuPy has fused kernels"
        return ops, lambda: backend.use_fused(False)
    if lib != "numpy":
        pytest.skip(f"{lib}: the emulated kernels take NumPy arrays (the numpy session)")
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler to run the kernels on the CPU")
    assert backend.fused(xp) is None  # NumPy has none of its own
    ops = backend.CupyFused(cupy=cuda_emulation.emulated_cupy())
    return ops, contextlib.nullcontext


def _arrays(xp, device, dtype, *shapes, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    host = [scale * rng.standard_normal(shape) for shape in shapes]
    return [xp.asarray(h.astype(dtype), device=device) for h in host]


def _close(got, want, rtol, what):
    got, want = to_numpy(got), to_numpy(want)
    assert got.shape == want.shape, what
    scale = max(float(np.max(np.abs(want))), 1e-30)
    worst = float(np.max(np.abs(got - want))) / scale
    assert worst <= rtol, f"{what}: {worst:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_bias_activation_and_its_backward(fused_case, xp, device, kind, dtype):
    ops, generic = fused_case
    Z, b, G = _arrays(xp, device, dtype, (37, 19), (19, 1), (37, 19))
    tol = ELEMENTWISE[dtype]
    with generic():
        reference = KINDS[kind]()
        want = reference.forward_unchecked(Z + b.T, xp)
        want_grad = reference.backward_unchecked(G, xp)
    got = ops.bias_activation(Z, b, kind)
    _close(got["A"], want, tol, f"{kind} forward")
    if kind == "gelu":
        _close(got["Z"], reference.Z, tol, "gelu's cached Z")
        _close(got["cdf"], reference.cdf, tol, "gelu's cached cdf")
    if kind != "identity":
        got_grad = ops.activation_backward(kind, G, **{k: got.get(k) for k in ("A", "Z", "cdf")})
        _close(got_grad, want_grad, tol, f"{kind} backward")
    # without a bias, of any shape; NaN stays NaN (the training loop's guard needs it)
    nan = xp.asarray(np.array([[np.nan, -1.0, 0.0, 3.0]], dtype=dtype), device=device)
    out = to_numpy(ops.bias_activation(nan, None, kind)["A"])
    assert np.isnan(out[0, 0]) and np.all(np.isfinite(out[0, 1:])), (kind, out)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(50, 70), (7, 3), (300, 33)])
def test_batchnorm_forward_and_backward(fused_case, xp, device, shape, dtype):
    ops, generic = fused_case
    C = shape[1]
    Z, G = _arrays(xp, device, dtype, shape, shape, seed=1)
    Z = Z + 5.0  # statistics away from zero
    with generic():
        bn = BatchNorm1d(C, xp=xp, device=device, dtype=dtype)
        bn.BW = bn.BW * 1.5
        bn.Bb = bn.Bb - 0.25
        out = bn.forward_unchecked(Z, xp)
        dZ = bn.backward_unchecked(G, xp)
    running_M = xp.zeros((1, C), dtype=Z.dtype, device=device)
    running_V = xp.ones((1, C), dtype=Z.dtype, device=device)
    got = ops.batchnorm_forward(Z, bn.BW, bn.Bb, running_M, running_V, bn.alpha, bn.eps)
    tol = REDUCED[dtype]
    for name, want in [("M", bn.M), ("V", bn.V), ("NZ", bn.NZ), ("BZ", out)]:
        _close(got[name], want, tol, f"BatchNorm {name}")
    _close(running_M, bn.running_M, tol, "running mean (updated in place)")
    _close(running_V, bn.running_V, tol, "running variance (updated in place)")
    got_dZ, got_dBW, got_dBb = ops.batchnorm_backward(G, got["NZ"], bn.BW, got["inv_std"])
    _close(got_dBW, bn.dLdBW, tol, "dLdBW")
    _close(got_dBb, bn.dLdBb, tol, "dLdBb")
    _close(got_dZ, dZ, tol * 10, "dLdZ")  # a difference of sums of N terms


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("shape", [(1000, 3), (300, 70), (37, 19), (0, 4)])
def test_activation_backward_with_sums_is_the_two_kernels_bit_for_bit(
    fused_case, xp, device, kind, shape
):
    """The activation's backward and the bias gradient in one pass give exactly what the
    two kernels give one after the other (the same sums, in the same order)."""
    ops, _ = fused_case
    Z, G = _arrays(xp, device, "float32", shape, shape, seed=13)
    caches = ops.bias_activation(Z, None, kind)
    if kind == "gelu":  # its backward reads Z and Φ(Z), not A
        del caches["A"]
    dZ, sums = ops.activation_backward_with_sums(kind, G, **caches)
    want = ops.activation_backward(kind, G, **caches)
    np.testing.assert_array_equal(to_numpy(dZ), to_numpy(want))
    assert sums.shape == (1, shape[1])
    np.testing.assert_array_equal(to_numpy(sums), to_numpy(ops.column_sums(want)))


@pytest.mark.parametrize("kind", ["identity", "relu", "sigmoid", "tanh", "gelu"])
@pytest.mark.parametrize("shape", [(700, 37), (200, 70)], ids=["11-chunks", "one-chunk"])
def test_batchnorm_backward_activated_is_the_three_kernels_bit_for_bit(
    fused_case, xp, device, kind, shape
):
    """BatchNorm's backward with the activation's folded in and the bias gradient of the
    layer before summed on the way: what the separate kernels give, bit for bit."""
    ops, _ = fused_case
    C = shape[1]
    Z, G, BW, Bb = _arrays(xp, device, "float32", shape, shape, (1, C), (1, C), seed=14)
    running = [xp.zeros((1, C), dtype=xp.float32, device=device) for _ in range(2)]
    out = ops.batchnorm_forward(Z, BW, Bb, *running, 0.9, 1e-5, activation=kind)
    caches = {"A": out["A"]} if kind != "gelu" else {"Z": out["Z"], "cdf": out["cdf"]}
    got = ops.batchnorm_backward_activated(kind, G, out["NZ"], BW, out["inv_std"], **caches)
    dBZ = G if kind == "identity" else ops.activation_backward(kind, G, **caches)
    dZ, dBW, dBb = ops.batchnorm_backward(dBZ, out["NZ"], BW, out["inv_std"])
    for name, a, b in zip(
        ("dLdZ", "dLdBW", "dLdBb", "bias sums"), got, (dZ, dBW, dBb, ops.column_sums(dZ)),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1000, 3), (300, 33), (2, 70), (0, 5)])
def test_column_sums_equal_the_array_code(fused_case, xp, device, shape, dtype):
    """A layer's bias gradient: chunks of rows summed apart, then in order (1000 rows of 3
    columns take 16 chunks; 70 columns, three blocks of 32; up to 256 rows, one chunk)."""
    ops, generic = fused_case
    (X,) = _arrays(xp, device, dtype, shape, seed=8)
    X = X + 3.0
    with generic():
        want = xp.sum(X, axis=0, keepdims=True)
    got = ops.column_sums(X)
    assert got.shape == (1, shape[1])
    _close(got, want, REDUCED[dtype], "column sums")


@pytest.mark.parametrize("N", [3, 200, 5000])
def test_batchnorm_statistics_keep_their_precision_under_a_large_mean(fused_case, xp, device, N):
    """One pass over the rows for the mean and the variance, no sum of squares, and values
    shifted by their column's first: float32 columns of mean 1e4 and spreads from 2 to
    0.01 give the variance of float64 to 1e-6 (a one-pass sum of squares would lose it all,
    1e8 - 1e8 in float32; unshifted running means lose 2% at the 0.01 spread; the array
    code's two passes lose up to 4e-5 to their mean's rounding)."""
    ops, _ = fused_case
    rng = np.random.default_rng(12)
    host = (1e4 + rng.standard_normal((N, 5)) * np.array([1.0, 0.5, 2.0, 1e-2, 0.0])).astype(
        np.float32
    )
    want_M, want_V = host.astype(np.float64).mean(axis=0), host.astype(np.float64).var(axis=0)
    BW, Bb, running_M = (xp.zeros((1, 5), dtype=xp.float32, device=device) for _ in range(3))
    running_V = xp.ones((1, 5), dtype=xp.float32, device=device)
    out = ops.batchnorm_forward(
        xp.asarray(host, device=device), BW + 1.0, Bb, running_M, running_V, 0.9, 1e-8
    )
    np.testing.assert_allclose(to_numpy(out["M"])[0], want_M, rtol=1e-7)  # 1e4: an ulp is 1e-3
    np.testing.assert_allclose(to_numpy(out["V"])[0], want_V, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["relu", "gelu", "tanh", "identity"])
@pytest.mark.parametrize("N", [700, 200], ids=["11-chunks", "one-chunk"])
def test_batchnorm_with_bias_and_activation(fused_case, xp, device, N, kind, dtype):
    """A Linear layer's bias, BatchNorm and the activation after it in one pass (the fused
    plan's path) equal the three modules' array code one after another: with the
    statistics' sums in chunks, and in one launch each; and backward too."""
    ops, generic = fused_case
    C = 37
    Z, b, G = _arrays(xp, device, dtype, (N, C), (C, 1), (N, C), seed=9)
    b = 4.0 * b  # a bias the statistics must see
    with generic():
        bn, f = BatchNorm1d(C, xp=xp, device=device, dtype=dtype), KINDS[kind]()
        bn.BW, bn.Bb = bn.BW * 1.5, bn.Bb - 0.25
        A = f.forward_unchecked(bn.forward_unchecked(Z + b.T, xp), xp)
        want_dZ = bn.backward_unchecked(f.backward_unchecked(G, xp), xp)
    running_M = xp.zeros((1, C), dtype=Z.dtype, device=device)
    running_V = xp.ones((1, C), dtype=Z.dtype, device=device)
    out = ops.batchnorm_forward(
        Z, bn.BW, bn.Bb, running_M, running_V, bn.alpha, bn.eps, bias=b, activation=kind
    )
    tol = REDUCED[dtype]
    _close(out["A"], A, tol, f"{kind} of BatchNorm")
    for name in ("NZ", "M", "V"):
        _close(out[name], getattr(bn, name), tol, f"BatchNorm {name}")
    _close(running_M, bn.running_M, tol, "running mean")
    _close(running_V, bn.running_V, tol, "running variance")
    assert "BZ" not in out  # BatchNorm's output is not written out ...
    if kind == "gelu":  # ... unless the activation keeps it
        _close(out["Z"], bn.BZ, tol, "BZ")
    caches = {k: out[k] for k in KINDS[kind].declared_caches}
    dZ, dBW, dBb, sums = ops.batchnorm_backward_activated(
        kind, G, out["NZ"], bn.BW, out["inv_std"], **caches
    )
    _close(dZ, want_dZ, tol * 10, "dLdZ")  # a difference of sums of N terms
    _close(dBW, bn.dLdBW, tol, "dLdBW")
    _close(dBb, bn.dLdBb, tol, "dLdBb")
    # the sums of dLdZ are zero but for rounding (BatchNorm's gradient is centred), so they
    # are compared bit for bit with the separate kernels' (the test above), not here
    assert sums.shape == (1, C)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(23, 10), (5, 300), (64, 1)])
def test_cross_entropy_and_its_gradient(fused_case, xp, device, shape, dtype):
    ops, generic = fused_case
    N, C = shape
    (A,) = _arrays(xp, device, dtype, shape, seed=2, scale=4.0)
    labels = xp.asarray(np.random.default_rng(3).integers(0, C, N), device=device)
    with generic():
        loss = CrossEntropyLoss()
        want = loss.forward(A, labels)
        want_grad = loss.backward()
    got, softmax, grad = ops.cross_entropy(A, labels)
    tol = REDUCED[dtype]
    _close(got, want, tol, "loss")
    _close(softmax, loss.softmax, tol, "softmax")
    _close(grad, want_grad, tol, "gradient")
    with generic():  # the gradient is the array code's formula on the kernel's softmax
        onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.arange(C, device=device), A.dtype)
        exact = (softmax - onehot) / N
    np.testing.assert_array_equal(to_numpy(grad), to_numpy(exact))
    bad = np.array(to_numpy(A))
    bad[N // 2, 0] = np.nan
    value, _, _ = ops.cross_entropy(xp.asarray(bad, device=device), labels)
    assert np.isnan(float(to_numpy(value)))


def _sgd_array_code(xp, P, V, g, lr, momentum, weight_decay, nesterov):
    """The array code of SGD's flat update, step by step, in place on ``P`` and ``V``."""
    g = xp.asarray(g, copy=True)
    if weight_decay:
        g += weight_decay * P
    if momentum:
        V *= momentum
        V += g
        g = g + momentum * V if nesterov else V
    P -= lr * g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "options",
    [
        {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
        {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False},
        {"momentum": 0.9, "weight_decay": 1e-2, "nesterov": True},
        {"momentum": 0.0, "weight_decay": 1e-3, "nesterov": False},
    ],
    ids=["plain", "momentum", "nesterov+wd", "wd"],
)
def test_sgd_update_is_bit_identical(fused_case, xp, device, options, dtype):
    ops, generic = fused_case
    P, V, g = _arrays(xp, device, dtype, (1000,), (1000,), (1000,), seed=4)
    P2, V2 = xp.asarray(P, copy=True), xp.asarray(V, copy=True)
    ops.sgd_update_group(P, V, [g], lr=0.05, **options)
    with generic():
        _sgd_array_code(xp, P2, V2, g, lr=0.05, **options)
    np.testing.assert_array_equal(to_numpy(P), to_numpy(P2))
    np.testing.assert_array_equal(to_numpy(V), to_numpy(V2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_update_of_many_parameters_is_bit_identical(fused_case, xp, device, nesterov, dtype):
    # 11 parameters: two launches (8 + 3), an empty one, 2-d gradients and a (C, 1) bias
    ops, generic = fused_case
    shapes = [(7, 5), (5, 1), (300,), (0,), (3, 3), (1,), (64, 2), (2, 1), (9,), (4, 4), (33,)]
    grads = _arrays(xp, device, dtype, *shapes, seed=5)
    grads[1] = xp.asarray(np.ascontiguousarray(to_numpy(grads[1]).T), device=device).T  # a view
    n = sum(int(np.prod(s)) for s in shapes)
    P, V = _arrays(xp, device, dtype, (n,), (n,), seed=6)
    P2, V2 = xp.asarray(P, copy=True), xp.asarray(V, copy=True)
    options = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2, "nesterov": nesterov}
    ops.sgd_update_group(P, V, grads, **options)
    with generic():  # the array code on the gradients laid end to end
        _sgd_array_code(xp, P2, V2, xp.concat([xp.reshape(g, (-1,)) for g in grads]), **options)
    np.testing.assert_array_equal(to_numpy(P), to_numpy(P2))
    np.testing.assert_array_equal(to_numpy(V), to_numpy(V2))
    with pytest.raises(ValueError, match="12 values in all for 13 parameters"):
        ops.sgd_update_group(P[:13], V[:13], [grads[2][:3], grads[8]], **options)
    other = "float64" if dtype == "float32" else "float32"
    with pytest.raises(ValueError, match="of the parameters'"):
        ops.sgd_update_group(P[:12], V[:12], [grads[2][:3], xp.astype(grads[8], other)], **options)


@pytest.fixture
def plan_case(fused_case, xp, monkeypatch):
    """(ops, generic): as ``fused_case``, with :func:`xpnet.executors.make_step` choosing the
    fused plan on NumPy too (over the emulated kernels)."""
    ops, generic = fused_case
    if backend.library_name(xp) == "numpy":
        monkeypatch.setattr(xpnet.backend, "fused", lambda _: ops)
    return ops, generic


def test_sgd_with_kernels_names_a_gradient_of_the_wrong_shape(plan_case, xp, device):
    """The kernel places each gradient by its size; one of the right size and the wrong
    shape (a transposed dLdW) would update the wrong elements, so it is refused."""
    model = MLP([6, 9, 4], xp=xp, device=device, seed=2)
    step = make_step(model, CrossEntropyLoss(), SGD(model, lr=0.1, momentum=0.9))
    assert isinstance(step, FusedPlan)
    for layer in model.layers:
        layer.dLdW, layer.dLdb = xp.ones_like(layer.W), xp.ones_like(layer.b)
    step.update()
    model.layers[1].dLdW = xp.ones_like(model.layers[1].W.T)
    with pytest.raises(XpnetValueError, match=r"layers\.1\.W has shape \(9, 4\)"):
        step.update()


def _prelu():
    """The tutorial's own layer (docs/tutorials/new-layer.rst), as a reader writes it."""
    namespace: dict = {"__name__": "new_layer_tutorial"}
    page = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "new-layer.rst"
    exec(rst_python_blocks(page)[0], namespace)
    return namespace["PReLU"]


def _model(xp, device, activation, batchnorm, dropout=0.0):
    """An MLP of the plan's chain; ``"prelu"`` puts the tutorial's PReLU in the hidden
    layers, a module the plan does not know."""
    model = MLP([12, 16, 9, 5], activation="relu" if activation == "prelu" else activation,
                batchnorm=batchnorm, dropout=dropout, xp=xp, device=device, dtype="float64",
                seed=7)  # fmt: skip
    if activation == "prelu":
        PReLU = _prelu()
        for i, width in enumerate((16, 9)):
            model.f[i] = PReLU(width, init=0.1 * (i + 1), xp=xp, device=device, dtype="float64")
    return model


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu", "sigmoid", "identity", "prelu"])
def test_the_fused_plan_trains_as_the_array_code(plan_case, xp, device, activation, batchnorm):
    """make_step gives the plan where the library has kernels; six of its steps (loss,
    gradients with respect to the input, parameters) equal the readable step's. A module
    the plan does not know (the tutorial's PReLU) runs its own code in its place."""
    X, _ = _arrays(xp, device, "float64", (40, 12), (1,), seed=5)
    y = xp.asarray(np.random.default_rng(6).integers(0, 5, 40), device=device)
    results = []
    for use in (False, True):
        model = _model(xp, device, activation, batchnorm)
        opt = SGD(model, lr=0.1, momentum=0.9, nesterov=True)
        step = (make_step if use else Step)(model, CrossEntropyLoss(), opt)
        assert isinstance(step, FusedPlan) == use
        losses, input_grads = [], []
        for _ in range(6):
            _, L = step.forward(X, y)
            losses.append(float(to_numpy(L)))
            input_grads.append(to_numpy(step.backward(input_grad=True)))
            step.update()
        assert (step.loss.Y is None) == use  # the fused loss keeps labels, not one-hot rows
        if use and batchnorm:  # Z + b is never written out
            assert model.bn_layers[0].Z is None and model.bn_layers[0].NZ is not None
        named = {k: to_numpy(v) for k, v in model.state_dict().items()}
        results.append((losses, input_grads, named))
    (plain_losses, plain_grads, plain), (fused_losses, fused_grads, fused_state) = results
    if activation == "prelu":
        assert "f.0.a" in plain and not np.array_equal(plain["f.0.a"][0], [0.1] * 16)
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-12)
    for k, (got, want) in enumerate(zip(fused_grads, plain_grads, strict=True)):
        _close(got, want, 1e-11, f"dLdX of step {k}")
    assert fused_state.keys() == plain.keys()
    for key, value in plain.items():  # atol: a BatchNorm shift before Identity stays at
        # zero but for rounding (the next layer's BatchNorm centres its gradient)
        np.testing.assert_allclose(fused_state[key], value, rtol=1e-11, atol=1e-15, err_msg=key)


def test_the_plan_follows_a_replaced_module_and_the_modes(plan_case, xp, device):
    """The plan is made again when a module of the chain is replaced, and runs the
    evaluation mode's BatchNorm (running statistics) as the model's own forward does."""
    X, _ = _arrays(xp, device, "float64", (30, 12), (1,), seed=3)
    y = xp.asarray(np.arange(30) % 5, device=device)
    model = _model(xp, device, "relu", batchnorm=True)
    step = make_step(model, CrossEntropyLoss(), SGD(model, lr=0.1))
    step(X, y)
    model.f[1] = _prelu()(9, xp=xp, device=device, dtype="float64")
    step.forward(X, y)
    assert model.f[1].Z is not None  # the new module ran, not the old ReLU
    model.eval()
    out, _ = step.forward(X, y)
    want = model.forward(X)  # the modules' own code
    _close(out, want, 1e-12, "evaluation output")


def test_what_chooses_the_step(xp, device, monkeypatch):
    """Only CuPy has kernels; they can be turned off; parameters of a dtype the kernels do
    not take get the readable step; a subclass of a fused activation runs its own code."""
    lib = backend.library_name(xp)
    assert (backend.fused(xp) is not None) == (lib == "cupy")
    with backend.use_fused(False):
        assert backend.fused(xp) is None
    model = MLP([3, 4, 2], xp=xp, device=device)
    plain = make_step(model, CrossEntropyLoss(), SGD(model))
    assert isinstance(plain, FusedPlan) == (lib == "cupy")
    refusing = types.SimpleNamespace(handles=lambda x: False)
    monkeypatch.setattr(xpnet.backend, "fused", lambda _: refusing)
    assert type(make_step(model, CrossEntropyLoss(), SGD(model))) is Step

    class Shifted(ReLU):
        def _activate(self, Z, xp):
            self.A = xp.maximum(Z, 0.0) + 1.0
            return self.A

    assert FUSED_ACTIVATIONS.get(Shifted) is None and FUSED_ACTIVATIONS[ReLU] == "relu"
    assert not any(
        name in vars(cls) for cls in FUSED_ACTIVATIONS for name in ("fused_kind", "_kind")
    )  # the activations themselves know nothing of the kernels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("C", [10, 300, 1])
def test_right_predictions_are_counted_as_argmax(fused_case, xp, device, C, dtype):
    """Ties go to the first largest value and NaN counts as the largest, as in argmax."""
    ops, generic = fused_case
    rng = np.random.default_rng(8)
    host = rng.integers(0, 4, (200, C)).astype(dtype)  # many ties
    host[3, C // 2] = np.nan
    host[5, :] = np.nan
    host[7, [C // 3, int(C * 0.87)]] = np.nan  # C=300: a later NaN in a lower thread
    labels = rng.integers(0, C, 200)
    labels[:40] = np.argmax(host[:40], axis=1)  # some right, whatever the ties
    A, y = xp.asarray(host, device=device), xp.asarray(labels, device=device)
    want = int(np.sum(np.argmax(host, axis=1) == labels))
    assert float(to_numpy(ops.count_correct(A, y))) == want >= 40
    # the array code's count agrees on rows without NaN (with several NaN in a row, CuPy's
    # argmax takes a later one than NumPy's: seen on the H100)
    finite = np.all(np.isfinite(host), axis=1)
    with generic():
        rows = to_numpy(xp.argmax(A, axis=1))
    np.testing.assert_array_equal(rows[finite], np.argmax(host, axis=1)[finite])


def test_gelu_takes_the_constants_of_the_array_code(fused_case, xp, device):
    """The kernel rounds ``z/√2`` as GELU does: with the module's own double constants.
    A constant one ulp apart (the correctly rounded 1/√2) moves erfc's tail by 3e-14."""
    import math

    from xpnet.backend import _fused
    from xpnet.nn import activation

    assert _fused.SQRT1_2 == activation._SQRT1_2 and _fused.INV_SQRT_2PI == activation._INV_SQRT_2PI
    assert _fused.SQRT1_2 != math.sqrt(0.5)  # the case this guards: they differ in the last bit
    ops, _ = fused_case
    z = np.linspace(-12, -6, 601)
    got = to_numpy(ops.bias_activation(xp.asarray(z, device=device), None, "gelu")["cdf"])
    # Python's erfc on the argument the array code forms, -(1/√2) * z
    want = np.array([0.5 * math.erfc((-activation._SQRT1_2) * v) for v in z])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("limit", ["default", "zero"])
def test_sgd_in_the_plan_is_flat_and_equals_the_array_code_bit_for_bit(
    plan_case, xp, device, monkeypatch, limit
):
    """The plan moves SGD to flat buffers for every model (one kernel per eight
    parameters), also above FLAT_LIMIT values, where SGD's own code updates parameter by
    parameter; both compute the same numbers."""
    from xpnet.optim import sgd

    if limit == "zero":
        monkeypatch.setattr(sgd, "FLAT_LIMIT", 0)
    grads = _arrays(xp, device, "float32", (9, 6), (9, 1), (4, 9), (4, 1), seed=9)
    states = []
    for use in (False, True):
        model = MLP([6, 9, 4], xp=xp, device=device, seed=2)
        opt = SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
        assert (opt._flat is not None) == (limit == "default")
        step = (make_step if use else Step)(model, CrossEntropyLoss(), opt)
        assert isinstance(step, FusedPlan) == use
        assert (opt._flat is not None) == (use or limit == "default")
        for _ in range(3):
            for layer, (gW, gb) in zip(model.layers, [grads[:2], grads[2:]], strict=True):
                layer.dLdW, layer.dLdb = gW, gb
            step.update()
        states.append({k: to_numpy(v) for k, v in model.state_dict().items()})
    for key, value in states[0].items():
        np.testing.assert_array_equal(states[1][key], value, err_msg=key)


def _launch_count():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "launch_count.py"
    spec = importlib.util.spec_from_file_location("launch_count", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("size", "sgd_launches", "one_chunk", "batchnorm"),
    [
        ("mnist-b128", 1, True, False),
        ("mnist-b4096", 1, False, False),
        ("wide+bn", 2, False, True),
    ],
)
def test_what_an_eager_cupy_step_launches(size, sgd_launches, one_chunk, batchnorm):
    """The launches the kernels above save: SGD in one kernel per eight parameters (6 and
    10 here), column reductions of a small batch in one launch, the bias gradient in the
    activation's backward, BatchNorm's statistics in one pass, and no CuPy arithmetic of
    its own in a step (``benchmarks/launch_count.py``'s counting stand-in)."""
    counts, _ = _launch_count().measure(size, steps=1)
    assert counts["kernel sgd_update_group"] == sgd_launches
    # two hidden layers: with BatchNorm, its backward takes in the activation's and the bias
    assert counts["kernel activation_backward_columns"] == (0 if batchnorm else 2)
    assert counts["kernel activation_backward"] == 0
    assert counts["kernel batchnorm_backward_columns"] == (2 if batchnorm else 0)
    assert counts["kernel column_moments"] == (2 if batchnorm else 0)
    assert counts["library kernel"] == 0
    assert (counts["kernel column_totals"] == 0) is one_chunk
    assert counts["product"] == 8  # 3 forward, 3 dLdW, 2 dLdA


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_cublas_products_arguments(dtype):
    """xpnet's own products pass row-major arrays to column-major cuBLAS through ctypes:
    here to a cuBLAS stand-in compiled for the CPU, for every transposition, against
    NumPy's ``@`` (the GPU check runs the real one through every training test)."""
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler to build the cuBLAS stand-in")
    from xpnet.backend._fused import _Cublas

    library, cupy = cuda_emulation.emulated_cublas()
    blas = _Cublas(library)
    rng = np.random.default_rng(11)
    M, K, N = 5, 7, 3

    def device(shape):
        return rng.standard_normal(shape).astype(dtype).view(cuda_emulation.DeviceArray)

    for trans_a in (False, True):
        for trans_b in (False, True):
            A = device((K, M) if trans_a else (M, K))
            B = device((N, K) if trans_b else (K, N))
            got = blas.gemm(cupy, A, B, trans_a, trans_b, False)
            want = (A.T if trans_a else A) @ (B.T if trans_b else B)
            assert got.shape == (M, N) and got.dtype == A.dtype
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=REDUCED[dtype])
    handle = blas._handles[0][0]
    blas.gemm(cupy, device((M, K)), device((K, N)), False, False, True)
    assert library.emulated_math_mode(handle) == (3 if dtype == "float32" else 0)  # TF32
    empty = blas.gemm(cupy, device((M, 0)), device((0, N)), False, False, False)
    np.testing.assert_array_equal(np.asarray(empty), np.zeros((M, N)))
    with pytest.raises(ValueError, match="do not match"):
        blas.gemm(cupy, device((M, K)), device((N, K)), False, False, False)
