"""Runs as a user meets them: ``xpnet evaluate`` reports what ``xpnet train`` measured, for
any seed and data file, from any folder; nothing given on the command line is ignored; a
model too large for the machine is refused before it is built."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import numpy as np
import pytest

import xpnet.app.config
import xpnet.app.runs
from tests.helpers import run_cli, traced_peak
from xpnet import backend
from xpnet.app.cli import main
from xpnet.app.config import OPTIMIZER_BUFFERS
from xpnet.app.folders import LOCK_FILE
from xpnet.callbacks import LambdaCallback
from xpnet.errors import TrainingDiverged
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import OPTIMIZERS, SGD
from xpnet.train import fit


@pytest.fixture(scope="module")
def toy_csv(tmp_path_factory):
    """A CSV with a header and string labels, like a user's own file."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    rows = [
        ",".join(f"{v:.5f}" for v in x) + f",{label}" for x, label in zip(X, labels, strict=True)
    ]
    path.write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    return path


def _train(tmp_path, *args, cwd=None):
    out = tmp_path / "run"
    result = run_cli("train", "--epochs", 3, "--hidden", 16, "--out", out, "--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return out / "model.safetensors", json.loads(result.stdout)


def _evaluate(*args, cwd=None):
    result = run_cli("evaluate", *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "args",
    [["--seed", "3"], ["--no-batchnorm", "--seed", "7"], ["--dataset", "toy.csv", "--seed", "5"]],
    ids=["digits-seed3", "no-batchnorm-seed7", "user-csv-seed5"],
)
def test_evaluate_reproduces_the_training_accuracy(tmp_path, toy_csv, args):
    """Trained in the data's folder with a relative path, evaluated from another folder."""
    checkpoint, metrics = _train(tmp_path, *args, cwd=toy_csv.parent)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    report = _evaluate(checkpoint, cwd=elsewhere)
    assert report["accuracy"] == metrics["test_accuracy"]
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert report["n"] == metrics["data"]["n_test"]
    seed = args[args.index("--seed") + 1]
    assert f"test split, seed {seed}" in report["dataset"]
    assert metrics["data"]["split"] == {"seed": int(seed), "test_fraction": 0.25}


def test_evaluate_on_files(tmp_path, toy_csv):
    checkpoint, metrics = _train(tmp_path, "--dataset", toy_csv, "--seed", 5)
    # the training file, named another way: recognised by its hash, its test split scored
    same = _evaluate(checkpoint, "--dataset", toy_csv.name, cwd=toy_csv.parent)
    assert same["accuracy"] == metrics["test_accuracy"] and same["n"] == 75
    assert "test split, seed 5 (75 of 300 rows)" in same["dataset"]
    whole = _evaluate(checkpoint, "--dataset", toy_csv, "--all-rows")
    assert whole["n"] == 300 and "all 300 rows" in whole["dataset"]
    # another file is scored whole, and says so
    other = tmp_path / "other.csv"
    other.write_text(toy_csv.read_text() + "0.1,0.2,0.3,0.4,yes\n")
    report = _evaluate(checkpoint, "--dataset", other)
    assert report["n"] == 301 and "all 301 rows" in report["dataset"]
    # a training file that changed since is refused, not silently re-split
    toy_copy = tmp_path / "copy.csv"
    toy_copy.write_text(toy_csv.read_text())
    checkpoint2, _ = _train(tmp_path / "second", "--dataset", toy_copy)
    toy_copy.write_text(other.read_text())
    refused = run_cli("evaluate", checkpoint2)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "changed since the model was trained" in refused.stderr
    toy_copy.unlink()
    gone = run_cli("evaluate", checkpoint2)
    assert gone.returncode == 2 and "which is not there; pass --dataset" in gone.stderr


def test_resume_refuses_options_that_define_the_run(tmp_path):
    out = tmp_path / "r"
    first = run_cli("train", "--epochs", 2, "--hidden", 16, "--out", out, "--quiet")
    assert first.returncode == 0, first.stderr
    result = run_cli("train", "--resume", out, "--lr", 0.5, "--seed", 1)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "--lr, --seed cannot change a run that is resumed" in result.stderr
    longer = run_cli("train", "--resume", out, "--epochs", 3, "--json")
    assert longer.returncode == 0, longer.stderr
    assert json.loads(longer.stdout)["epochs_run"] == 3


def test_resume_from_another_folder_finds_the_data(tmp_path, toy_csv):
    """A run started on a relative path resumes from anywhere (the absolute path is
    recorded)."""
    out = tmp_path / "r"
    first = run_cli(
        "train", "--dataset", toy_csv.name, "--epochs", 2, "--out", out, "--quiet",
        cwd=toy_csv.parent,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    resumed = run_cli("train", "--resume", out, "--epochs", 3, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs_run"] == 3


def test_early_stopping_is_reported(tmp_path):
    result = run_cli(
        "train", "--early-stopping", 2, "--epochs", 40, "--out", tmp_path / "r", "--seed", 1
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    stopping = saved["early_stopping"]
    assert stopping["stopped_early"] and stopping["patience"] == 2
    assert stopping["stopped_at_epoch"] == len(saved["history"]) < 40
    assert stopping["stopped_at_epoch"] - stopping["best_epoch"] == 2
    val = [r["val_loss"] for r in saved["history"]]
    assert stopping["best_val_loss"] == min(val) == val[stopping["best_epoch"] - 1]
    assert (
        f"stopped early after epoch {stopping['stopped_at_epoch']}: the validation loss had "
        f"not improved for 2 epochs; restored epoch {stopping['best_epoch']}"
    ) in result.stdout


def test_a_growing_loss_stops_the_run(tmp_path):
    # NumPy named: whether lr 1e6 first gives a loss above the bound or NaN depends on the
    # rounding of every step, and another backend (CuPy) reaches NaN first
    out = tmp_path / "r"
    result = run_cli("train", "--lr", "1e6", "--epochs", 3, "--out", out, "--backend", "numpy")
    assert result.returncode == 1
    assert "above the bound 230.3" in result.stderr  # 100 ln(10)
    assert "end of epoch 0" in result.stderr and (out / "resume.safetensors").is_file()


def test_fit_max_loss(xp, device):
    rng = np.random.default_rng(0)
    X = xp.asarray(rng.standard_normal((64, 4)), device=device)
    y = xp.asarray(rng.integers(0, 3, 64), device=device)
    model = MLP([4, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64")
    seen = []
    with pytest.raises(TrainingDiverged, match=r"above the bound 0\.001") as info:
        fit(
            model,
            CrossEntropyLoss(),
            SGD(model, lr=0.1),
            (X, y),
            epochs=3,
            batch_size=16,
            max_loss=1e-3,
            callbacks=[LambdaCallback(on_epoch_end=lambda m, state, r: seen.append(state))],
        )
    assert info.value.epoch == 1 and info.value.step is None and seen == []
    assert isinstance(info.value, RuntimeError)


def test_parity_needs_two_backends():
    result = run_cli("parity", "--backends", "numpy")
    assert result.returncode == 1
    assert "no backend to compare with NumPy: only numpy was named" in result.stderr


def test_optimizer_schedule_and_dropout_options(tmp_path):
    out = tmp_path / "r"
    result = run_cli(
        "train", "--optimizer", "adamw", "--dropout", 0.2, "--schedule", "cosine",
        "--warmup-epochs", 2, "--epochs", 5, "--hidden", 16, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    config = metrics["config"]
    assert (config["optimizer"], config["lr"], config["weight_decay"]) == ("adamw", 1e-3, 1e-2)
    rates = [r["lr"] for r in metrics["history"]]
    assert rates[0] == pytest.approx(1e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[3] < rates[2] and rates[4] < rates[3]  # cosine after the warm-up
    from xpnet.checkpoint import read_metadata

    arch = read_metadata(out / "model.safetensors")["architecture"]
    assert arch["dropout"] == 0.2
    refused = run_cli("train", "--resume", out, "--epochs", 9)
    assert refused.returncode == 2 and "spans the 5 epochs" in refused.stderr
    for args, message in (
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum applies to --optimizer sgd"),
        (["--warmup-epochs", "40"], "--warmup-epochs must lie in [0, 40)"),
        (["--dropout", "1"], "dropout must lie in [0.0, 1.0)"),
    ):
        bad = run_cli("train", *args, "--out", tmp_path / "bad")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_resuming_a_finished_run_is_refused_and_writes_nothing(tmp_path):
    from tests.helpers import run_cli

    run = tmp_path / "r"
    assert run_cli("train", "--epochs", 2, "--hidden", 8, "--out", run, "--quiet").returncode == 0
    files = lambda: {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != LOCK_FILE}  # noqa: E731
    before = files()  # all but the lock file, which names each process that takes the folder
    result = run_cli("train", "--resume", run)
    assert result.returncode == 2
    assert "the run is finished (it trained its 2 epochs)" in result.stderr
    assert "pass --epochs N with N above 2 to train further" in result.stderr
    written = {"model.safetensors", "resume.safetensors", "metrics.json"}  # and matplotlib's plot
    assert files() == before and written <= set(before)
    more = run_cli("train", "--resume", run, "--epochs", 3, "--json", "--quiet")
    assert more.returncode == 0, more.stderr
    assert len(__import__("json").loads(more.stdout)["history"]) == 3


# -- a model too large for the machine -----------------------------------------------------
def _train_in_process(tmp_path, *args):
    """``xpnet train`` on the digits in this process: (exit status, last stderr line)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet", *args])
    lines = err.getvalue().splitlines()
    return status, lines[-1] if lines else ""


def _digits_need(hidden, *, buffers=1, itemsize=4):
    """At least what training an MLP [64, *hidden, 10] on the digits holds, counted by hand:
    W and b, BatchNorm's four arrays per hidden unit, the input scaling's two per feature,
    then a gradient and the optimizer's buffers of each W and b."""
    sizes = [64, *hidden, 10]
    trained = sum(a * b + b for a, b in itertools.pairwise(sizes))
    state = trained + 4 * sum(hidden) + 2 * 64
    return trained, (state + (1 + buffers) * trained) * itemsize


def test_a_model_larger_than_the_machine_is_refused_before_it_is_allocated(tmp_path):
    """--hidden 10000000000 (a 2.5 TB weight matrix) is one line naming the sizes, the bytes
    and the memory, with exit status 2; nothing sized by it is allocated (peak traced
    memory, the digits' loading included, stays under 16 MiB) and no run folder is left."""
    trained, need = _digits_need([10_000_000_000])
    have = backend.memory_bytes(backend.get("numpy"))
    if have is None or have >= need:
        pytest.skip("this machine would hold the model")
    with traced_peak() as peak:
        status, said = _train_in_process(tmp_path, "--hidden", "10000000000", "--backend", "numpy")
    assert status == 2
    assert said == (
        f"xpnet train: error: a model of sizes [64, 10000000000, 10] does not fit: its "
        f"{trained:,} parameters with their gradients and the optimizer's buffers need at "
        f"least {need / 2**30:.1f} GiB in float32, more than the {have / 2**30:.1f} GiB of "
        f"memory of numpy (cpu); choose narrower --hidden layers"
    )
    assert peak.bytes < 16 << 20
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "buffers", "itemsize"),
    [((), 1, 4), (("--optimizer", "adam"), 2, 4), (("--dtype", "float64"), 1, 8)],
    ids=["sgd", "adam", "float64"],
)
def test_a_model_that_fits_exactly_trains(tmp_path, monkeypatch, args, buffers, itemsize):
    """The count is exact: with the memory the count says, the run trains; a byte less and
    it is refused."""
    _, need = _digits_need([8], buffers=buffers, itemsize=itemsize)
    for memory, expected in ((need - 1, 2), (need, 0)):
        monkeypatch.setattr(backend, "memory_bytes", lambda xp, dev=None, m=memory: m)
        status, said = _train_in_process(tmp_path / str(memory), "--hidden", "8", *args)
        assert status == expected, said


def test_the_initial_draw_must_fit_on_the_host(tmp_path, monkeypatch):
    """On a device whose memory xpnet cannot ask about, the host must still hold the
    largest layer's initial weights, drawn in float64."""
    draw = 8 * 64 * 8  # the [8, 64] first layer's W
    monkeypatch.setattr(backend, "memory_bytes", lambda xp, dev=None: None)
    for host, expected in ((draw - 1, 2), (draw, 0)):
        monkeypatch.setattr(xpnet.app.config, "host_memory_bytes", lambda h=host: h)
        status, said = _train_in_process(tmp_path / str(host), "--hidden", "8")
        assert status == expected, said
        if expected:
            assert said == (
                "xpnet train: error: a model of sizes [64, 8, 10] does not fit: drawing its "
                "largest layer's initial weights (in float64, on the host) needs 0.0 GiB, "
                "more than the host's 0.0 GiB of memory; choose narrower --hidden layers"
            )


def test_each_optimizers_buffers_are_counted():
    """The memory check's count of buffers per parameter is what each optimizer keeps."""
    for kind, cls in OPTIMIZERS.items():
        model = MLP([3, 4, 2], batchnorm=True)
        opt = cls(model)
        arrays = [v for v in opt.state_dict().values() if v.ndim > 0]
        assert len(arrays) == OPTIMIZER_BUFFERS[kind] * len(model.parameters()), kind


@pytest.mark.parametrize("kind", ["numpy", "numpy-empty", "torch"])
def test_an_allocation_that_fails_is_one_line(tmp_path, monkeypatch, kind):
    """Out of memory past the check (a library's allocation failing) is one line on
    stderr with exit status 2, not a traceback."""
    if kind == "torch":
        error = pytest.importorskip("torch").OutOfMemoryError("CUDA out of memory.")
    else:
        error = MemoryError("Unable to allocate 8.00 GiB" if kind == "numpy" else "")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(xpnet.app.runs, "MLP", fail)
    status, said = _train_in_process(tmp_path, "--hidden", "8")
    assert status == 2
    assert said == f"xpnet train: error: out of memory: {str(error) or 'MemoryError'}"
