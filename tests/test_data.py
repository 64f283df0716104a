"""Datasets, file loading and minibatches."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.helpers import asarray, traced_peak
from xpnet import backend
from xpnet.data import (
    DataError,
    batches,
    load_dataset,
    load_digits,
    load_file,
    read_arrays,
    read_features,
    stratified_split,
)


def test_digits_split():
    d = load_digits(seed=0)
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64)
    assert d.classes == list(range(10))
    assert d.X_train.min() == 0.0 and d.X_train.max() == 16.0 and d.input_scale == 16.0
    # stratified: every class keeps a quarter of its samples in the test split
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), np.round(counts * 0.25))
    again = load_digits(seed=0)
    np.testing.assert_array_equal(d.X_test, again.X_test)
    other = load_digits(seed=1)
    assert not np.array_equal(d.y_test, other.y_test)


def test_stratified_split_keeps_a_training_sample_per_class():
    y = np.array([0, 0, 0, 0, 1, 2, 2])
    train, test = stratified_split(y, seed=0)
    assert sorted(np.concatenate([train, test])) == list(range(7))
    assert set(y[train]) == {0, 1, 2}


def test_npz_and_csv_files(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), np.repeat([3, 7], 20)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    d = load_file(tmp_path / "d.npz")
    assert d.classes == [3, 7] and d.n_features == 3 and len(d.y_test) == 10
    rows = ["a,b,c,label"] + [
        f"{a},{b},{c},{'cat' if t == 3 else 'dog'}" for (a, b, c), t in zip(X, y, strict=True)
    ]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    d = load_file(tmp_path / "d.csv")
    assert d.classes == ["cat", "dog"] and d.n_features == 3
    first = [f"{t},{a},{b},{c}" for (a, b, c), t in zip(X, y, strict=True)]
    (tmp_path / "first.csv").write_text("\n".join(first))
    assert load_file(tmp_path / "first.csv", label_column=0).classes == [3, 7]
    (tmp_path / "named.csv").write_text("\n".join(rows))
    d = load_dataset(str(tmp_path / "named.csv"), label_column="label")
    assert d.n_features == 3 and d.classes == ["cat", "dog"]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.npz", None, "no such file"),
        ("d.txt", "1,2\n", "unsupported data file type '.txt'"),
        ("ragged.csv", "1,2,0\n3,1\n", r"line 2: 2 columns, the first row has 3"),
        ("text.csv", "1,2,0\n3,x,1\n", r"line 2: feature value 'x' is not a number"),
        ("nan.csv", "1,2,0\nnan,1,1\n", "non-finite value at row 1, column 0"),
        ("one.csv", "1,2,0\n3,1,0\n", "need at least 2 classes"),
        ("empty.csv", "\n", "empty file"),
        ("noheader.csv", "a,b,c\n1,2,0\n2,3,1\n", r"no column named 'z'"),
        ("bad.npz", "not a zip", "not a readable .npz"),
        ("semi.csv", "1;2;0\n3;1;1\n", "one column and contains semicolons; xpnet reads comma"),
        ("tabs.csv", "1\t2\t0\n3\t1\t1\n", "one column and contains tabs"),
        ("adir.csv", "DIR", "adir.csv: is a directory; expected a data file"),
    ],
)
def test_malformed_files(tmp_path, name, content, match):
    path = tmp_path / name
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    label_column = "z" if name == "noheader.csv" else None
    with pytest.raises(DataError, match=match):
        load_file(path, label_column=label_column)


@pytest.mark.parametrize(
    ("sep", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars"), (" ", "spaces")]
)
def test_a_csv_of_one_column_holding_another_separator_is_named(tmp_path, sep, name):
    path = tmp_path / "d.csv"
    path.write_text(f"\n1{sep}2{sep}0\n3{sep}1{sep}1\n")
    with pytest.raises(DataError) as info:
        load_file(path)
    assert str(info.value) == (
        f"{path}: line 2 has one column and contains {name}; xpnet reads comma-separated "
        "files: save the file with commas between the columns"
    )
    path.write_text("1\n0\n")
    with pytest.raises(DataError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: need at least one feature column and a label column"


def test_a_csv_of_one_feature_and_its_label_is_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n0.5,0\n1.5,1\n2.5,0\n3.5,1\n")
    X, y = read_arrays(path)
    assert X.tolist() == [[0.5], [1.5], [2.5], [3.5]] and y.tolist() == [0, 1, 0, 1]


def test_npz_missing_arrays_and_pickled_objects(tmp_path):
    np.savez(tmp_path / "a.npz", features=np.zeros((4, 2)))
    with pytest.raises(DataError, match=r"expected arrays 'X' and 'y', missing \['X', 'y'\]"):
        load_file(tmp_path / "a.npz")
    np.savez(tmp_path / "o.npz", X=np.array([object(), object()], dtype=object), y=[0, 1])
    with pytest.raises(DataError, match=r"o.npz \(X\): holds Python objects, which are never"):
        load_file(tmp_path / "o.npz")  # object arrays need pickle, which is never allowed


def test_read_features(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6.0))
    assert read_features(tmp_path / "x.npy").shape == (1, 6)
    (tmp_path / "x.csv").write_text("f1,f2\n1,2\n3,4\n")
    np.testing.assert_array_equal(read_features(tmp_path / "x.csv"), [[1, 2], [3, 4]])
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    with pytest.raises(DataError, match="line 2: 1 columns, the first row has 2"):
        read_features(tmp_path / "bad.csv")


def test_batches_cover_every_row_on_device(xp, device):
    X = asarray(xp, device, np.arange(20.0).reshape(10, 2))
    y = asarray(xp, device, np.arange(10), "int64")
    rng = np.random.default_rng(0)
    seen = []
    for Xb, yb in batches(X, y, 4, rng=rng):
        assert backend.namespace(Xb) is xp and backend.device(Xb) == backend.device(X)
        np.testing.assert_array_equal(backend.to_numpy(Xb)[:, 0] / 2, backend.to_numpy(yb))
        seen.extend(backend.to_numpy(yb).tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    again = [
        backend.to_numpy(yb).tolist() for _, yb in batches(X, y, 4, rng=np.random.default_rng(0))
    ]
    assert [v for chunk in again for v in chunk] == seen
    sizes = [int(yb.shape[0]) for _, yb in batches(X, y, 4, drop_last=True)]
    assert sizes == [4, 4]


@pytest.mark.parametrize(("batch_size", "sizes"), [(4, [4, 4]), (5, [5, 5]), (16, [10])])
def test_drop_last_leaves_out_a_short_last_batch_but_never_the_only_one(batch_size, sizes):
    from xpnet.data.batching import batch_count, host_batches

    X, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    got = [int(yb.shape[0]) for _, yb in batches(X, y, batch_size, drop_last=True)]
    assert got == sizes and batch_count(10, batch_size, True) == len(sizes)
    kept = [int(yb.shape[0]) for _, yb in batches(X, y, batch_size)]
    assert sum(kept) == 10 and batch_count(10, batch_size, False) == len(kept)
    rng = np.random.default_rng(0)
    moved = host_batches(X, y, batch_size, lambda *a: a, rng=rng, drop_last=True)
    assert [int(yb.shape[0]) for _, yb in moved] == sizes


def test_mnist1d_needs_its_package(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_mnist1d(name, *args, **kwargs):
        if name.startswith("mnist1d"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mnist1d)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist1d")
    assert str(info.value) == (
        "dataset 'mnist1d' needs the mnist1d package: pip install 'xpnet[datasets]'"
    )


@pytest.fixture
def fake_mnist1d(monkeypatch):
    """A stand-in for the mnist1d package: its calls, and the arrays it generates (labels
    1, 3, ..., 9, so that class ids differ from labels)."""
    import sys
    import types

    calls = []
    rng = np.random.default_rng(0)
    data = {
        "x": rng.standard_normal((40, 40)).astype(np.float32),
        "y": 2 * (np.arange(40) % 5) + 1,
        "x_test": rng.standard_normal((10, 40)).astype(np.float32),
        "y_test": 2 * (np.arange(10) % 5) + 1,
    }

    def make_dataset(args):
        calls.append(args)
        return data

    package = types.ModuleType("mnist1d")
    module = types.ModuleType("mnist1d.data")
    module.get_dataset_args = lambda: "default-args"
    module.make_dataset = make_dataset
    monkeypatch.setitem(sys.modules, "mnist1d", package)
    monkeypatch.setitem(sys.modules, "mnist1d.data", module)
    return calls, data


def test_mnist1d_generated_once_then_cached(fake_mnist1d, monkeypatch, tmp_path):
    """The loader calls the package's generator once and reads the cache afterwards; the
    dataset is the official split, float64 features and class ids."""
    calls, data = fake_mnist1d
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = load_dataset("mnist1d")
    second = load_dataset("mnist1d")
    assert calls == ["default-args"]
    assert (tmp_path / "xpnet" / "mnist1d.npz").is_file()
    for d in (first, second):
        assert d.name == "mnist1d" and d.split == {"official": True}
        assert d.classes == [1, 3, 5, 7, 9]
        assert d.X_train.dtype == d.X_test.dtype == np.float64
        np.testing.assert_array_equal(d.X_train, data["x"])
        np.testing.assert_array_equal(d.X_test, data["x_test"])
        np.testing.assert_array_equal(d.y_train, (data["y"] - 1) // 2)
        np.testing.assert_array_equal(d.y_test, (data["y_test"] - 1) // 2)


@pytest.mark.parametrize("xdg", [None, ""])
def test_mnist1d_is_cached_under_the_home_folder_without_xdg_cache_home(
    fake_mnist1d, monkeypatch, tmp_path, xdg
):
    """``~/.cache/xpnet`` when XDG_CACHE_HOME is unset or empty, as the XDG rules say."""
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    load_dataset("mnist1d")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz")] == [
        ".cache/xpnet/mnist1d.npz"
    ]


def test_mnist1d_cache_dir_is_made_or_reused(fake_mnist1d, monkeypatch, tmp_path):
    from xpnet.data import load_mnist1d

    calls, _ = fake_mnist1d
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "unused"))
    nested = tmp_path / "a" / "b"  # made with its parents
    assert load_mnist1d(cache_dir=nested).classes == [1, 3, 5, 7, 9]
    (tmp_path / "there").mkdir()  # an existing folder without the file
    load_mnist1d(cache_dir=str(tmp_path / "there"))
    assert len(calls) == 2 and not (tmp_path / "unused").exists()
    assert (nested / "mnist1d.npz").is_file() and (tmp_path / "there" / "mnist1d.npz").is_file()


def test_a_tampered_mnist1d_cache_is_refused_naming_it(fake_mnist1d, tmp_path):
    """The cache is read as every data file is: an object array is never unpickled, and
    a cache without its arrays says how to make it again."""
    from xpnet.data import load_mnist1d

    _, data = fake_mnist1d
    cache = tmp_path / "mnist1d.npz"
    np.savez(cache, **{**data, "y": np.array([object()] * 40)}, allow_pickle=True)
    with pytest.raises(DataError) as info:
        load_mnist1d(cache_dir=tmp_path)
    assert str(info.value) == f"{cache} (y): holds Python objects, which are never unpickled"
    np.savez(cache, x=data["x"], y=data["y"])
    with pytest.raises(DataError) as info:
        load_mnist1d(cache_dir=tmp_path)
    assert str(info.value) == (
        f"{cache}: the MNIST-1D cache lacks x_test, y_test; delete it to generate it again"
    )
    np.savez(cache, **{**data, "x_test": np.full((10, 40), np.nan)})
    with pytest.raises(DataError) as info:
        load_mnist1d(cache_dir=tmp_path)
    assert str(info.value) == f"{cache} (test): X has a non-finite value at row 0, column 0"


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        load_file(tmp_path / "missing.csv")
    assert isinstance(info.value, DataError) and info.value.filename.endswith("missing.csv")


def test_split_is_recorded(tmp_path):
    d = load_dataset("digits", seed=4)
    record = d.record()
    assert record["split"] == {"seed": 4, "test_fraction": 0.25}
    assert record["path"] is None and record["sha256"] is None
    assert record["n_train"] + record["n_test"] == 1797
    rows = ["1,2,a", "2,1,b", "3,3,a", "0,1,b", "5,2,a", "1,1,b", "2,2,a", "3,0,b"]
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")
    record = load_file(tmp_path / "f.csv", seed=2).record()
    assert record["path"] == str((tmp_path / "f.csv").resolve())
    import hashlib

    assert record["sha256"] == hashlib.sha256((tmp_path / "f.csv").read_bytes()).hexdigest()
    assert record["split"]["seed"] == 2 and record["classes"] == ["a", "b"]


@pytest.mark.parametrize(
    ("label_column", "labels", "header", "newline"),
    [
        (None, "ints", False, "\n"),
        ("label", "strings", True, "\r\n"),
        (1, "floats", True, "\n"),
        (0, "strings", False, "\n"),
        (0, "ints", False, "\n"),  # numeric labels: one pass, then a column taken out
        (3, "floats", False, "\n"),
    ],
)
def test_fast_csv_reader_equals_the_row_reader(tmp_path, label_column, labels, header, newline):
    """NumPy's C parser (the fast path) and the row-by-row reader read the same arrays,
    with a header or without, the label anywhere, blank lines, quotes and CRLF endings."""
    from xpnet.data.csvfile import _read_csv, _read_csv_rows

    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4)).round(5)
    y = {
        "ints": rng.integers(0, 3, 50).astype(str),
        "strings": rng.choice(["cat", "dog", "owl"], 50),
        "floats": rng.choice(["0.5", "1.5"], 50),
    }[labels]
    index = {None: 4, "label": 2, 3: 3, 1: 1, 0: 0}[label_column]
    lines = ["a,b,label,c,d" if label_column == "label" else "a,label,b,c,d"] if header else []
    for k in range(50):
        cells = [f"{v:.5f}" for v in X[k]]
        cells.insert(index, f'"{y[k]}"' if labels == "strings" else y[k])
        lines.append(",".join(cells))
        if k == 10:
            lines.append("")
    path = tmp_path / "d.csv"
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    fast_X, fast_y = _read_csv(path, label_column)
    slow_X, slow_y = _read_csv_rows(path, 5, index, header)
    np.testing.assert_array_equal(fast_X, slow_X)
    np.testing.assert_array_equal(fast_y, slow_y)
    assert fast_y.dtype == slow_y.dtype  # the readers agree on the labels' type too
    assert fast_y.dtype.kind == {"ints": "i", "strings": "U", "floats": "f"}[labels]
    np.testing.assert_allclose(fast_X, X)


def _npy_claiming(shape, dtype="<f8", body=b"\0" * 16):
    """The bytes of a ``.npy`` file whose header claims ``shape`` over a tiny body."""
    import io

    out = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + body


def test_sizes_claimed_by_a_header_are_checked_before_anything_is_allocated(tmp_path):
    """A 10**10-value ``y.npy`` of a few hundred bytes, the same claim inside a ``.npz``, a
    prediction input: each refused from its header, as every reader checks a claim."""
    import zipfile

    from xpnet.data import read_features

    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "X.npy", np.zeros((4, 2)))
    (folder / "y.npy").write_bytes(_npy_claiming((10**10,)))
    with pytest.raises(DataError, match=r"y.npy: the header claims 80000000000 bytes of data"):
        load_dataset(folder)
    (tmp_path / "x.npy").write_bytes(_npy_claiming((10**6, 10**4)))
    with pytest.raises(DataError, match=r"x.npy: the header claims 80000000000 bytes"):
        read_features(tmp_path / "x.npy")
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as archive:
        archive.writestr("X.npy", _npy_claiming((10**5, 10**5)))
        archive.writestr("y.npy", _npy_claiming((2,)))
    with pytest.raises(DataError, match=r"c.npz \(X\): the header claims 80000000000 bytes"):
        load_file(tmp_path / "c.npz")


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A member of 80 MB of zeros deflates a thousandfold: refused from the zip's record."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", _npy_claiming((80_000, 125), body=bytes(80_000_000)))
        archive.writestr("y.npy", _npy_claiming((80_000,), "<i8", body=bytes(640_000)))
    assert (tmp_path / "bomb.npz").stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb.npz \(X\): .* refused as a decompression bomb"):
        load_file(tmp_path / "bomb.npz")


def test_labels_sorted_by_class_compress_a_thousandfold_and_still_load(tmp_path):
    """Below the floor of a bomb (64 MB), any ratio is inflated: sorted labels are data."""
    import zipfile

    y = np.repeat(np.arange(2), 100_000)
    np.savez_compressed(tmp_path / "s.npz", X=np.ones((200_000, 1)), y=y)
    with zipfile.ZipFile(tmp_path / "s.npz") as archive:  # the premise: beyond 200-fold
        info = archive.getinfo("y.npy")
        assert info.file_size > 200 * info.compress_size
    X, labels = read_arrays(tmp_path / "s.npz")
    assert X.shape == (200_000, 1) and np.array_equal(labels, y)


def test_an_npz_with_its_own_test_split_is_refused_not_read_in_part(tmp_path):
    np.savez(tmp_path / "s.npz", X=np.zeros((4, 2)), y=[0, 1, 0, 1], X_test=np.zeros((2, 2)))
    with pytest.raises(DataError, match="holds X_test; xpnet splits X and y itself"):
        load_file(tmp_path / "s.npz")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_never_opened_for_reading(tmp_path):
    """A FIFO without a writer would block any reader that opened it: refused unread."""
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "X.npy", np.zeros((4, 2)))
    os.mkfifo(folder / "y.npy")
    with pytest.raises(DataError, match=r"y\.npy: not a regular file"):
        load_dataset(folder)


_ROWS = "1.5,2,0\n3,4.5,1\n5,6,0\n7,8.5,1\n"


@pytest.mark.parametrize(
    ("content", "label_column"),
    [
        ("\ufeff" + _ROWS, None),  # Excel's "CSV UTF-8": a byte-order mark, no header
        ("\ufeffa,b,label\n" + _ROWS, None),  # the mark before a header
        ("0,1,label\n" + _ROWS, None),  # pandas' default header: numbers, then the label's name
        ("x,y,label\r\n" + _ROWS.replace("\n", "\r\n"), None),  # Windows line ends
        ("a,b,label\n" + _ROWS + "\n\n", "label"),  # blank lines at the end
        ('"a","b","label"\n' + '"1.5","2","0"\n3,4.5,1\n5,6,0\n7,8.5,1\n', None),  # quoted
    ],
    ids=["bom", "bom-header", "numeric-header", "crlf", "blank-lines", "quoted"],
)
def test_csv_dialects_read_the_same_rows(tmp_path, content, label_column):
    """Every dialect gives the same four rows and labels as the plain file, none dropped,
    none read as a class."""
    path = tmp_path / "d.csv"
    path.write_bytes(content.encode("utf-8"))
    X, labels = read_arrays(path, label_column=label_column)
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4.5], [5, 6], [7, 8.5]])
    assert labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("content", "label_column", "match"),
    [
        ("1,2,0\n3,4,1,7\n5,6,0\n7,8,1\n", None, r"line 2: 4 columns, the first row has 3"),
        ('1,2,0\n"3,5",4,1\n5,6\n', None, r"line 3: 2 columns, the first row has 3"),
        ("1,2,0\n3,4,\n5,6,1\n7,8,1\n", None, "data row 2 has a blank label"),
        ("a,a,label\n1,2,0\n3,4,1\n", "a", "2 columns are named 'a'"),
    ],
    ids=["ragged-long", "ragged-quoted", "blank-label", "duplicate-name"],
)
def test_csv_rows_that_cannot_be_read_right_are_refused_by_name(
    tmp_path, content, label_column, match
):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        read_arrays(path, label_column=label_column)


def test_a_csv_line_longer_than_any_row_is_refused_unread(tmp_path):
    """A line of millions of cells is refused from its length, not split into cells."""
    from xpnet.data import MAX_CSV_LINE

    path = tmp_path / "d.csv"
    path.write_text("1,2,0\n" + "1," * (MAX_CSV_LINE // 2 + 1) + "0\n3,4,1\n")
    with pytest.raises(DataError, match=rf"line 2: longer than {MAX_CSV_LINE} characters"):
        read_arrays(path)
    path.write_text("1," * (MAX_CSV_LINE // 2 + 1) + "0\n3,4,1\n")  # the first line too
    with pytest.raises(DataError, match=rf"line 1: longer than {MAX_CSV_LINE} characters"):
        read_arrays(path)


def test_a_csv_line_of_64_mib_is_refused_holding_a_few_mib(tmp_path):
    """The widths pass reads 1 MiB at a time and holds at most one line's bound of a line
    it has not finished: a file is never read whole to find its lines."""
    path = tmp_path / "d.csv"
    with open(path, "wb") as fh:
        fh.write(b"1,2,0\n3,4,1\n" + b"5" * (64 << 20) + b",6,1\n")
    with traced_peak() as peak, pytest.raises(DataError, match=r"line 3: longer than"):
        read_arrays(path)
    assert peak.bytes < 16 << 20, peak.bytes / 2**20


@pytest.mark.parametrize("row", [0, 1, 2], ids=["first line", "second line", "third line"])
@pytest.mark.parametrize("newline", [True, False], ids=["last line ended", "last line open"])
def test_a_csv_line_of_the_most_characters_is_read_and_not_one_more(tmp_path, row, newline):
    """The bound counts a line's characters with its newline (a last line without one, its
    characters): a line of exactly MAX_CSV_LINE is read, one character more is refused,
    among the first rows (read as text) or later (checked a block of bytes at a time)."""
    from xpnet.data import MAX_CSV_LINE

    k = MAX_CSV_LINE // 2 - 1  # "1," * k + "0\n" is MAX_CSV_LINE characters
    rows = ["1," * k + "0\n", "1," * k + "1\n", "1," * k + ("0\n" if newline else "00")]
    path = tmp_path / "d.csv"
    path.write_text("".join(rows))
    X, y = read_arrays(path)
    assert X.shape == (3, k) and y.tolist() == [0, 1, 0]
    rows[row] = "1" + rows[row]
    path.write_text("".join(rows))
    for read in (read_arrays, read_features):  # training data, and features to predict
        with pytest.raises(DataError) as info:
            read(path)
        assert str(info.value) == (
            f"{path}, line {row + 1}: longer than {MAX_CSV_LINE} characters, more than a CSV "
            "row xpnet reads; store data this wide as X.npy and y.npy"
        )


def test_complex_features_are_refused_not_truncated_to_their_real_part(tmp_path):
    from xpnet.data import read_features

    np.savez(tmp_path / "c.npz", X=np.ones((4, 2)) * (1 + 2j), y=[0, 1, 0, 1])
    with pytest.raises(DataError, match="X must be real numbers, got dtype complex128"):
        load_file(tmp_path / "c.npz")
    np.save(tmp_path / "c.npy", np.ones((2, 2)) * 1j)
    with pytest.raises(DataError, match=r"expected a real-valued .* dtype complex128"):
        read_features(tmp_path / "c.npy")


# -- CSV messages, read in this process (the command-line tests run in a child) ----------
@pytest.mark.parametrize(
    ("content", "n_features", "message"),
    [
        # the line in the file, blank lines and a header counted
        ("a,b\n\n1,2\n\n3,x\n", None, "line 5, column 2: 'x' is not a number"),
        ("1,2\n , \n3,4,5\n", None, "line 3: 3 columns, the first row has 2"),
        ("a,b,y\n1,2,cat\n", 2, "line 2, column 3: 'cat' is not a number; is the label "
                                "column still in the file? predict takes the features only"),
        ("a,b,y\n1,2,cat\n", 3, "line 2, column 3: 'cat' is not a number"),
        ("a,b,y\n1,2,cat\n", None, "line 2, column 3: 'cat' is not a number"),
    ],
)  # fmt: skip
def test_a_features_csv_is_refused_naming_the_line_and_cell(tmp_path, content, n_features, message):
    from xpnet.data import csvfile

    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        csvfile.read_features(path, n_features)
    assert str(info.value) == f"{path}, {message}"


def test_a_features_csv_skips_blank_rows_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("\ufeff1,2\n\n , \n3,4\n")  # no header: the mark is not one
    np.testing.assert_array_equal(read_features(path), [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize("row", [b"3,\xff,1\n", b'3,"\xff",1\n'], ids=["plain", "quoted"])
@pytest.mark.parametrize("reader", ["features", "training"])
def test_a_csv_that_is_not_utf8_is_refused_naming_it(tmp_path, reader, row):
    """Past the first block the parser decodes, so that the row-by-row reader is the one
    that meets the byte (the first rows are read on their own, before); the widths check,
    which parses a quoted row, reads the byte as a replacement character and goes on."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b,label\n" + b"1,2,0\n3,4,1\n" * 2000 + row)
    with pytest.raises(DataError) as info:
        read_features(path) if reader == "features" else load_file(path)
    assert str(info.value).startswith(
        f"{path}: cannot read CSV ('utf-8' codec can't decode byte 0xff in position "
    )


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (" , \n\na,b,label\n1,2,0\n\n3,x,1\n4,y,1\n", 6),
        ("\ufeff1,2,0\n3,x,1\n", 2),
        ("a,b,label\n1,2,cat\n3,x,dog\n", 3),
    ],
    ids=["blank rows and a header", "a byte-order mark", "text labels"],
)
def test_a_training_csv_names_the_first_bad_cell(tmp_path, content, line):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_file(path)
    assert str(info.value) == f"{path}, line {line}: feature value 'x' is not a number"


@pytest.mark.parametrize("where", ["early", "across a 1 MiB block"])
@pytest.mark.parametrize(
    ("row", "cells"), [("1,2,cat,9", 4), ('1,"2,5"', 2), ('"1,2,cat', 1), ("X", 1)],
    ids=["an extra cell", "a quoted comma", "an open quote", "one cell"],
)  # fmt: skip
def test_a_ragged_row_is_named_wherever_it_falls(tmp_path, where, row, cells):
    """Lines are checked 1 MiB at a time by their commas, and every line with a quote is
    parsed: each ragged row is named, after blank lines (first, and among the rows) or on
    the line that crosses a block's end. With string labels NumPy's parser reads only the
    columns it is given, so a row of four cells would otherwise be read as its first three."""
    k = 3 if where == "early" else ((1 << 20) - 15) // 8  # the row starts at 1 MiB - 1
    path = tmp_path / "d.csv"
    rows = "1,2,cat\n" * k + "   \n" + row + "\n" + "5,6,dog\n"
    path.write_text("\na,b,label\n" + rows)
    with pytest.raises(DataError) as info:
        load_file(path)
    assert str(info.value) == f"{path}, line {k + 4}: {cells} columns, the first row has 3"


@pytest.mark.parametrize(
    ("text", "calls"),
    [("\n\n1,2,0\n3,4,1\n", 1), ("\na,b,y\n1,2,0\n3,4,1\n", 1), ("a,b,y\n1,2,no\n3,4,yes\n", 3)],
    ids=["numbers after blank lines", "numbers under a header", "text labels"],
)
def test_a_well_formed_csv_is_read_by_numpys_parser_alone(tmp_path, monkeypatch, text, calls):
    """One numpy.loadtxt call for numeric labels; for text labels, the call that meets the
    text, then the features and the labels: the row-by-row reader, ten times slower, is
    kept for a malformed file."""
    import xpnet.data.csvfile as csvfile

    seen, loadtxt = [], np.loadtxt

    def counted(*args, **kwargs):
        seen.append(kwargs.get("usecols"))
        return loadtxt(*args, **kwargs)

    def no_row_reader(*args):
        raise AssertionError("the row-by-row reader read a well-formed file")

    monkeypatch.setattr(np, "loadtxt", counted)
    monkeypatch.setattr(csvfile, "_read_csv_rows", no_row_reader)
    path = tmp_path / "d.csv"
    path.write_text(text)
    X, y = read_arrays(path)
    assert X.tolist() == [[1.0, 2.0], [3.0, 4.0]] and len(seen) == calls
    assert y.tolist() == ([0, 1] if calls == 1 else ["no", "yes"])
    assert seen[1:] == ([] if calls == 1 else [[0, 1], [2]])


def test_labels_written_as_python_reads_numbers_stay_numbers(tmp_path):
    """NumPy's parser refuses "1_0" and the Arabic-Indic digit one; Python's float reads
    them, so they are the classes 10, 20 and 1, not text."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,1_0\n3,4,2_0\n5,6,\u0661\n7,8,1_0\n")
    _, y = read_arrays(path)
    assert y.dtype == np.int64 and y.tolist() == [10, 20, 1, 10]


def test_a_label_column_by_index_counts_from_either_end_or_by_name(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("X0,X1,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    for column, labels, features in [
        (None, [0, 1, 0, 1], [1, 3, 5, 7]), (2, [0, 1, 0, 1], [1, 3, 5, 7]),
        (-1, [0, 1, 0, 1], [1, 3, 5, 7]), (-3, [1, 3, 5, 7], [2, 4, 6, 8]),
        (0, [1, 3, 5, 7], [2, 4, 6, 8]), ("X1", [2, 4, 6, 8], [1, 3, 5, 7]),
    ]:  # fmt: skip
        X, y = read_arrays(path, label_column=column)
        assert y.tolist() == labels and X[:, 0].tolist() == features, column
    for column in (3, -4):
        with pytest.raises(DataError) as info:
            read_arrays(path, label_column=column)
        assert str(info.value) == f"{path}: label column {column} out of range for 3 columns"
    with pytest.raises(DataError) as info:
        read_arrays(path, label_column="z")
    assert str(info.value) == f"{path}: no column named 'z' in header ['X0', 'X1', 'y']"
    path.write_text("X0,y,y\n1,2,0\n3,4,1\n")
    with pytest.raises(DataError) as info:
        read_arrays(path, label_column="y")
    assert str(info.value) == f"{path}: 2 columns are named 'y'"


def test_a_long_row_then_short_rows_are_read(tmp_path):
    """Lines are measured from their own start, wherever they lie in a block: a row of
    3 MiB (under the bound) followed by short ones is read."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,cat\n" + " " * (3 << 20) + "3,4,dog\n" + "5,6,cat\n" * 8)
    data = load_file(path)
    assert data.X_train.shape[0] + data.X_test.shape[0] == 10


def test_a_csv_of_many_blocks_of_short_rows_is_read(tmp_path):
    """6 MiB of 8-byte rows: each 1 MiB block is checked whole, its last partial line
    carried to the next."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "1,2,cat\n3,4,dog\n" * (6 << 16))
    X, y = read_arrays(path)
    assert X.shape == (12 << 16, 2) and y[:2].tolist() == ["cat", "dog"]


def test_a_csv_is_read_in_a_few_times_its_size(tmp_path):
    """NumPy's parser reads the rows (8.3 MiB at the peak for these 1.5 MiB, measured);
    only the first two rows are read as Python lists, which would take 53 MiB for all."""
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "1,2,0\n3,4,1\n" * (2 << 16))
    with traced_peak() as peak:
        X, _ = read_arrays(path)
    assert X.shape == (4 << 16, 2) and peak.bytes < 24 << 20, peak.bytes / 2**20
