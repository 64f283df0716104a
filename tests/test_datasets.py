"""The Dataset each source gives, read in this process: its arrays, class ids, split and
record (name, path, SHA-256, label column, input scale), and the refusals of a folder of
``.npy`` files as whole messages.

The command-line tests cover the same sources in a child process, which mutation testing
cannot see; these pin what the readers return.
"""

from __future__ import annotations

import errno
import gzip
import os

import numpy as np
import pytest

from tests.test_idx import _idx
from tests.test_idx import _write_folder as _write_idx_folder
from tests.test_splits import _npy_folder as _write_npy_folder
from xpnet.data import DataError, data_sha256, load_dataset, load_file, load_npy, read_arrays
from xpnet.data import npy as npy_module
from xpnet.data.idx import IDX_FILES, read_idx
from xpnet.data.npy import RowSubset, is_npy_folder
from xpnet.errors import DataFileNotFoundError

LABELS = np.array([5, 7, 9])  # class ids 0, 1, 2: the labels are not their ids


def _xy(n, f=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, f)).astype(dtype), LABELS[np.arange(n) % 3]


def _npy_folder(folder, *, n=24, n_test=None, f=3):
    test = {}
    if n_test is not None:
        test["X_test"], test["y_test"] = _xy(n_test, f, seed=1)
    return _write_npy_folder(folder, *_xy(n, f), **test)


def _message(call, *args, **kwargs):
    """The whole message of the DataError that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def _ids(labels):
    return np.searchsorted(LABELS, labels)


def _assert_record(data, name, path, label_column=None, input_scale=None):
    assert data.name == name and data.path == str(path.resolve())
    assert data.sha256 == data_sha256(path) and len(data.sha256) == 64
    assert data.label_column == label_column and data.input_scale == input_scale
    record = data.record()
    assert record["name"] == name and record["sha256"] == data.sha256
    assert record["n_train"] == len(data.y_train) and record["n_test"] == len(data.y_test)


@pytest.mark.parametrize("kind", ["npz", "csv", "csv by name"])
def test_a_data_file_gives_a_seeded_stratified_split_and_its_record(tmp_path, kind):
    X, y = _xy(24, dtype=np.float64)
    if kind == "npz":
        path, label_column = tmp_path / "d.npz", None
        np.savez(path, X=X, y=y)
    else:
        path = tmp_path / "d.csv"
        label_column = "label" if kind == "csv by name" else None
        rows = [",".join([*(repr(float(v)) for v in x), str(t)]) for x, t in zip(X, y, strict=True)]
        path.write_text("\n".join((["a,b,c,label"] if label_column else []) + rows) + "\n")
    data = load_dataset(str(path), label_column=label_column, seed=3)
    _assert_record(data, str(path), path, label_column)
    assert data.classes == LABELS.tolist() and data.split == {"seed": 3, "test_fraction": 0.25}
    rows = np.concatenate([np.flatnonzero((X == x).all(axis=1)) for x in data.X_train])
    np.testing.assert_array_equal(data.y_train, _ids(y[rows]))
    assert len(data.y_train) == 18 and len(data.y_test) == 6  # a quarter of each class
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]
    assert data.X_train.dtype == np.float64


def test_an_npy_folder_without_test_files_is_split_on_disk(tmp_path):
    folder = _npy_folder(tmp_path / "f")
    X, y = _xy(24)
    data = load_dataset(str(folder), seed=2)
    _assert_record(data, str(folder), folder)
    assert isinstance(data.X_train, RowSubset) and isinstance(data.X_test, RowSubset)
    assert data.X_train.dtype == np.float32  # as stored, read a batch at a time
    np.testing.assert_array_equal(np.asarray(data.X_train), X[data.X_train.rows])
    np.testing.assert_array_equal(data.y_train, _ids(y[data.X_train.rows]))
    np.testing.assert_array_equal(data.y_test, _ids(y[data.X_test.rows]))
    assert data.split == {"seed": 2, "test_fraction": 0.25} and data.classes == [5, 7, 9]
    assert sorted([*data.X_train.rows, *data.X_test.rows]) == list(range(24))


def test_an_npy_folder_with_test_files_is_the_official_split(tmp_path):
    folder = _npy_folder(tmp_path / "f", n_test=7)
    X, y = _xy(24)
    Xt, yt = _xy(7, seed=1)
    data = load_dataset(str(folder))
    _assert_record(data, str(folder), folder)
    assert isinstance(data.X_train, np.memmap) and isinstance(data.X_test, np.memmap)
    np.testing.assert_array_equal(data.X_train, X)
    np.testing.assert_array_equal(data.X_test, Xt)
    np.testing.assert_array_equal(data.y_train, _ids(y))
    np.testing.assert_array_equal(data.y_test, _ids(yt))
    assert data.y_train.dtype == data.y_test.dtype == np.int64
    assert data.split == {"official": True} and data.classes == [5, 7, 9]


def test_an_npy_folder_with_one_test_row_is_read(tmp_path):
    data = load_dataset(str(_npy_folder(tmp_path / "f", n_test=1)))
    assert data.X_test.shape == (1, 3) and data.y_test.tolist() == [0]


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_folder_gives_its_official_split_and_record(tmp_path, gz):
    folder = _write_idx_folder(tmp_path / "idx", gz=gz)
    data = load_dataset(str(folder))
    _assert_record(data, str(folder), folder, input_scale=255.0)
    assert data.split == {"official": True} and data.classes == [0, 1, 2, 3]
    assert data.y_test.shape == (40,) and data.y_test.dtype == np.int64


def _refusal(folder, change):
    """The whole message that loading ``folder`` gives after ``change(folder)``."""
    change(folder)
    return _message(load_dataset, str(folder))


def test_an_npy_folder_s_refusals_name_the_file(tmp_path):
    def folder(name, n_test=5):
        return _npy_folder(tmp_path / name, n_test=n_test)

    f = folder("width")
    assert _refusal(f, lambda f: np.save(f / "X_test.npy", np.zeros((5, 4), np.float32))) == (
        f"{f}: X_test.npy has 4 features, X.npy 3"
    )
    f = folder("short")
    assert _refusal(f, lambda f: np.save(f / "y_test.npy", np.zeros(4, np.int64))) == (
        f"{f / 'y_test.npy'}: expected 5 labels of shape (5,), got shape (4,)"
    )
    f = folder("labels2d")
    assert _refusal(f, lambda f: np.save(f / "y.npy", np.zeros((24, 1), np.int64))) == (
        f"{f / 'y.npy'}: expected 24 labels of shape (24,), got shape (24, 1)"
    )
    for name, bad in [
        ("ints", np.zeros((24, 3), np.int64)),
        ("flat", np.zeros(24, np.float32)),
        ("none", np.zeros((0, 3), np.float32)),
        ("nofeatures", np.zeros((24, 0), np.float32)),
    ]:
        f = folder(name)
        assert _refusal(f, lambda f, bad=bad: np.save(f / "X.npy", bad)) == (
            f"{f / 'X.npy'}: expected float32 or float64 features of shape (N, F), got "
            f"{bad.dtype} of shape {bad.shape}"
        )
    f = folder("one class", n_test=None)
    assert _refusal(f, lambda f: np.save(f / "y.npy", np.full(24, 5))) == (
        f"{f}: need at least 2 classes, found 1"
    )
    f = folder("one class official")
    for name in ("y.npy", "y_test.npy"):
        np.save(f / name, np.full(np.load(f / name).shape, 5))
    assert _refusal(f, lambda f: None) == f"{f}: need at least 2 classes, found 1"
    f = folder("fractional")
    assert _refusal(f, lambda f: np.save(f / "y_test.npy", np.full(5, 0.5))) == (
        f"{f}/y_test.npy: y must hold class labels; got non-integer values"
    )
    f = folder("no y_test")
    (f / "y_test.npy").unlink()
    with pytest.raises(DataFileNotFoundError) as info:
        load_dataset(str(f))
    assert str(info.value) == f"{f / 'y_test.npy'}: no such file"


@pytest.mark.parametrize("row", [0, 9])
@pytest.mark.parametrize("where", ["X.npy", "X_test.npy"])
def test_a_non_finite_feature_is_named_by_its_row_across_chunks(tmp_path, monkeypatch, where, row):
    """The finiteness check reads a chunk of rows at a time; the row it names is the row
    in the file, in any chunk (the first row included)."""
    monkeypatch.setattr(npy_module, "_CHUNK_ROWS", 4)
    f = _npy_folder(tmp_path / "f", n=24, n_test=10)
    X = np.load(f / where)
    X[row, 1] = np.inf
    np.save(f / where, X)
    assert _refusal(f, lambda f: None) == f"{f / where}: row {row} holds a NaN or infinite value"


def test_defaults_two_classes_and_the_official_split_s_own_labels(tmp_path):
    """A split seeded 0 unless asked; two classes are enough; the training labels of an
    official split are checked under their own file's name."""
    path = tmp_path / "d.npz"
    X, y = _xy(8, dtype=np.float64)
    np.savez(path, X=X, y=(y // 2) % 2)
    f = _npy_folder(tmp_path / "split")
    for data in (load_dataset(str(path)), load_file(path), load_dataset(str(f)), load_npy(f)):
        assert data.split == {"seed": 0, "test_fraction": 0.25}
    f = _npy_folder(tmp_path / "official", n_test=5)
    for name in ("y.npy", "y_test.npy"):
        np.save(f / name, (np.load(f / name) // 2) % 2)
    assert load_dataset(str(f)).classes == [0, 1]
    assert _refusal(f, lambda f: np.save(f / "y.npy", np.full(24, 0.5))) == (
        f"{f}/y.npy: y must hold class labels; got non-integer values"
    )


def test_is_npy_folder_needs_a_folder_holding_x_npy(tmp_path):
    assert is_npy_folder(_npy_folder(tmp_path / "f")) and is_npy_folder(str(tmp_path / "f"))
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "X.npy", np.zeros((2, 2)))
    assert not is_npy_folder(tmp_path / "empty") and not is_npy_folder(tmp_path / "X.npy")
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "X.npy.gz").write_bytes(gzip.compress(b""))
    assert not is_npy_folder(tmp_path / "gz")


def test_labels_are_refused_naming_their_file(tmp_path):
    """The label checks of every reader, each message naming the file it read."""
    f = _npy_folder(tmp_path / "split")
    assert _refusal(f, lambda f: np.save(f / "y.npy", np.full(24, 0.5))) == (
        f"{f}/y.npy: y must hold class labels; got non-integer values"
    )
    path = tmp_path / "one.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(4))
    assert _message(load_dataset, str(path)) == f"{path}: need at least 2 classes, found 1"
    folder = _write_idx_folder(tmp_path / "idx", gz=False)
    (folder / IDX_FILES["test_labels"]).write_bytes(_idx(np.full(40, 0.5, np.float32), 0x0D))
    assert _message(load_dataset, str(folder)) == (
        f"{folder} (test labels): y must hold class labels; got non-integer values"
    )


@pytest.mark.parametrize("which", ["train_images", "test_images"])
def test_an_idx_folder_of_other_than_8_bit_images_has_no_input_scale(tmp_path, which):
    folder = _write_idx_folder(tmp_path / "idx", gz=False)
    n = 120 if which == "train_images" else 40
    (folder / IDX_FILES[which]).write_bytes(_idx(np.zeros((n, 4, 4), np.float32), 0x0D))
    assert load_dataset(str(folder)).input_scale is None


def test_an_idx_folder_s_refusals(tmp_path):
    folder = _write_idx_folder(tmp_path / "idx", gz=False)
    labels = folder / IDX_FILES["test_labels"]
    labels.write_bytes(_idx(np.zeros(39, np.uint8)))
    assert _message(load_dataset, str(folder)) == (
        f"{folder}: 40 test images but labels of shape (39,)"
    )
    labels.write_bytes(_idx(np.zeros((40, 1), np.uint8)))
    assert _message(load_dataset, str(folder)) == (
        f"{folder}: 40 test images but labels of shape (40, 1)"
    )
    for held in (39, 42):  # an uncompressed file is checked against its size
        labels.write_bytes(_idx(np.zeros(40, np.uint8))[: 8 + held].ljust(8 + held, b"\0"))
        assert _message(read_idx, labels) == (
            f"{labels} (shape (40,), uint8): the header claims 40 bytes of data, the file "
            f"holds {held}"
        )
    gz = _write_idx_folder(tmp_path / "gz", gz=True)
    path = gz / (IDX_FILES["test_labels"] + ".gz")
    for body, word in ((_idx(np.zeros(40, np.uint8))[:-1], "fewer"),
                       (_idx(np.zeros(40, np.uint8)) + b"\0", "more")):  # fmt: skip
        path.write_bytes(gzip.compress(body))
        assert _message(read_idx, path) == (
            f"{path}: the header says (40,) values of uint8 (40 bytes), the stream holds {word}"
        )
    (folder / IDX_FILES["train_labels"]).unlink()
    with pytest.raises(DataFileNotFoundError) as info:
        load_dataset(str(folder))
    stem = IDX_FILES["train_labels"]
    assert info.value.filename == str(folder / stem)
    assert str(info.value) == (
        f"{folder}: no {stem} (or {stem}.gz); an IDX dataset folder holds "
        f"{', '.join(IDX_FILES.values())}"
    )


def test_an_npz_with_its_own_test_split_is_refused(tmp_path):
    X, y = _xy(8, dtype=np.float64)
    cases = (({"y_test": y}, "y_test"), ({"X_test": X, "y_test": y}, "X_test and y_test"))
    for extra, held in cases:
        path = tmp_path / "d.npz"
        np.savez(path, X=X, y=y, **extra)
        assert _message(load_dataset, str(path)) == (
            f"{path}: holds {held}; xpnet splits X and y itself (stratified, seeded), so a "
            f"file with its own test split is refused rather than read in part: use a folder "
            f"of X.npy, y.npy, X_test.npy and y_test.npy for an official split"
        )


def test_a_row_subset_reads_its_rows_as_asked(tmp_path):
    np.save(tmp_path / "X.npy", np.arange(24, dtype=np.float32).reshape(8, 3))
    base = np.load(tmp_path / "X.npy", mmap_mode="r")
    view = RowSubset(base, np.array([1, 4, 6], dtype=np.int32))
    assert view.rows.dtype == np.int64 and view.shape == (3, 3) and len(view) == 3
    assert view.dtype == np.float32 and view.ndim == 2
    np.testing.assert_array_equal(view[np.array([2, 0])], base[[6, 1]])
    np.testing.assert_array_equal(view[1:, ...].rows, [4, 6])
    assert np.asarray(view).dtype == np.float32
    as64 = np.asarray(view, dtype=np.float64)
    assert as64.dtype == np.float64
    np.testing.assert_array_equal(as64, base[[1, 4, 6]])
    with pytest.raises(IndexError) as info:
        view[1:, 0]
    assert str(info.value) == "a RowSubset is indexed by rows only"


@pytest.mark.parametrize("source", ["memmap", "subset", "memory"])
def test_row_blocks_read_the_rows_in_order(tmp_path, source):
    from xpnet.data.npy import row_blocks

    X = np.arange(30, dtype=np.float64).reshape(10, 3)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    given, want = {
        "memmap": (mapped, X),
        "subset": (RowSubset(mapped, np.array([0, 2, 3, 5, 7, 9])), X[[0, 2, 3, 5, 7, 9]]),
        "memory": (X, X),
    }[source]
    blocks = row_blocks(given, 4)
    assert [b.rows for b in blocks] == [min(4, len(want) - s) for s in range(0, len(want), 4)]
    np.testing.assert_array_equal(np.concatenate([b.read() for b in blocks]), want)


def test_host_batches_of_a_subset_keep_the_labels_type(tmp_path):
    from xpnet.data import host_batches

    np.save(tmp_path / "X.npy", np.arange(20, dtype=np.float32).reshape(10, 2))
    view = RowSubset(np.load(tmp_path / "X.npy", mmap_mode="r"), np.arange(1, 10, 2))
    y = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    seen = list(host_batches(view, y, 2, lambda X, y: (X, y), rng=np.random.default_rng(0)))
    assert all(yb.dtype == np.int64 for _, yb in seen)
    pairs = sorted((float(x[0]), int(t)) for Xb, yb in seen for x, t in zip(Xb, yb, strict=True))
    assert pairs == [(2.0, 3), (6.0, 1), (10.0, 4), (14.0, 1), (18.0, 5)]


def test_standard_scaling_sums_float32_features_in_float64():
    """3 * 2**24 + 1 has no float32: a float32 sum would lose the 1."""
    from xpnet.data import standard_scaling

    X = np.array([[2.0**24], [2.0**24], [2.0**24], [1.0]], dtype=np.float32)
    mean, _ = standard_scaling(X)
    assert mean.tolist() == [[(3 * 2**24 + 1) / 4]]


@pytest.mark.parametrize(
    ("reader", "kind", "suffixes"),
    [
        ("read_arrays", "data file", ".npz or .csv"),
        ("read_features", "features file", ".npy or .csv"),
    ],
)
def test_a_reader_names_a_directory_a_device_and_an_unknown_suffix(
    tmp_path, reader, kind, suffixes
):
    import xpnet.data

    read = getattr(xpnet.data, reader)
    (tmp_path / "adir.csv").mkdir()
    assert _message(read, tmp_path / "adir.csv") == (
        f"{tmp_path / 'adir.csv'}: is a directory; expected a {kind} ({suffixes})"
    )
    assert _message(read, "/dev/zero") == (
        f"/dev/zero: not a regular file; expected a {kind} ({suffixes})"
    )
    (tmp_path / "x.TXT").write_text("1,2\n")
    assert _message(read, tmp_path / "x.TXT") == (
        f"{tmp_path / 'x.TXT'}: unsupported {kind} type '.txt'; use {suffixes}"
    )


def test_features_for_prediction_are_refused_naming_the_file(tmp_path):
    from xpnet.data import read_features

    refused = {"empty": np.zeros((0, 3)), "narrow": np.zeros((3, 0)),
               "cube": np.zeros((2, 2, 2)), "text": np.array([["a", "b"]])}  # fmt: skip
    for name, array in refused.items():
        np.save(tmp_path / f"{name}.npy", array)
        assert _message(read_features, tmp_path / f"{name}.npy") == (
            f"{tmp_path / f'{name}.npy'}: expected a real-valued (N, F) array, got shape "
            f"{array.shape}, dtype {array.dtype}"
        )
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    assert _message(read_features, tmp_path / "nan.npy") == (
        f"{tmp_path / 'nan.npy'}: features contain NaN or infinite values"
    )
    for name, text, says in [("empty.csv", "", "empty file"), ("blank.csv", "\n \n", "empty file"),
                             ("header.csv", "a,b\n\n", "no data rows")]:  # fmt: skip
        (tmp_path / name).write_text(text)
        assert _message(read_features, tmp_path / name) == f"{tmp_path / name}: {says}"
    (tmp_path / "labelled.csv").write_text("a,b,y\n1,2,cat\n")
    assert _message(read_features, tmp_path / "labelled.csv", n_features=2) == (
        f"{tmp_path / 'labelled.csv'}, line 2, column 3: 'cat' is not a number; is the label "
        f"column still in the file? predict takes the features only"
    )
    with pytest.raises(DataFileNotFoundError) as info:
        read_features(tmp_path / "gone.npy")
    assert str(info.value) == f"{tmp_path / 'gone.npy'}: no such file"
    np.save(tmp_path / "one.npy", np.array([1.0, 2.0]))  # one sample, as a row
    assert read_features(tmp_path / "one.npy").tolist() == [[1.0, 2.0]]


def test_arrays_stored_in_fortran_order_read_as_saved(tmp_path):
    """A ``.npy`` header may say Fortran order (``numpy.save`` of a transposed array):
    the bytes are then column by column."""
    from xpnet.data import read_features

    X = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.array([0, 1, 0, 1]))
    np.save(tmp_path / "x.npy", X)
    features, _ = read_arrays(tmp_path / "d.npz")
    np.testing.assert_array_equal(features, X)
    np.testing.assert_array_equal(read_features(tmp_path / "x.npy"), X)


def test_npy_format_versions_1_and_2_are_read_and_3_is_refused(tmp_path):
    from xpnet.data._files import read_npy

    X = np.arange(6.0).reshape(2, 3)
    for version in ((1, 0), (2, 0), (3, 0)):
        path = tmp_path / f"v{version[0]}.npy"
        with open(path, "wb") as fh:
            np.lib.format.write_array(fh, X, version=version)
        if version == (3, 0):
            assert _message(read_npy, path) == (
                f"{path}: not a readable .npy array (.npy format version (3, 0) is not read "
                f"here (1.0 and 2.0 are))"
            )
        else:
            np.testing.assert_array_equal(read_npy(path), X)


def test_an_npz_missing_one_of_its_arrays_names_that_one(tmp_path):
    for held, missing in (({"y": [0, 1]}, "['X']"), ({"X": np.zeros((2, 2))}, "['y']")):
        np.savez(tmp_path / "d.npz", **held)
        assert _message(read_arrays, tmp_path / "d.npz") == (
            f"{tmp_path / 'd.npz'}: expected arrays 'X' and 'y', missing {missing}"
        )


def test_the_recorded_sha256_is_of_the_file_s_bytes(tmp_path):
    """Against hashlib on the whole bytes, for a file larger than the 1 MiB blocks it is
    read in, and for a folder (each name, then its bytes, in the folder's order)."""
    import hashlib

    path = tmp_path / "d.npz"
    np.savez(path, X=np.random.default_rng(0).standard_normal((40000, 4)), y=np.arange(40000))
    assert path.stat().st_size > 1 << 20
    assert data_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    folder = _npy_folder(tmp_path / "f", n_test=3)
    want = hashlib.sha256()
    for name in ("X.npy", "y.npy", "X_test.npy", "y_test.npy"):
        want.update(name.encode() + (folder / name).read_bytes())
    assert data_sha256(folder) == want.hexdigest()


@pytest.mark.parametrize("reader", ["npy", "npz", "idx"])
def test_a_device_is_not_read_as_a_data_file(reader):
    from xpnet.data._files import read_npy, read_npz

    read = {"npy": read_npy, "npz": lambda p: read_npz(p, ("X",)), "idx": read_idx}[reader]
    assert _message(read, "/dev/zero") == "/dev/zero: not a regular file"


@pytest.mark.parametrize(
    ("reader", "says"),
    [
        ("npy", "not a readable .npy array"),
        ("npz", "not a readable .npz file"),
        ("idx", "cannot read"),
        ("csv", "cannot read CSV"),
    ],
)
def test_a_path_that_cannot_be_opened_is_refused_with_the_reason(tmp_path, reader, says):
    from xpnet.data._files import read_npy, read_npz
    from xpnet.data.csvfile import read_arrays as read_csv

    read = {
        "npy": read_npy,
        "npz": lambda p: read_npz(p, ("X",)),
        "idx": read_idx,
        "csv": read_csv,
    }[reader]
    (tmp_path / "file").write_bytes(b"")
    path = tmp_path / "file" / "x"  # a path through a regular file: ENOTDIR
    reason = f"[Errno {errno.ENOTDIR}] {os.strerror(errno.ENOTDIR)}: {str(path)!r}"
    assert _message(read, path) == f"{path}: {says} ({reason})"


def test_read_npy_reads_into_memory_within_the_budget_and_maps_beyond_it(tmp_path, monkeypatch):
    from xpnet.data._files import read_npy

    path = tmp_path / "x.npy"
    np.save(path, np.zeros((64, 4)))  # 2048 bytes of data
    monkeypatch.setenv("XPNET_MAX_INPUT_BYTES", "2048")
    held = read_npy(path)
    assert type(held) is np.ndarray and held.flags.writeable
    monkeypatch.setenv("XPNET_MAX_INPUT_BYTES", "2047")
    with pytest.raises(DataError) as info:
        read_npy(path)
    assert str(info.value).startswith(
        f"{path}: 2048 bytes of data would not fit the memory budget of 2047 bytes"
    )
    mapped = read_npy(path, mmap=True)  # a map is not held in memory: no budget
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    with pytest.raises(DataFileNotFoundError) as info:
        read_npy(tmp_path / "gone.npy")
    assert str(info.value) == f"{tmp_path / 'gone.npy'}: no such file"
    assert info.value.filename == str(tmp_path / "gone.npy")


def test_split_warnings_name_the_classes_missing_from_each_side():
    from xpnet.data import Dataset

    names = [f"c{k}" for k in range(12)]
    X = np.zeros((12, 1))
    data = Dataset("d", X, np.arange(12), X[:1], np.array([0]), names)
    assert data.split_warnings() == [
        "the test split has no rows of 11 of the 12 classes "
        "(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 ...)"
    ]
    data = Dataset("d", X, np.arange(11) % 11, X, np.arange(12) % 12, names)
    assert data.split_warnings() == ["the training split has no rows of 1 of the 12 classes (c11)"]
    ten = Dataset("d", X, np.arange(12), X[:2], np.array([0, 1]), names)
    assert ten.split_warnings() == [
        "the test split has no rows of 10 of the 12 classes "
        "(c2, c3, c4, c5, c6, c7, c8, c9, c10, c11)"
    ]
    assert Dataset("d", X, np.arange(12), X, np.arange(12), names).split_warnings() == []


def test_a_dataset_record_is_exactly_what_rebuilds_it(tmp_path):
    path = tmp_path / "d.csv"
    X, y = _xy(8, dtype=np.float64)
    rows = [",".join([str(t), *(repr(float(v)) for v in x)]) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    data = load_dataset(str(path), label_column=0, seed=5)
    assert data.record() == {
        "name": str(path),
        "path": str(path.resolve()),
        "sha256": data_sha256(path),
        "label_column": 0,
        "split": {"seed": 5, "test_fraction": 0.25},
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
        "classes": [5, 7, 9],
        "input_scale": None,
    }


def test_a_dataset_that_is_not_there_is_named_with_what_would_be(tmp_path):
    kinds = (
        "a built-in dataset (digits, mnist1d), a .npz or .csv file, or a folder of "
        "MNIST-format IDX files or of X.npy and y.npy"
    )
    hint = "; MNIST itself is not bundled: put its four IDX files in a folder and pass the folder"
    for spec in ("mnist", "Fashion-MNIST", "fashion_mnist", "KMNIST", "emnist", "gone.csv"):
        with pytest.raises(DataFileNotFoundError) as info:
            load_dataset(spec)
        want_hint = "" if spec == "gone.csv" else hint
        assert str(info.value) == f"{spec}: no such file or folder; expected {kinds}{want_hint}"
        assert info.value.filename == spec
    assert _message(load_dataset, str(tmp_path)) == (
        f"{tmp_path}: a folder without a dataset in it: expected MNIST's IDX files "
        f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte, gzipped or not) or X.npy and y.npy"
    )
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=[0, 1, 0, 1])
    for spec in (str(tmp_path / "d.npz"), "digits"):
        assert _message(load_dataset, spec, label_column=1) == (
            f"{spec}: a label column applies to CSV files only; this dataset stores its "
            f"labels apart from its features"
        )


def test_batches_refuse_features_and_labels_of_two_libraries():
    strict = pytest.importorskip("array_api_strict")
    from xpnet.data import batches

    for X, y in ((np.zeros((4, 2)), strict.zeros(4)), (strict.zeros((4, 2)), np.zeros(4))):
        with pytest.raises(TypeError):
            next(batches(X, y, 2))


def test_load_dataset_gives_the_digits_by_default():
    data = load_dataset()
    assert data.name == "digits" and data.X_train.shape == (1347, 64)


def test_shuffled_batches_stay_on_the_arrays_device_in_every_session():
    """On array-api-strict's second device: the order moves to the data's device, not the
    default one (the NumPy session, where mutants run, has one device)."""
    from tests.helpers import strict_devices
    from xpnet import backend
    from xpnet.data import batches

    strict, _, other = strict_devices()
    X = strict.reshape(strict.arange(12.0, device=other), (6, 2))
    y = strict.arange(6, device=other)
    seen = []
    for Xb, yb in batches(X, y, 4, rng=np.random.default_rng(0)):
        assert backend.device(Xb) == backend.device(yb) == other
        seen += backend.to_numpy(yb).tolist()
    assert sorted(seen) == list(range(6))


def test_an_array_larger_than_a_read_chunk_is_read_whole(tmp_path):
    """The body is read 16 MiB at a time into one buffer: 17 MiB takes two reads."""
    import io

    from xpnet.data._files import read_exactly, read_npy, read_npz

    X = np.arange((17 << 20) // 8, dtype=np.float64).reshape(-1, 8)
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", X=X)
    np.testing.assert_array_equal(read_npy(tmp_path / "x.npy"), X)
    np.testing.assert_array_equal(read_npz(tmp_path / "x.npz", ("X",))["X"], X)
    with pytest.raises(EOFError) as info:
        read_exactly(io.BytesIO(b"abc"), 5)
    assert str(info.value) == "the data end after 3 of the 5 bytes the header claims"


def test_the_split_is_seeded_0_by_default_and_an_unknown_shuffle_is_refused():
    from xpnet.data import batches, stratified_split
    from xpnet.errors import XpnetValueError

    y = np.arange(40) % 4
    default = stratified_split(y)
    for a, b in zip(default, stratified_split(y, seed=0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(default[1], stratified_split(y, seed=1)[1])
    with pytest.raises(XpnetValueError) as info:
        next(batches(np.zeros((4, 2)), np.zeros(4), 2, rng=np.random.default_rng(0), shuffle="x"))
    assert str(info.value) == "shuffle must be 'full' or 'blocks', got 'x'"


@pytest.mark.parametrize(
    ("X", "y", "says"),
    [
        (np.zeros(4), [0, 1, 0, 1], "X must be a 2-D array (samples, features) of at least 2 "
         "samples and 1 feature, got shape (4,)"),
        (np.zeros((1, 2)), [0], "X must be a 2-D array (samples, features) of at least 2 "
         "samples and 1 feature, got shape (1, 2)"),
        (np.zeros((3, 0)), [0, 1, 0], "X must be a 2-D array (samples, features) of at least "
         "2 samples and 1 feature, got shape (3, 0)"),
        (np.zeros((4, 2)), [0, 1, 0], "y must be 1-D with one label per row of X (4), got "
         "shape (3,)"),
        (np.zeros((4, 2)), [[0], [1], [0], [1]], "y must be 1-D with one label per row of X "
         "(4), got shape (4, 1)"),
        (np.full((4, 2), "a"), [0, 1, 0, 1], "X must be real numbers, got dtype <U1"),
        (np.array([[0, 1], [2, 3], [4, np.inf], [6, 7]]), [0, 1, 0, 1],
         "X has a non-finite value at row 2, column 1"),
        (np.zeros((4, 2)), [0, np.nan, 0, 1], "y holds a NaN or infinite label"),
        (np.zeros((4, 2)), [0, 1j, 0, 1], "y must hold class labels (integers or strings), "
         "got dtype complex128"),
    ],
)  # fmt: skip
def test_an_npz_s_arrays_are_checked_before_the_split(tmp_path, X, y, says):
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.asarray(y))
    assert _message(load_file, path) == f"{path}: {says}"


def test_a_csv_of_one_row_is_refused_for_its_shape(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\n")
    assert _message(load_file, path) == (
        f"{path}: X must be a 2-D array (samples, features) of at least 2 samples and 1 "
        "feature, got shape (1, 2)"
    )
    path.write_text("a,b,label\n")
    assert _message(load_file, path) == f"{path}: no data rows"


def test_read_arrays_refuses_a_label_column_for_an_npz_and_names_the_file(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 2)), y=[0, 1, 0, 1])
    assert _message(read_arrays, tmp_path / "d.npz", label_column=1) == (
        f"{tmp_path / 'd.npz'}: a label column applies to CSV files only; this dataset "
        "stores its labels apart from its features"
    )
    np.savez(tmp_path / "d.npz", X=np.zeros(4), y=[0, 1, 0, 1])
    assert _message(read_arrays, tmp_path / "d.npz").startswith(
        f"{tmp_path / 'd.npz'}: X must be a 2-D array"
    )


def test_whole_number_float_labels_are_the_integer_classes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(8.0).reshape(4, 2), y=np.array([0.0, 1.0, 0.0, 1.0]))
    data = load_file(path)
    assert data.classes == [0, 1] and all(type(c) is int for c in data.classes)
