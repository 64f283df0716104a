"""Input scaling inside the model: the Standardize layer, MLP(standardize=True), the
statistics that fill it, and every way a model is used afterwards (checkpoint, ONNX)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, assert_close
from tests.test_finite_differences import FD, numeric_gradient
from xpnet.backend import to_numpy
from xpnet.data import fixed_scaling, standard_scaling
from xpnet.errors import CallOrderError, XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss, Standardize


def _scaled_layer(xp, device, rng, width=3, dtype="float64"):
    layer = Standardize(width, xp=xp, device=device, dtype=dtype)
    layer.load_state_dict(
        {"mean": rng.standard_normal((1, width)) * 5, "scale": rng.uniform(0.5, 4, (1, width))}
    )
    return layer


def test_forward_is_the_formula(xp, device):
    rng = np.random.default_rng(0)
    layer = _scaled_layer(xp, device, rng)
    X = rng.standard_normal((4, 3)) * 10
    mean, scale = to_numpy(layer.mean), to_numpy(layer.scale)
    assert_close(layer.forward(asarray(xp, device, X)), (X - mean) / scale, xp=xp)


def test_gradient_against_finite_differences(xp, device):
    rng = np.random.default_rng(1)
    layer = _scaled_layer(xp, device, rng)
    X, R = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))

    def s(x):
        return float(np.sum(R * to_numpy(layer.forward(asarray(xp, device, x)))))

    num = numeric_gradient(s, X)
    layer.forward(asarray(xp, device, X))
    assert_close(layer.backward(asarray(xp, device, R)), num, xp=xp, **FD)


def test_gradient_against_torch(xp, device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    layer = _scaled_layer(xp, device, rng, width=4)
    X, R = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    Xt = torch.tensor(X, requires_grad=True)
    mean, scale = (torch.tensor(to_numpy(a)) for a in (layer.mean, layer.scale))
    ((Xt - mean) / scale * torch.tensor(R)).sum().backward()
    layer.forward(asarray(xp, device, X))
    assert_close(layer.backward(asarray(xp, device, R)), Xt.grad.numpy(), xp=xp)


@pytest.mark.parametrize(
    ("width", "error", "message"),
    [(0, ValueError, "must be positive, got 0"), (2.5, TypeError, "must be an int, got float")],
)
def test_a_bad_width_is_refused_by_name(width, error, message):
    with pytest.raises(error, match=rf"^Standardize: num_features {message}"):
        Standardize(width)


def test_backward_before_forward_and_wrong_width():
    layer = Standardize(3)
    with pytest.raises(CallOrderError):
        layer.backward(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(XpnetValueError, match="3"):
        layer.forward(np.ones((2, 4), dtype=np.float32))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_mlp_input_gradient_through_the_scaling(xp, device, batchnorm):
    rng = np.random.default_rng(3)
    model = MLP(
        [3, 5, 2],
        batchnorm=batchnorm,
        standardize=True,
        xp=xp,
        device=device,
        dtype="float64",
        seed=1,
    )
    model.standardize_layers[0].load_state_dict(
        {"mean": np.array([[1.0, -2.0, 30.0]]), "scale": np.array([[0.5, 2.0, 10.0]])}
    )
    X = rng.standard_normal((6, 3)) * [1, 2, 10] + [1, -2, 30]
    y = asarray(xp, device, [0, 1, 1, 0, 1, 0], "int64")
    loss = CrossEntropyLoss()

    def s(x):
        return float(loss.forward(model.forward(asarray(xp, device, x)), y))

    num = numeric_gradient(s, X)
    s(X)
    assert_close(model.backward(loss.backward()), num, xp=xp, **FD)


def test_scaled_model_equals_an_unscaled_one_on_scaled_inputs(xp, device):
    """The layer adds nothing but the scaling: same seed, same parameters, same outputs."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((8, 4)) * 7 + 3
    mean, scale = standard_scaling(X)
    scaled = MLP([4, 6, 3], standardize=True, xp=xp, device=device, dtype="float64", seed=5)
    scaled.standardize_layers[0].load_state_dict({"mean": mean, "scale": scale})
    plain = MLP([4, 6, 3], xp=xp, device=device, dtype="float64", seed=5)
    assert_close(
        scaled.forward(asarray(xp, device, X)),
        plain.forward(asarray(xp, device, (X - mean) / scale)),
        xp=xp,
    )
    assert [n for n, _ in scaled.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert list(scaled.state_dict())[:2] == [
        "standardize_layers.0.mean",
        "standardize_layers.0.scale",
    ]


def test_standard_scaling_is_scikit_learns():
    sklearn = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(6)
    X = rng.standard_normal((1000, 5)) * [1, 1e3, 1e-3, 0, 5] + [0, 1e4, -3, 7, 1]
    mean, scale = standard_scaling(X, block_rows=97)  # blocks that do not divide N
    reference = sklearn.StandardScaler().fit(X)
    np.testing.assert_allclose(mean[0], reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale[0], reference.scale_, rtol=1e-10)
    assert scale[0, 3] == 1.0  # the constant column


def test_fixed_scaling():
    mean, scale = fixed_scaling(3, 255)
    assert mean.tolist() == [[0.0, 0.0, 0.0]] and scale.tolist() == [[255.0, 255.0, 255.0]]


def test_checkpoint_keeps_the_scaling_and_its_hash_covers_it(tmp_path):
    import xpnet
    from xpnet.checkpoint import CheckpointError

    model = MLP([3, 4, 2], standardize=True, seed=0)
    model.standardize_layers[0].load_state_dict(
        {"mean": np.array([[1.0, 2.0, 3.0]]), "scale": np.array([[2.0, 4.0, 8.0]])}
    )
    path = xpnet.save(model.eval(), tmp_path / "m.safetensors")
    loaded = xpnet.load(path)
    assert loaded.standardize and loaded.config()["standardize"] is True
    X = np.random.default_rng(7).standard_normal((5, 3)).astype(np.float32) * 8
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))
    # the scale's bytes edited in place: the array hash refuses the file
    blob = bytearray(path.read_bytes())
    at = blob.rfind(np.float32(8.0).tobytes())
    blob[at : at + 4] = np.float32(9.0).tobytes()
    (tmp_path / "edited.safetensors").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        xpnet.load(tmp_path / "edited.safetensors")


def test_onnx_export_applies_the_scaling(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from xpnet.onnx import export

    model = MLP([3, 5, 2], batchnorm=True, standardize=True, seed=1)
    model.standardize_layers[0].load_state_dict(
        {"mean": np.array([[1.0, 200.0, -3.0]]), "scale": np.array([[2.0, 50.0, 0.1]])}
    )
    model.eval()
    path = export(model, tmp_path / "m.onnx")
    X = (np.random.default_rng(8).standard_normal((7, 3)) * [2, 50, 0.1] + [1, 200, -3]).astype(
        np.float32
    )
    (got,) = ort.InferenceSession(str(path)).run(None, {"input": X})
    np.testing.assert_allclose(got, model.forward(X), rtol=1e-5, atol=1e-5)
    plain = MLP([3, 5, 2], batchnorm=True, seed=1).eval()
    (unscaled,) = ort.InferenceSession(str(export(plain, tmp_path / "p.onnx"))).run(
        None, {"input": X}
    )
    assert not np.allclose(unscaled, got, atol=1e-3)  # the scaling is really in the graph
