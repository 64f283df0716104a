"""Splits that cannot mislead: every format without its own test set gets the same
stratified, seeded split; tiny data still gets a test row; a split that leaves a class
out of one side is reported on stdout and in metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_cli
from xpnet.data import load_dataset, stratified_split
from xpnet.errors import DataError


def _class_sorted(n=400, features=5, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)  # sorted by class, as files often are
    X = rng.standard_normal((len(y), features)) + y[:, None]
    return X, y


def _npy_folder(path, X, y, **test):
    path.mkdir()
    np.save(path / "X.npy", X.astype(np.float32))
    np.save(path / "y.npy", y)
    for name, array in test.items():
        np.save(path / f"{name}.npy", array)
    return path


def test_npy_folder_npz_and_csv_get_the_same_stratified_split(tmp_path):
    X, y = _class_sorted()
    np.savez(tmp_path / "d.npz", X=X.astype(np.float32), y=y)
    np.savetxt(
        tmp_path / "d.csv",
        np.column_stack([X.astype(np.float32), y]),
        delimiter=",",
        fmt="%.9g",
    )
    folder = _npy_folder(tmp_path / "npy", X, y)
    splits = [
        load_dataset(str(p), seed=3) for p in (folder, tmp_path / "d.npz", tmp_path / "d.csv")
    ]
    for data in splits:
        assert sorted(set(data.y_test.tolist())) == [0, 1, 2, 3]  # every class in the test split
        assert np.bincount(data.y_test).tolist() == [25, 25, 25, 25]
        np.testing.assert_array_equal(  # float32 values, which %.9g writes exactly
            np.asarray(data.X_test).astype(np.float32), np.asarray(splits[0].X_test)
        )
        assert data.split == {"seed": 3, "test_fraction": 0.25}
    other = load_dataset(str(folder), seed=4)
    assert not np.array_equal(np.asarray(other.X_test), np.asarray(splits[0].X_test))


@pytest.mark.parametrize("n", [3, 5, 7])
def test_a_tiny_split_keeps_a_test_row_and_every_class_in_training(n):
    y = np.arange(n) % 2
    train, test = stratified_split(y, seed=0)
    assert len(test) >= 1 and len(train) + len(test) == n
    assert set(y[train].tolist()) == {0, 1}
    assert not set(train.tolist()) & set(test.tolist())


def test_two_rows_of_two_classes_cannot_be_split():
    with pytest.raises(DataError, match="each of the 2 classes has one row"):
        stratified_split(np.array([0, 1]))


@pytest.mark.parametrize("n", [3, 5, 7])
def test_a_tiny_npy_folder_has_a_test_row(tmp_path, n):
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    data = load_dataset(str(_npy_folder(tmp_path / "f", X, np.arange(n) % 2)))
    assert data.X_test.shape[0] >= 1 and data.X_train.shape[0] + data.X_test.shape[0] == n


def test_the_split_is_the_same_as_before_for_many_classes():
    """One stable sort instead of a pass per class: the same rows, drawn in the same order
    as one permutation per class in ascending class order."""
    y = np.random.default_rng(1).integers(0, 50, 3000)
    rng = np.random.default_rng(7)
    expected_test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        expected_test.append(idx[: min(round(len(idx) * 0.25), len(idx) - 1)])
    _, test = stratified_split(y, seed=7)
    np.testing.assert_array_equal(test, np.sort(np.concatenate(expected_test)))


def test_a_class_missing_from_one_side_is_reported(tmp_path):
    X, y = _class_sorted(n=200)
    # a class with one row stays in training: the test split cannot measure it
    X = np.vstack([X, np.full((1, X.shape[1]), 9.0)])
    y = np.append(y, 7)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    result = run_cli(
        "train", "--dataset", tmp_path / "d.npz", "--epochs", 1, "--out", tmp_path / "r"
    )
    assert result.returncode == 0, result.stderr
    line = "warning: the test split has no rows of 1 of the 5 classes (7)"
    assert line in result.stdout
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["warnings"] == [line[len("warning: ") :]]
    # a test set with a class that training never saw
    folder = _npy_folder(
        tmp_path / "official",
        X[:200],
        y[:200],
        X_test=X[-11:].astype(np.float32),
        y_test=y[-11:],
    )
    result = run_cli("train", "--dataset", folder, "--epochs", 1, "--json", "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == [
        "the test split has no rows of 3 of the 5 classes (0, 1, 2)",
        "the training split has no rows of 1 of the 5 classes (7)",
    ]


def test_the_share_of_each_class_is_rounded_and_capped_to_keep_one_row_in_training():
    """Half of two rows is one row of each class; 0.6 of one row rounds to that row, which
    stays in training; a share of 0 holds out nothing."""
    y = np.array([0, 0, 1, 1, 2, 2])
    train, test = stratified_split(y, test_fraction=0.5, seed=0)
    assert sorted(y[test].tolist()) == [0, 1, 2] and sorted(y[train].tolist()) == [0, 1, 2]
    y = np.array([0, 0, 0, 0, 0, 1])
    train, test = stratified_split(y, test_fraction=0.6, seed=0)
    assert y[test].tolist() == [0, 0, 0] and sorted(y[train].tolist()) == [0, 0, 1]
    train, test = stratified_split(y, test_fraction=0, seed=0)
    assert train.tolist() == list(range(6)) and test.tolist() == []
