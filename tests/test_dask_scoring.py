"""Scoring inputs larger than memory on Dask: ``xpnet predict`` and ``xpnet evaluate`` with
``--backend dask`` read, score and write a block at a time, and give what NumPy gives on
the rows that fit in memory; blocks travel to a cluster's workers without their data."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from xpnet import backend, save
from xpnet.app.cli import main
from xpnet.app.evaluation import predictions, predictions_in_blocks
from xpnet.data.parts import feature_blocks
from xpnet.models import MLP

pytest.importorskip("dask.array")

CLASSES = ["cat", "dog", "emu", "fox"]


def _model(batchnorm=True, dtype="float32"):
    model = MLP([5, 16, 4], batchnorm=batchnorm, standardize=True, seed=2, dtype=dtype)
    model.standardize_layers[0].mean = model.standardize_layers[0].mean + 0.5
    model.bn_layers[0].running_V = model.bn_layers[0].running_V * 3.0
    return model.eval()


def _checkpoint(tmp_path, model):
    return save(model, tmp_path / "m.safetensors", metadata={"classes": CLASSES})


def _features(n=1000, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 5)).astype(np.float32)


def _cli(*args):
    return main([str(a) for a in args])


def _predict(*args):
    return _cli("predict", *args)


def test_a_npy_file_in_blocks_equals_numpy(tmp_path, capsys):
    checkpoint, X = _checkpoint(tmp_path, _model()), _features()
    np.save(tmp_path / "X.npy", X)
    for library, out in (("numpy", "n.npy"), ("dask", "d.npy"), ("dask", "d.txt")):
        extra = ["--chunk-rows", 37] if library == "dask" else []
        assert (
            _predict(
                checkpoint,
                tmp_path / "X.npy",
                "--backend",
                library,
                "--out",
                tmp_path / out,
                *extra,
            )
            == 0
        )
    expected = np.load(tmp_path / "n.npy")
    assert expected.shape == (1000,) and set(expected) <= set(CLASSES)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected)
    assert (tmp_path / "d.txt").read_text().split() == expected.tolist()
    assert "xpnet predict: 1000 rows" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("kind", ["npy", "csv", "parquet"])
def test_a_glob_of_parts_equals_numpy_on_their_rows(tmp_path, kind):
    model, X = _model(), _features(700)
    cuts = [0, 150, 151, 400, 700]  # a part of one row among them
    for i, (start, stop) in enumerate(itertools.pairwise(cuts)):
        part = tmp_path / f"part{i}.{kind}"
        if kind == "npy":
            np.save(part, X[start:stop])
        elif kind == "csv":
            np.savetxt(
                part, X[start:stop], delimiter=",", header="a,b,c,d,e", comments="", fmt="%.9g"
            )
        else:
            pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
            table = pa.table({f"c{j}": X[start:stop, j] for j in range(5)})
            pq.write_table(table, part, row_group_size=64)
    blocks = feature_blocks(tmp_path / f"part*.{kind}", n_features=5, chunk_rows=100)
    assert sum(b.rows or len(b.read()) for b in blocks) == 700
    for proba in (False, True):
        with backend.dask_scheduler() as threads:
            scored = predictions_in_blocks(
                model.to("dask"), blocks, CLASSES, proba=proba, at_once=threads
            )
            got = [result for result, _ in scored]
        model.to("numpy")
        expected, _ = predictions(model, X, CLASSES, proba=proba)
        if proba:
            np.testing.assert_allclose(np.concatenate(got), expected, rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(np.concatenate(got), expected)


def test_blocks_are_read_as_they_are_computed(tmp_path):
    """Memory holds the blocks computed at once, not the input: a block is read only when
    its predictions are asked for."""
    X = _features(600)
    np.save(tmp_path / "X.npy", X)
    reads = []
    blocks = [
        b._replace(read=lambda b=b: reads.append(1) or b.read())
        for b in feature_blocks(tmp_path / "X.npy", n_features=5, chunk_rows=50)
    ]
    with backend.dask_scheduler():
        stream = predictions_in_blocks(_model().to("dask"), blocks, CLASSES, at_once=2)
        assert len(blocks) == 12 and not reads
        next(stream)
        assert len(reads) == 2
        assert len(list(stream)) == 11 and len(reads) == 12


def test_evaluate_on_dask_equals_numpy_in_memory_and_on_disk(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((900, 5)).astype(np.float32)
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0))
    assert (
        _cli("train", "--dataset", folder, "--epochs", 2, "--out", tmp_path / "r", "--quiet") == 0
    )
    capsys.readouterr()
    checkpoint = tmp_path / "r" / "model.safetensors"
    for dataset in ([], ["--dataset", "digits", "--all-rows"]):  # on disk; in memory
        if dataset:  # a digits model, for the in-memory rows
            assert _cli("train", "--epochs", 1, "--out", tmp_path / "d", "--quiet") == 0
            checkpoint = tmp_path / "d" / "model.safetensors"
        results = []
        for library in (["--backend", "numpy"], ["--backend", "dask", "--chunk-rows", "61"]):
            capsys.readouterr()
            assert _cli("evaluate", checkpoint, "--json", *library, *dataset) == 0
            results.append(json.loads(capsys.readouterr().out.splitlines()[-1]))
        numpy, dask = results
        assert dask["backend"] == "dask" and dask["n"] == numpy["n"] > 100
        assert dask["accuracy"] == numpy["accuracy"]
        assert dask["loss"] == pytest.approx(numpy["loss"], rel=1e-6)


def _executed(dask_worker):
    return dask_worker.state.executed_count


def test_a_cluster_of_two_workers_scores_the_same(tmp_path):
    distributed = pytest.importorskip("distributed")
    checkpoint, X = _checkpoint(tmp_path, _model()), _features(500)
    np.save(tmp_path / "X.npy", X)
    assert _predict(checkpoint, tmp_path / "X.npy", "--out", tmp_path / "n.npy") == 0
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        args = ["--backend", "dask", "--scheduler", cluster.scheduler_address, "--chunk-rows", 64]
        assert _predict(checkpoint, tmp_path / "X.npy", "--out", tmp_path / "c.npy", *args) == 0
        with distributed.Client(cluster) as client:  # both workers computed blocks
            executed = client.run(_executed).values()
    assert len(executed) == 2 and all(n > 0 for n in executed), executed
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), np.load(tmp_path / "n.npy"))


def test_bad_input_leaves_no_output(tmp_path, capsys):
    checkpoint, X = _checkpoint(tmp_path, _model()), _features(400)
    X[333, 2] = np.nan
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "p.npy"
    assert (
        _predict(
            checkpoint, tmp_path / "X.npy", "--backend", "dask", "--out", out, "--chunk-rows", 50
        )
        == 2
    )
    assert "row 333 holds a NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "m.safetensors"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda d: (
                np.save(d / "a.npy", np.zeros((3, 5))),
                (d / "b.csv").write_text("1,2,3,4,5\n"),
            ),
            "expected parts of one kind, .npy, .csv, .parquet; got .csv, .npy",
        ),
        (lambda d: np.save(d / "a.npy", np.zeros((3, 6))), "a.npy: 6 columns, the model expects 5"),
        (
            lambda d: (d / "a.csv").write_text("1,2,3,4,5,6\n"),
            "a.csv: 6 columns, the model expects 5",
        ),
        (
            lambda d: np.save(d / "a.npy", np.zeros((3, 5), dtype=np.int64)),
            "expected a float array",
        ),
        (lambda d: None, "no file matches"),
        (lambda d: np.save(d / "a.npy", np.zeros((0, 5), dtype=np.float32)), "no rows to score"),
    ],
    ids=["mixed", "width", "csv-width", "integers", "nothing", "no-rows"],
)
def test_parts_that_do_not_fit_are_refused(tmp_path, capsys, make, message):
    checkpoint = _checkpoint(tmp_path, _model())
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    assert _predict(checkpoint, data / "*", "--backend", "dask") == 2
    assert message in capsys.readouterr().err


def test_block_options_are_never_ignored(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, _model())
    np.save(tmp_path / "X.npy", _features(10))
    for args in (["--scheduler", "tcp://nowhere:1"], ["--chunk-rows", "5"]):
        assert _predict(checkpoint, tmp_path / "X.npy", *args) == 2
        assert "applies to --backend dask only" in capsys.readouterr().err
    assert _predict(checkpoint, tmp_path / "*.npy") == 2
    assert "a glob of parts is scored with --backend dask" in capsys.readouterr().err


_FORKED = """
import os, signal, sys
import dask.array as da
from xpnet import backend

da.ones((100, 4), chunks=10).sum().compute()  # Dask's own pool of threads now exists
pid = os.fork()
if pid == 0:  # the child has the pool object but not its threads
    signal.alarm(30)
    with backend.dask_scheduler() as threads:
        blocks = list(backend.computed_blocks(da.ones((100, 4), chunks=10) * 2, threads))
    os._exit(0 if len(blocks) == 10 else 1)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_forked_process_scores_with_threads_of_its_own():
    """Dask keeps one pool of threads per process; a process forked after it was started
    (a multiprocessing worker) inherits the pool without its threads, and a computation
    on it waits forever. The local scheduler of ``predict`` and ``evaluate`` starts a pool
    of its own instead."""
    done = subprocess.run([sys.executable, "-c", _FORKED], capture_output=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "missing.npy"
    with pytest.raises(FileNotFoundError, match=r"missing\.npy: no such file") as error:
        feature_blocks(missing, n_features=5, chunk_rows=10)
    assert error.value.filename == str(missing)
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(FileNotFoundError, match="no file matches") as error:
        feature_blocks(pattern, n_features=5, chunk_rows=10)
    assert error.value.filename == pattern


def test_a_file_beyond_the_memory_budget_is_scored_in_blocks(tmp_path, monkeypatch):
    """What memory cannot hold whole is what the blocks are for: a ``.npy`` file larger
    than the memory budget is mapped, never read whole (the budget is set to a tenth of
    the file here)."""
    model, X = _model(), _features(400)
    np.save(tmp_path / "X.npy", X)
    monkeypatch.setenv("XPNET_MAX_INPUT_BYTES", str(X.nbytes // 10))
    blocks = feature_blocks(tmp_path / "X.npy", n_features=5, chunk_rows=30)
    with backend.dask_scheduler() as threads:
        got = [r for r, _ in predictions_in_blocks(model.to("dask"), blocks, at_once=threads)]
    model.to("numpy")
    np.testing.assert_array_equal(np.concatenate(got), predictions(model, X)[0])


def test_blocks_know_their_rows_and_name_a_bad_one_by_its_number(tmp_path, monkeypatch):
    """Each block's row count is known before it is read (the progress line's total), and
    a NaN is reported at its row in the file, for a slice of rows, for rows picked out of
    it (the test split of a folder) and in a later row group of a Parquet file."""
    from xpnet.data.parts import mapped_rows

    X = _features(400)
    X[7, 1] = np.nan
    np.save(tmp_path / "X.npy", X)
    blocks = feature_blocks(tmp_path / "X.npy", n_features=5, chunk_rows=30)
    assert [b.rows for b in blocks] == [30] * 13 + [10]
    with pytest.raises(ValueError, match=r"X\.npy: row 7 holds a NaN"):
        mapped_rows(tmp_path / "X.npy", slice(5, 9))
    with pytest.raises(ValueError, match=r"X\.npy: row 7 holds a NaN"):
        mapped_rows(tmp_path / "X.npy", np.array([3, 5, 7, 11]))
    monkeypatch.setenv("XPNET_MAX_INPUT_BYTES", str(X.nbytes // 10))  # mapped, not read
    np.testing.assert_array_equal(mapped_rows(tmp_path / "X.npy", slice(20, 30)), X[20:30])
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    X[7, 1] = 0.0
    X[70, 3] = np.inf
    pq.write_table(
        pa.table({f"c{j}": X[:, j] for j in range(5)}), tmp_path / "p.parquet", row_group_size=64
    )
    blocks = feature_blocks(tmp_path / "p.parquet", n_features=5, chunk_rows=30)
    assert [b.rows for b in blocks] == [64] * 6 + [16]
    blocks[0].read()
    with pytest.raises(ValueError, match=r"p\.parquet: row 70 holds a NaN or infinite value"):
        blocks[1].read()


def test_parquet_parts_that_do_not_fit_are_refused(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"bad\.parquet: not a readable Parquet file"):
        feature_blocks(tmp_path / "bad.parquet", n_features=5, chunk_rows=10)
    pq.write_table(pa.table({f"c{j}": np.zeros(3) for j in range(6)}), tmp_path / "wide.parquet")
    with pytest.raises(
        ValueError, match=r"wide\.parquet: 6 columns, the model expects 5 features; is the label"
    ):
        feature_blocks(tmp_path / "wide.parquet", n_features=5, chunk_rows=10)
    columns = {f"c{j}": np.zeros(3) for j in range(4)} | {"name": ["a", "b", "c"]}
    pq.write_table(pa.table(columns), tmp_path / "text.parquet")
    (block,) = feature_blocks(tmp_path / "text.parquet", n_features=5, chunk_rows=10)
    with pytest.raises(ValueError, match=r"text\.parquet: expected numeric columns only"):
        block.read()


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    np.save(tmp_path / "X.npy", _features(3))  # any file: the check comes first
    (tmp_path / "X.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(
        ModuleNotFoundError, match=r"^reading Parquet needs pyarrow: pip install 'xpnet\[dask\]'$"
    ):
        feature_blocks(tmp_path / "X.parquet", n_features=5, chunk_rows=10)
