"""Any Array API library: accepted by name or namespace, its capabilities read from the
library itself, and JAX (immutable arrays) trained eagerly to NumPy's numbers.

These tests name their libraries; the rest of the suite runs on the one ``--backend``
chooses (``nox -s "tests(backend='jax')"`` runs all of it on JAX).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.helpers import run_cli
from xpnet import backend
from xpnet.errors import XpnetTypeError, XpnetValueError
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD

# library -> (what names it, the namespace xpnet computes with, its name in messages)
LIBRARIES = {
    "jax": ("jax", "jax.numpy", "jax"),
    "dask": ("dask", "array_api_compat.dask.array", "dask"),
    "ndonnx": ("ndonnx", "ndonnx", "ndonnx"),
}


@pytest.mark.parametrize("lib", list(LIBRARIES))
def test_any_array_api_library_is_accepted_by_name_module_or_namespace(lib):
    pytest.importorskip(lib)
    import importlib

    name, namespace_module, library = LIBRARIES[lib]
    xp = backend.get(name)
    assert xp.__name__ == namespace_module
    assert backend.library_name(xp) == library
    assert backend.get(xp) is xp  # the namespace itself
    assert backend.get(importlib.import_module(name)) is xp  # the library's top module
    assert backend.library_version(library) is not None


def test_what_is_no_array_library_is_refused_with_what_to_do():
    with pytest.raises(XpnetValueError, match="'json' is not an Array API library: its module"):
        backend.get("json")
    with pytest.raises(XpnetValueError, match="unknown backend 'nosuchlib': no module"):
        backend.get("nosuchlib")
    import json as not_arrays

    with pytest.raises(XpnetTypeError, match="xp must be a library name"):
        backend.get(not_arrays)
    with pytest.raises(XpnetTypeError, match="xp must be a library name"):
        backend.get(42)


@pytest.mark.parametrize(
    ("lib", "inplace", "views"),
    [
        ("numpy", True, True),
        ("torch", True, True),
        ("array_api_strict", True, False),
        ("jax", False, False),  # immutable
        ("dask", False, False),  # lazy: p -= u would only rebind a local name
    ],
)
def test_capabilities_are_read_from_the_library(lib, inplace, views):
    pytest.importorskip(lib)
    xp = backend.get(lib)
    assert backend.inplace_updates(xp) is inplace
    assert backend.flat_views(xp) is views


@pytest.mark.parametrize("lib", ["jax", "dask"])
def test_sgd_with_momentum_updates_an_immutable_or_lazy_model(lib):
    """The trap of immutable and lazy arrays: an in-place update that updates nothing.
    Three steps on the library against three on NumPy, float32 (JAX's default mode)."""
    pytest.importorskip(lib)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 6)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    states = {}
    for name in ("numpy", lib):
        xp = backend.get(name)
        model = MLP([6, 8, 3], batchnorm=True, xp=xp, dtype="float32", seed=1)
        opt = SGD(model, lr=0.1, momentum=0.9)
        loss = CrossEntropyLoss()
        first = backend.to_numpy(model.layers[0].W).copy()
        for _ in range(3):
            loss.forward(model.forward(xp.asarray(X)), xp.asarray(y))
            model.backward(loss.backward())
            opt.step()
        states[name] = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
        assert np.any(states[name]["layers.0.W"] != first)
    for key, value in states["numpy"].items():
        np.testing.assert_allclose(states[lib][key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_jax_without_64_bit_mode_refuses_float64_and_trains_float32():
    """JAX's default mode (no float64) in a process of its own: asking for float64 says
    how to get it, rather than computing in float32; float32 trains as on NumPy, with no
    warning from JAX (every warning is an error here)."""
    pytest.importorskip("jax")
    code = textwrap.dedent(
        """
        import numpy as np
        from xpnet import backend
        from xpnet.models import MLP
        from xpnet.nn import CrossEntropyLoss
        from xpnet.optim import Adam
        from xpnet.errors import XpnetValueError

        for make in (lambda: MLP([3, 2], xp="jax", dtype="float64"),
                     lambda: MLP([3, 2], dtype="float64").to("jax")):
            try:
                make()
            except XpnetValueError as err:
                assert "jax_enable_x64" in str(err), err
            else:
                raise AssertionError("float64 accepted without 64-bit mode")
        rng = np.random.default_rng(0)
        X = rng.standard_normal((32, 5)).astype(np.float32)
        y = rng.integers(0, 4, 32)
        out = {}
        for name in ("numpy", "jax"):
            xp = backend.get(name)
            model = MLP([5, 7, 4], batchnorm=True, xp=xp, dtype="float32", seed=3)
            opt, loss = Adam(model, lr=1e-2), CrossEntropyLoss()
            for _ in range(5):
                loss.forward(model.forward(xp.asarray(X)), xp.asarray(y))
                model.backward(loss.backward())
                opt.step()
            assert model.layers[0].W.dtype == xp.float32
            out[name] = backend.to_numpy(model.forward(xp.asarray(X)))
        np.testing.assert_allclose(out["jax"], out["numpy"], rtol=1e-4, atol=1e-5)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_model_trained_on_jax_evaluates_the_same_on_numpy(tmp_path, jit):
    pytest.importorskip("jax")
    trained = run_cli(
        "train", "--backend", "jax", "--epochs", "2", "--hidden", "16", "--quiet", "--json",
        "--out", tmp_path / "run", *(["--jit"] if jit else []),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["config"]["backend"] == "jax" and result["config"]["jit"] is jit
    checkpoint = tmp_path / "run" / "model.safetensors"
    for lib in ("numpy", "jax"):
        evaluated = run_cli("evaluate", checkpoint, "--backend", lib, "--json")
        assert evaluated.returncode == 0, evaluated.stderr
        assert json.loads(evaluated.stdout)["accuracy"] == result["test_accuracy"], lib


def test_a_scikit_learn_estimator_on_jax_equals_it_on_numpy():
    """By name, in float32 (the estimators' float64 default needs JAX's 64-bit mode)."""
    pytest.importorskip("jax")
    pytest.importorskip("sklearn")
    from xpnet.data import load_digits
    from xpnet.sklearn import MLPClassifier

    data = load_digits()
    X, y = data.X_train / 16, data.y_train
    fitted = {
        lib: MLPClassifier(backend=lib, dtype="float32", epochs=3, random_state=0).fit(X, y)
        for lib in ("numpy", "jax")
    }
    np.testing.assert_allclose(
        fitted["jax"].predict_proba(X), fitted["numpy"].predict_proba(X), atol=1e-5
    )
    assert fitted["jax"].loss_curve_ == pytest.approx(fitted["numpy"].loss_curve_, rel=1e-5)


def test_a_run_names_only_libraries_xpnet_knows(tmp_path):
    """A resume file names the run's library: reading one may import only a library xpnet
    knows by name, so a run on any other is refused before it starts."""
    from xpnet.app.config import _CONFIG_FIELDS

    assert backend.NAMED == (*backend.SUPPORTED, "dask")
    assert all(_CONFIG_FIELDS["backend"](name) for name in backend.NAMED)
    assert not _CONFIG_FIELDS["backend"]("ndonnx") and not _CONFIG_FIELDS["backend"]("os")
    pytest.importorskip("ndonnx")
    done = run_cli("train", "--backend", "ndonnx", "--epochs", "1", "--out", tmp_path / "r")
    assert done.returncode == 2, done.stderr
    assert "a run names its library in its resume file" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-10), ("float32", 1e-4)])
def test_parity_with_jax(dtype, tolerance):
    """``xpnet parity --backends numpy,jax``: 20 SGD steps within the documented bounds
    (the command turns on JAX's 64-bit mode for float64)."""
    pytest.importorskip("jax")
    done = run_cli("parity", "--backends", "numpy,jax", "--dtype", dtype, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["steps"] == 20
    (row,) = [r for r in report["results"] if r["backend"] == "jax"]
    assert row["tolerance"] == tolerance and row["ok"]
    assert max(row[k] for k in ("outputs", "gradients", "parameters", "losses")) <= tolerance
