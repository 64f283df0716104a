"""``xpnet train`` puts the input scaling into the model, so every later use of the
checkpoint takes the data as the files hold them; checkpoints of the format before that
are scaled as their training was, or said to need it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_cli
from xpnet._safetensors import assemble, decode, pack
from xpnet.data import load_digits

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _train(*args):
    result = run_cli("train", "--json", "--quiet", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _predicted(checkpoint, rows_file):
    result = run_cli("predict", checkpoint, rows_file)
    assert result.returncode == 0, result.stderr
    return [int(v) for v in result.stdout.split()]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, _train("--epochs", "8", "--out", out)


def test_raw_digits_rows_are_predicted_as_evaluate_scores_them(digits_run, tmp_path):
    """The test rows as the dataset stores them (0..16), through predict: the same
    accuracy as evaluate, which the checkpoint's own test split gives."""
    out, metrics = digits_run
    assert metrics["config"]["scale"] == "fixed"
    data = load_digits()
    np.savetxt(tmp_path / "raw.csv", data.X_test, delimiter=",", fmt="%g")
    predicted = np.array(_predicted(out / "model.safetensors", tmp_path / "raw.csv"))
    accuracy = float(np.mean(predicted == np.array(data.classes)[data.y_test]))
    assert accuracy == metrics["test_accuracy"] > 0.9
    # scikit-learn's own copy of the digits, raw: the first five rows are 0..4
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    np.savetxt(tmp_path / "five.csv", X[:5], delimiter=",", fmt="%g")
    assert _predicted(out / "model.safetensors", tmp_path / "five.csv") == y[:5].tolist()


def test_the_data_line_says_what_scaling_the_model_carries(tmp_path):
    result = run_cli("train", "--epochs", "1", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    assert "10 classes; inputs divided by 16 in the model" in result.stdout
    result = run_cli(
        "train", "--epochs", "1", "--scale", "standard", "--out", tmp_path / "s", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    result = run_cli("train", "--epochs", "1", "--scale", "none", "--out", tmp_path / "n")
    assert "inputs unscaled" in result.stdout
    assert "standardize" not in result.stdout  # no Standardize layer in the model line


def _csv(path, X, y):
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    return path


def test_a_raw_csv_is_standardised_by_default(tmp_path):
    X, y = sklearn_datasets.load_wine(return_X_y=True)
    metrics = _train("--dataset", _csv(tmp_path / "wine.csv", X, y), "--out", tmp_path / "r")
    assert metrics["config"]["scale"] == "standard"
    assert metrics["test_accuracy"] >= 0.95
    # the model's layer holds the training split's statistics, not the whole file's
    from xpnet import load

    layer = load(tmp_path / "r" / "model.safetensors").standardize_layers[0]
    assert np.all(np.asarray(layer.scale) > 0)
    assert not np.allclose(np.asarray(layer.mean)[0], X.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(layer.mean)[0], X.mean(axis=0), rtol=0.1)


def test_the_same_data_as_csv_and_npz_train_to_the_same_model(tmp_path):
    X, y = sklearn_datasets.load_breast_cancer(return_X_y=True)
    np.savez(tmp_path / "cancer.npz", X=X, y=y)
    from_npz = _train("--dataset", tmp_path / "cancer.npz", "--out", tmp_path / "a")
    from_csv = _train("--dataset", _csv(tmp_path / "cancer.csv", X, y), "--out", tmp_path / "b")
    assert from_csv["test_accuracy"] == from_npz["test_accuracy"] >= 0.95
    assert from_csv["test_loss"] == from_npz["test_loss"]


def _legacy_checkpoint(path):
    """A checkpoint as xpnet wrote it before models carried their scaling: format 1, the
    digits divided by 16 before the model saw them, no Standardize layer."""
    import xpnet
    from xpnet import checkpoint
    from xpnet.models import MLP
    from xpnet.nn import CrossEntropyLoss
    from xpnet.optim import SGD

    data = load_digits()
    model = MLP([64, 32, 10], seed=0)
    loss, opt = CrossEntropyLoss(), SGD(model, lr=0.1, momentum=0.9)
    X = (data.X_train / 16).astype(np.float32)
    for _ in range(20):
        for start in range(0, len(X), 64):
            loss.forward(model.forward(X[start : start + 64]), data.y_train[start : start + 64])
            model.backward(loss.backward())
            opt.step()
    model.eval()
    record = data.record()
    del record["input_scale"]
    user = {"dataset": "digits", "data": record, "classes": data.classes, "config": {"seed": 0}}
    saved, checkpoint.FORMAT = checkpoint.FORMAT, "xpnet-checkpoint/1"
    try:
        xpnet.save(model, path, probe=data.X_test[:8] / 16, metadata=user)
    finally:
        checkpoint.FORMAT = saved
    tensors, header, _ = decode(path.read_bytes())  # format 1 had no header checksum
    path.write_bytes(assemble(*pack(tensors), {"xpnet": header["xpnet"]}))
    logits = model.forward((data.X_test / 16).astype(np.float32))
    return float(np.mean(np.argmax(logits, axis=1) == data.y_test))


def test_a_checkpoint_of_the_old_format_is_never_silently_mis_scaled(tmp_path):
    path = tmp_path / "old.safetensors"
    accuracy = _legacy_checkpoint(path)
    assert accuracy > 0.9
    report = run_cli("evaluate", path, "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["accuracy"] == accuracy  # divided by 16, as trained
    assert "checksum covers its arrays only" in report.stderr  # no metadata hash in format 1
    X, _ = sklearn_datasets.load_digits(return_X_y=True)
    np.savetxt(tmp_path / "five.csv", X[:5], delimiter=",", fmt="%g")
    result = run_cli("predict", path, tmp_path / "five.csv")
    assert result.returncode == 0, result.stderr
    assert "divided its training data by 16" in result.stderr
    assert "give it features divided by 16" in result.stderr
