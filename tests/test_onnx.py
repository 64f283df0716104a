"""ONNX export: the graph passes onnx's full check, and ONNX Runtime on the CPU gives the
logits of the model's evaluation-mode forward (float32 within 1e-5 relative) for every
activation, BatchNorm, the handout's MLPs, and checkpoints trained on any backend."""

from __future__ import annotations

import sys
from typing import ClassVar

import numpy as np
import pytest

import xpnet
from tests.helpers import asarray, run_cli
from xpnet import backend, load, save
from xpnet.models import MLP, MLP0, MLP1, MLP4
from xpnet.nn import GELU, BatchNorm1d, CrossEntropyLoss, Identity, Linear, Module
from xpnet.optim import SGD

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import xpnet.onnx  # noqa: E402


def _run(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": X})


def _relative(got, expected):
    return float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30))


def _trained(model, xp=None, device=None, steps=3):
    """A few steps of training so that the running statistics are not the initial ones."""
    xp = model.xp if xp is None else xp
    rng = np.random.default_rng(0)
    opt, loss = SGD(model, lr=0.1, momentum=0.9), CrossEntropyLoss()
    dtype = backend.dtype_name(model.dtype)
    for _ in range(steps):
        X = asarray(xp, device, rng.standard_normal((16, model.sizes[0])), dtype)
        y = asarray(xp, device, rng.integers(0, model.sizes[-1], 16), "int64")
        loss.forward(model.forward(X), y)
        model.backward(loss.backward())
        opt.step()
    return model.eval()


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "identity"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_every_activation_matches_onnxruntime(tmp_path, activation, batchnorm):
    model = _trained(MLP([6, 9, 7, 4], activation=activation, batchnorm=batchnorm, seed=1))
    path = xpnet.onnx.export(model, tmp_path / "m.onnx", softmax=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    for n in (1, 7, 300):
        X = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
        logits, probabilities = _run(path, X)
        expected = model.forward(X)
        assert logits.dtype == np.float32 and logits.shape == (n, 4)
        assert _relative(logits, expected) <= 1e-5, (activation, n)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cls", [MLP0, MLP1, MLP4])
def test_handout_models(tmp_path, cls):
    model = cls(seed=3).eval()
    path = xpnet.onnx.export(model, tmp_path / "h.onnx")
    X = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    (logits,) = _run(path, X)
    assert _relative(logits, model.forward(X)) <= 1e-5


def test_float64_and_opset(tmp_path):
    model = _trained(MLP([5, 8, 3], batchnorm=True, activation="tanh", dtype="float64"))
    path = xpnet.onnx.export(model, tmp_path / "d.onnx", opset=20)
    assert onnx.load(path).opset_import[0].version == 20
    for opset in (17, 20):  # the IR version is the opset's own, so older runtimes load it
        proto = onnx.load(xpnet.onnx.export(model, tmp_path / f"o{opset}.onnx", opset=opset))
        want = onnx.helper.find_min_ir_version_for(proto.opset_import)
        assert proto.ir_version == want < onnx.IR_VERSION
    X = np.random.default_rng(1).standard_normal((9, 5))
    (logits,) = _run(path, X)
    assert logits.dtype == np.float64 and _relative(logits, model.forward(X)) <= 1e-12
    for opset in (13, 22):
        with pytest.raises(ValueError, match="opset must be an int from 15 to 21"):
            xpnet.onnx.export(model, tmp_path / "x.onnx", opset=opset)
    with pytest.raises(TypeError, match="expected an xpnet Module"):
        xpnet.onnx.export(object(), tmp_path / "x.onnx")


def test_checkpoint_trained_on_the_backend_under_test(tmp_path, xp, device):
    """Trained on xp (any backend), saved, exported from the checkpoint by the CLI."""
    model = MLP([6, 10, 3], batchnorm=True, activation="gelu", xp=xp, device=device, seed=4)
    _trained(model, xp, device)
    save(model, tmp_path / "m.safetensors")
    result = run_cli("export", tmp_path / "m.safetensors", tmp_path / "m.onnx", "--softmax")
    assert result.returncode == 0, result.stderr
    assert "outputs logits and probabilities" in result.stdout
    host = load(tmp_path / "m.safetensors")
    X = np.random.default_rng(2).standard_normal((300, 6)).astype(np.float32)
    logits, _ = _run(tmp_path / "m.onnx", X)
    assert _relative(logits, host.forward(X)) <= 1e-5


class _Swish(Module):
    """A layer the exporter has never heard of: ``A = Z sigmoid(beta Z)``, with a
    learned ``beta`` per feature, written against the Array API only."""

    declared_parameters: ClassVar[dict[str, str]] = {"beta": "dLdbeta"}

    def __init__(self, num_features, *, xp=None):
        xp = backend.get(xp)
        self.num_features = num_features
        self.beta = xp.linspace(0.5, 2.0, num_features, dtype=xp.float32)[None, :]
        self.dLdbeta = None

    def forward(self, Z):
        xp = backend.namespace(Z, self.beta)
        return self.forward_unchecked(Z, xp)

    def forward_unchecked(self, Z, xp):
        return Z / (1.0 + xp.exp(-self.beta * Z))


class _Net(Module):
    declared_children: ClassVar[tuple[str, ...]] = ("parts",)

    def __init__(self, tail):
        rng = backend.host_rng(5)
        self.parts = [Linear(6, 12, seed=rng), tail, Linear(12, 3, seed=rng)]

    def forward(self, X):
        xp = backend.namespace(X)
        for part in self.parts:
            X = part.forward_unchecked(X, xp)
        return X


class _Total(_Swish):
    """Returns one number per row, which is not the (N, K) a graph output must be."""

    def forward_unchecked(self, Z, xp):
        return xp.sum(Z, axis=1)


class _ShiftedLinear(Linear):
    """A subclass of a built-in layer with a forward of its own: traced as written."""

    def forward_unchecked(self, A, xp):
        return super().forward_unchecked(A, xp) + 1.0


@pytest.mark.parametrize("make", [_Swish, BatchNorm1d, GELU], ids=lambda c: c.__name__)
def test_a_layer_of_its_own_exports_through_the_trace(tmp_path, make):
    tail = make() if make is GELU else make(12)  # a new one per run: the test changes its mode
    if isinstance(tail, BatchNorm1d):  # running statistics that are not the initial ones
        tail.running_M = tail.running_M + 0.3
        tail.running_V = tail.running_V * 2.5
    net = _Net(tail)
    before = {k: np.array(v) for k, v in net.state_dict().items()}
    path = xpnet.onnx.export(net, tmp_path / "n.onnx", n_features=6, softmax=True)
    assert all(m.training for _, m in net.named_modules())  # the trace ran on a copy
    net.eval()
    for n in (1, 7, 300):
        X = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
        logits, probabilities = _run(path, X)
        assert _relative(logits, net.forward(X)) <= 1e-5, n
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    after = net.state_dict()
    assert all(type(v) is np.ndarray and np.array_equal(v, before[k]) for k, v in after.items())


def test_a_subclass_of_a_built_in_layer_is_traced_as_written(tmp_path):
    layer = _ShiftedLinear(4, 2, seed=1)
    path = xpnet.onnx.export(layer, tmp_path / "s.onnx")
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (out,) = _run(path, X)
    assert _relative(out, layer.forward(X)) <= 1e-6
    assert _relative(out, Linear.forward_unchecked(layer, X, np) + 1.0) <= 1e-6


def test_what_cannot_be_traced_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pass n_features, the input width; _Net does not state"):
        xpnet.onnx.export(_Net(GELU()), tmp_path / "x.onnx")
    with pytest.raises(TypeError, match=r"must return an \(N, K\) array"):
        xpnet.onnx.export(_Total(3), tmp_path / "x.onnx")


def test_the_graph_is_the_built_in_operators_under_their_names(tmp_path):
    """The forms of the built-in layers are what keeps the traced graph as small as a
    hand-built one (BENCHMARKS.md): one Gemm per Linear, a scale and a shift per
    BatchNorm, the activation's operator, the weights as initializers, the outputs
    computed under their own names (no Identity); and the names and shapes a runtime
    binds to."""
    model = MLP([4, 8, 8, 3], batchnorm=True, seed=1).eval()
    proto = onnx.load(xpnet.onnx.export(model, tmp_path / "m.onnx", softmax=True))
    graph = proto.graph
    layer = ["Gemm", "Mul", "Add", "Relu"]
    assert [n.op_type for n in graph.node] == [*layer, *layer, "Gemm", "Softmax"]
    assert len(graph.initializer) == 3 * 2 + 2 * 2  # W and b, the scale and the shift

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in graph.input] == [("input", ["N", 4])]
    assert [(v.name, dims(v)) for v in graph.output] == [
        ("logits", ["N", 3]),
        ("probabilities", ["N", 3]),
    ]
    assert (proto.producer_name, proto.producer_version) == ("xpnet", xpnet.__version__)
    assert graph.name == "xpnet_MLP"
    assert proto.doc_string == f"MLP({model.extra_repr()}) in evaluation mode"


def test_opsets_at_the_ends_of_the_range_and_options_of_other_types(tmp_path):
    model = MLP([3, 4, 2], seed=0).eval()
    X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    for opset in (15, 21):
        proto = onnx.load(xpnet.onnx.export(model, tmp_path / f"{opset}.onnx", opset=opset))
        assert proto.opset_import[0].version == opset
        (logits,) = _run(tmp_path / f"{opset}.onnx", X)
        assert _relative(logits, model.forward(X)) <= 1e-5
    for opset in (17.0, True, "17"):
        with pytest.raises(ValueError, match="opset must be an int from 15 to 21"):
            xpnet.onnx.export(model, tmp_path / "x.onnx", opset=opset)


class _Pair(_Swish):
    """Returns two arrays, which the graph's one output cannot be."""

    def forward_unchecked(self, Z, xp):
        return Z, Z


def test_refusals_name_what_they_got(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="expected an xpnet Module, got object"):
        xpnet.onnx.export(object(), tmp_path / "x.onnx")
    with pytest.raises(
        TypeError,
        match=r"_Total\.forward must return an \(N, K\) array, got Array of shape \(None,\)",
    ):
        xpnet.onnx.export(_Total(3), tmp_path / "x.onnx")
    with pytest.raises(
        TypeError, match=r"_Pair\.forward must return an \(N, K\) array, got tuple of shape None"
    ):
        xpnet.onnx.export(_Pair(3), tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as where onnx is not installed
    with pytest.raises(
        ModuleNotFoundError,
        match=r"^ONNX export needs the onnx package: pip install 'xpnet\[onnx\]'$",
    ):
        xpnet.onnx.export(MLP([3, 2]), tmp_path / "x.onnx")


def test_one_feature_and_a_module_without_arrays(tmp_path):
    """The smallest width there is, and a module with no parameters or buffers (its input
    is float32, xpnet's default dtype)."""
    X = np.random.default_rng(0).standard_normal((6, 1)).astype(np.float32)
    layer = Linear(1, 2, seed=0)
    (out,) = _run(xpnet.onnx.export(layer, tmp_path / "l.onnx"), X)
    assert _relative(out, layer.forward(X)) <= 1e-6
    (out,) = _run(xpnet.onnx.export(GELU(), tmp_path / "g.onnx", n_features=1), X)
    assert out.dtype == np.float32 and _relative(out, GELU().forward(X)) <= 1e-6


def test_an_output_that_is_the_input_keeps_its_copy(tmp_path):
    """The outputs are named where they are computed, except where an output is the
    input itself (an Identity model), which only a copy can name."""
    X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    path = xpnet.onnx.export(Identity(), tmp_path / "i.onnx", n_features=3, softmax=True)
    assert [n.op_type for n in onnx.load(path).graph.node] == ["Softmax", "Identity"]
    logits, probabilities = _run(path, X)
    np.testing.assert_array_equal(logits, X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_an_opset_the_converter_cannot_reach_is_refused(tmp_path, monkeypatch):
    def cannot(model, opset):
        raise RuntimeError(f"No Adapter From Version $16 for Identity (to {opset})")

    monkeypatch.setattr(onnx.version_converter, "convert_version", cannot)
    with pytest.raises(
        ValueError, match=r"cannot be written in opset 16 \(No Adapter.*\); use a later one"
    ):
        xpnet.onnx.export(MLP([3, 2]), tmp_path / "x.onnx", opset=16)
