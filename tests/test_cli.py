"""The ``xpnet`` command end to end, through subprocesses (in this process where a test
hides an installed library from it)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.helpers import run_cli
from xpnet import backend
from xpnet.app.cli import main


def _backend_args(backend_case):
    lib, dev = backend_case
    return ["--backend", lib] + (["--device", dev] if dev else [])


@pytest.fixture(scope="module")
def runs():
    """The training runs of this module by backend case: each case trains once."""
    return {}


@pytest.fixture
def trained(runs, tmp_path_factory, xp, backend_case):
    """A run folder and its ``--json`` report; the tests that take it only read them."""
    if backend_case not in runs:
        out = tmp_path_factory.mktemp("run")
        result = run_cli(
            "train",
            "--epochs",
            4,
            "--hidden",
            "32",
            "--out",
            out,
            "--json",
            *_backend_args(backend_case),
        )
        assert result.returncode == 0, result.stderr
        runs[backend_case] = out, json.loads(result.stdout)
    return runs[backend_case]


def test_train_writes_checkpoint_and_metrics(trained, backend_case):
    out, metrics = trained
    assert (out / "model.safetensors").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] > 0.8
    assert len(metrics["history"]) == 4 and metrics["config"]["backend"] == backend_case[0]
    assert {"loss", "accuracy", "epoch", "seconds"} <= set(metrics["history"][0])


def test_evaluate_on_numpy_reports_the_same_accuracy(trained):
    out, metrics = trained
    result = run_cli("evaluate", out / "model.safetensors", "--backend", "numpy", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accuracy"] == metrics["test_accuracy"]
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    human = run_cli("evaluate", out / "model.safetensors", "--backend", "numpy")
    assert human.stdout.strip().endswith(f"accuracy: {metrics['test_accuracy']:.4f}")


def test_predict(trained, tmp_path):
    from xpnet.data import load_digits

    out, _ = trained
    data = load_digits()
    np.save(tmp_path / "x.npy", data.X_test[:20])
    labels = run_cli("predict", out / "model.safetensors", tmp_path / "x.npy", "--backend", "numpy")
    assert labels.returncode == 0, labels.stderr
    predicted = [int(v) for v in labels.stdout.split()]
    assert len(predicted) == 20 and np.mean(np.array(predicted) == data.y_test[:20]) > 0.7
    np.savetxt(tmp_path / "x.csv", data.X_test[:20], delimiter=",")
    proba = run_cli(
        "predict",
        out / "model.safetensors",
        tmp_path / "x.csv",
        "--proba",
        "--out",
        tmp_path / "p.csv",
    )
    assert proba.returncode == 0, proba.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == ",".join(str(c) for c in range(10))
    p = np.array([[float(v) for v in row.split(",")] for row in rows[1:]])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-4)
    assert list(p.argmax(axis=1)) == predicted
    npy = run_cli(
        "predict", out / "model.safetensors", tmp_path / "x.npy", "--out", tmp_path / "labels.npy"
    )
    assert npy.returncode == 0 and list(np.load(tmp_path / "labels.npy")) == predicted


def test_train_human_output_ends_with_accuracy(tmp_path):
    result = run_cli(
        "train", "--epochs", 2, "--hidden", "16", "--out", tmp_path / "r", "--backend", "numpy"
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ")
    # stderr is not a terminal: one plain line per epoch, no progress bar
    lines = result.stderr.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert "\r" not in result.stderr and "loss" in lines[0]
    quiet = run_cli("train", "--epochs", 2, "--hidden", "16", "--out", tmp_path / "q", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.strip().startswith("test accuracy: ")


def test_parity_across_cpu_backends():
    names = [b for b in ("numpy", "array_api_strict", "torch") if b in backend.available()]
    result = run_cli("parity", "--backends", ",".join(names), "--steps", 5, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [r["backend"] for r in report["results"]] == names
    assert all(r["ok"] and r["parameters"] <= 1e-10 for r in report["results"])
    table = run_cli("parity", "--backends", ",".join(names), "--steps", 2)
    assert table.returncode == 0 and "parameters" in table.stdout


def test_info():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    states = {row["backend"]: row["state"] for row in info["backends"]}
    assert states["numpy"] == "usable"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--hidden", "12,x"], "expected comma-separated layer widths"),
        (["train", "--epochs", "0"], "expected a positive integer"),
        (["train", "--dataset", "missing.csv"], "missing.csv: no such file"),
        (["train", "--dataset", "bad.csv"], "line 2: 1 columns, the first row has 3"),
        (["train", "--lr", "-1"], r"lr must lie in (0.0, inf)"),
        (["train", "--momentum", "1.5"], "momentum must lie in"),
        (["train", "--backend", "nosuchlib"], "unknown backend 'nosuchlib': no module"),
        (["train", "--backend", "json"], "'json' is not an Array API library"),
        (["train", "--backend", "numpy", "--jit"], "--jit is not possible here: numpy has no"),
        (["train", "--backend", "numpy", "--device", "cuda:0"], "NumPy arrays live on 'cpu'"),
        (["evaluate", "missing.safetensors"], "no such checkpoint"),
        (["evaluate", "bad.csv"], "not a valid checkpoint"),
        (["predict", "bad.csv", "x.npy"], "not a valid checkpoint"),
        (["parity", "--backends", "numpy,nosuchlib"], "--backends: unknown backend 'nosuchlib'"),
        (["train", "--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (["train", "--batch-size", "0"], "expected a positive integer, got 0"),
        (["train", "--weight-decay", "-0.1"], "weight_decay must lie in"),
        (["train", "--dataset", "x.txt"], "unsupported data file type '.txt'"),
        (["train", "--dataset", "d.csv", "--label-column", "7"], "label column 7 out of range"),
        (["train", "--dataset", "d.csv", "--label-column", "z"], "no column named 'z'"),
        (["train", "--label-column", "0"], "digits: a label column applies to CSV files only"),
        (
            ["evaluate", "trained.safetensors", "--dataset", "d.npz", "--label-column", "0"],
            "d.npz: a label column applies to CSV files only",
        ),
        (["train", "--lr", "abc"], "expected a number, got 'abc'"),
        (["train", "--out", "file.txt"], "cannot create the run folder file.txt: File exists"),
        (["train", "--resume", "nowhere"], "no resume.safetensors here"),
        (["train", "--resume", "nowhere", "--force"], "--force replaces a run in --out"),
        (
            ["train", "--backend", "array_api_strict", "--device", "gpu9"],
            "unknown array_api_strict device",
        ),
        (["predict", "m.safetensors", "x.txt"], "no such checkpoint"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("1,2,0\n3\n")
    (tmp_path / "x.txt").write_text("1,2\n")
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "d.csv").write_text("a,b,c\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n")
    if "trained.safetensors" in args:
        import xpnet
        from xpnet.models import MLP

        xpnet.save(MLP([2, 2]).eval(), tmp_path / "trained.safetensors")
        np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=[0, 1, 0, 1])
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("xpnet")]) == 1


def test_predict_wrong_feature_count(trained, tmp_path):
    out, _ = trained
    np.save(tmp_path / "x.npy", np.zeros((3, 5)))
    result = run_cli("predict", out / "model.safetensors", tmp_path / "x.npy")
    assert result.returncode == 2
    assert "5 columns, the model expects 64 features" in result.stderr


def test_train_draws_curves_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    result = run_cli(
        "train", "--epochs", 2, "--hidden", "8", "--out", tmp_path / "r", "--backend", "numpy"
    )
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "r" / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert "curves.png" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--backend", "dask"],
        ["evaluate", "model.safetensors", "--backend", "dask"],
        ["predict", "model.safetensors", "x.npy", "--backend", "dask"],
        ["parity", "--backends", "numpy,dask"],
    ],
    ids=["train", "evaluate", "predict", "parity"],
)
def test_a_library_that_is_not_installed_is_one_line_on_stderr(argv, monkeypatch, capsys):
    """Where Dask is not installed (the base install), naming it is a usage error like any
    other: one line that says what to install, exit status 2, no traceback."""
    monkeypatch.setitem(sys.modules, "dask", None)  # as where dask is not installed
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own usage error
        status = exit_.code
    assert status == 2
    said = "backend 'dask' is not installed: pip install 'xpnet[dask]'"
    option = "--backends" if argv[0] == "parity" else "argument --backend"
    assert capsys.readouterr().err.splitlines()[-1] == f"xpnet {argv[0]}: error: {option}: {said}"


def test_train_without_matplotlib_says_how_to_draw_the_curves(tmp_path, monkeypatch, capsys):
    """The base install has no matplotlib: the run trains and saves as ever, and the summary
    says why there is no curves.png instead of leaving it out silently."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    argv = ["train", "--epochs", "2", "--hidden", "8", "--out", str(tmp_path / "r")]
    assert main([*argv, "--backend", "numpy"]) == 0
    summary = capsys.readouterr().out.splitlines()[-2]
    assert summary.endswith(
        f"saved {tmp_path / 'r' / 'model.safetensors'} (no curves.png: pip install "
        "'xpnet[plot]' to draw it)"
    )
    written = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"metrics.json", "model.safetensors", "resume.safetensors"} <= written
    assert "curves.png" not in written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--optimizer", "adam"], "Adam changes its step size every step"),
        (["--dropout", "0.2"], "dropout draws its masks on the host"),
        (["--backend", "numpy"], "the model's arrays are numpy's, not CuPy's"),
    ],
    ids=["adam", "dropout", "numpy"],
)
def test_cuda_graph_refusals_are_the_library_s(tmp_path, args, expected):
    """``--cuda-graph`` asks :func:`xpnet.step.cuda_graph_refusal`, which ``fit`` asks
    too: one line, exit status 2, before a folder is made."""
    result = run_cli("train", "--cuda-graph", *args, "--out", tmp_path / "r")
    assert result.returncode == 2, result.stderr
    assert f"--cuda-graph is not possible here: {expected}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _torch_without_cuda():
    torch = pytest.importorskip("torch")
    return not torch.cuda.is_available()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--backend", "numpy", "--device", "gpu"], "NumPy arrays live on 'cpu' only"),
        (["--device", "cuda:0"], "--backend auto chose numpy"),
        (["--backend", "array_api_strict", "--device", "device7"], "unknown array_api_strict"),
        (["--backend", "torch", "--device", "banana"], "'banana' is not a PyTorch device"),
        (["--backend", "torch", "--device", "cuda:0"], "PyTorch device 'cuda:0' cannot be used"),
        (["--backend", "torch", "--device", "cuda:7"], "cuda:7"),
    ],
    ids=["numpy-gpu", "auto-cuda", "strict-device7", "torch-banana", "torch-cuda", "torch-cuda7"],
)
def test_a_device_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, args, expected):
    """For every command that takes --device, on every backend: one line, exit status 2,
    and nothing written."""
    if args[:2] == ["--backend", "torch"] and args[3].startswith("cuda"):
        if not _torch_without_cuda() and args[3] == "cuda:0":
            pytest.skip("this machine has a CUDA device")
    if args[:2] == ["--backend", "torch"]:
        pytest.importorskip("torch")
    if args[0] == "--device" and "cupy" in backend.available():
        pytest.skip("--backend auto chooses CuPy here, which can use cuda:0")
    checkpoint = tmp_path / "m.safetensors"
    import xpnet
    from xpnet.models import MLP

    xpnet.save(MLP([64, 10]).eval(), checkpoint)
    np.save(tmp_path / "x.npy", np.zeros((2, 64)))
    for command in (
        ["train", "--out", tmp_path / "run"],
        ["evaluate", checkpoint, "--dataset", "digits"],
        ["predict", checkpoint, tmp_path / "x.npy"],
    ):
        result = run_cli(*command, *args)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("mnist", "mnist: no such file or folder; expected a built-in dataset (digits, mnist1d)"),
        ("mnist", "MNIST itself is not bundled: put its four IDX files in a folder"),
        ("nothing.csv", "nothing.csv: no such file or folder; expected"),
        ("empty", "empty: a folder without a dataset in it: expected MNIST's IDX files"),
    ],
)
def test_a_dataset_that_is_not_there_says_what_is_expected(tmp_path, dataset, expected):
    (tmp_path / "empty").mkdir()
    result = run_cli("train", "--dataset", dataset, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"xpnet train: error: {result.stderr.split('error: ', 1)[1]}"
    assert expected in result.stderr and result.stderr.count("\n") == 1
    assert f"{dataset}: {dataset}" not in result.stderr  # the name once
    assert not (tmp_path / "runs").exists()


def test_predict_on_a_file_that_still_has_its_label_column(tmp_path):
    import xpnet
    from xpnet.models import MLP

    checkpoint = xpnet.save(MLP([3, 2]).eval(), tmp_path / "m.safetensors")
    (tmp_path / "numeric.csv").write_text("1,2,3,0\n4,5,6,1\n")
    (tmp_path / "text.csv").write_text("a,b,c,label\n1,2,3,cat\n4,5,6,dog\n")
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    (tmp_path / "narrow.csv").write_text("1,2\n")
    for name, expected in (
        ("numeric.csv", "4 columns, the model expects 3 features; is the label column still"),
        ("text.csv", "line 2, column 4: 'cat' is not a number; is the label column still"),
        ("ragged.csv", "line 2: 2 columns, the first row has 3"),
        ("narrow.csv", "2 columns, the model expects 3 features"),
    ):
        result = run_cli("predict", checkpoint, tmp_path / name)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "label column" not in run_cli("predict", checkpoint, tmp_path / "narrow.csv").stderr


def test_export_refuses_a_name_that_is_not_onnx(tmp_path):
    import xpnet
    from xpnet.models import MLP

    checkpoint = xpnet.save(MLP([3, 2]).eval(), tmp_path / "m.safetensors")
    result = run_cli("export", checkpoint, tmp_path / "m.txt")
    assert result.returncode == 2 and "m.txt: an ONNX file's name ends in .onnx" in result.stderr
    assert not (tmp_path / "m.txt").exists()


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "predict", "parity", "export", "bench", "info"]
)
def test_help_is_plain_text(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and ":func:" not in result.stdout
