"""Datasets larger than memory: a folder of .npy files is read memory-mapped, batch by batch;
anonymous memory stays a few batches while the file is far larger; the result equals
in-memory training in the same order."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.helpers import run_cli
from xpnet import backend
from xpnet.data import load_dataset
from xpnet.data.npy import RowSubset
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD
from xpnet.train import fit


def _folder(tmp_path, n=3000, features=12, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + 2 * (X[:, 2] > 0)
    folder = tmp_path / "big"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder


@pytest.mark.parametrize("batchnorm", [False, True])
def test_memory_mapped_training_equals_in_memory_training(tmp_path, batchnorm):
    data = load_dataset(str(_folder(tmp_path)))
    # stratified: a quarter of each class, rounded per class
    assert isinstance(data.X_train, RowSubset) and data.X_train.shape == (2249, 12)
    assert isinstance(data.X_train.base, np.memmap)
    results = []
    for X in (data.X_train, np.array(data.X_train)):  # on disk, then in memory
        model = MLP([12, 16, 4], batchnorm=batchnorm, dtype="float32", seed=1)
        history = fit(
            model, CrossEntropyLoss(), SGD(model, lr=0.05, momentum=0.9),
            (X, data.y_train), epochs=2, batch_size=32, shuffle="blocks", seed=3,
        )  # fmt: skip
        results.append((history, {k: np.array(v) for k, v in model.state_dict().items()}))
    (on_disk, a), (in_memory, b) = results
    assert [r["loss"] for r in on_disk] == [r["loss"] for r in in_memory]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_block_order_is_a_permutation_read_in_blocks():
    from xpnet.data import block_order

    order = block_order(np.random.default_rng(0), 1000, 64)
    assert sorted(order.tolist()) == list(range(1000))
    blocks = [set(order[i : i + 64] // 64) for i in range(0, 960, 64)]
    assert all(len(b) == 1 for b in blocks)  # each block of the order is one block of rows


_RSS = textwrap.dedent(
    """
    import json, re, sys, threading, time
    import numpy as np
    from xpnet.data import load_dataset
    from xpnet.models import MLP
    from xpnet.nn import CrossEntropyLoss
    from xpnet.optim import SGD
    from xpnet.train import fit

    def anon():
        status = open("/proc/self/status").read()
        return int(re.search(r"RssAnon:\\s+(\\d+) kB", status).group(1)) / 1024

    data = load_dataset(sys.argv[1])
    model = MLP([data.n_features, 32, data.n_classes], dtype="float32", seed=0)
    opt, loss = SGD(model, lr=0.01, momentum=0.9), CrossEntropyLoss()
    baseline, peak, running = anon(), [0.0], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    history = fit(model, loss, opt, (data.X_train, data.y_train), epochs=1, batch_size=256,
                  progress=False)
    running[0] = False
    thread.join()
    print(json.dumps({"baseline": baseline, "peak": peak[0], "loss": history[-1]["loss"]}))
    """
)


def test_anonymous_memory_stays_a_few_batches(tmp_path):
    """A 164 MB feature file (160,000 x 256 float32) trained for an epoch in batches of
    256 (256 KB each): anonymous memory (RssAnon, which excludes the mapped file's pages)
    grows by far less than the file, while in-memory training would add all of it."""
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(160_000, 256))  # fmt: skip
    for start in range(0, 160_000, 20_000):
        X[start : start + 20_000] = rng.standard_normal((20_000, 256), dtype=np.float32)
    X.flush()
    del X
    np.save(folder / "y.npy", rng.integers(0, 10, 160_000))
    result = subprocess.run(
        [sys.executable, "-c", _RSS, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    file_mb = 160_000 * 256 * 4 / 2**20
    assert report["peak"] - report["baseline"] < 24, (report, file_mb)
    assert np.isfinite(report["loss"])


def test_cli_trains_on_an_npy_folder(tmp_path):
    folder = _folder(tmp_path, n=2000)
    result = run_cli("train", "--dataset", folder, "--epochs", 4, "--hidden", 16, "--out",
                     tmp_path / "r", "--json", "--early-stopping", 2)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["data"]["n_test"] == 501 and metrics["test_accuracy"] > 0.8  # per class
    report = run_cli("evaluate", tmp_path / "r" / "model.safetensors", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    evaluated = json.loads(report.stdout)
    assert evaluated["accuracy"] == metrics["test_accuracy"]
    assert "test split, seed 0 (501 of 2000 rows)" in evaluated["dataset"]
    assert backend.on_host(np.zeros(1))
