"""Datasets and minibatches.

Every loader returns a :class:`Dataset` of host (NumPy) arrays: float64 features as the
source holds them (unscaled: the model carries its input scaling, see
:mod:`xpnet.data.scaling`), int64 class ids ``0..K-1`` and the original labels in
``classes``. Training code moves the
arrays to the model's backend and device once (:meth:`Dataset.to`), and :func:`batches`
slices them there, so no step copies data from the host.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .. import backend
from .._io import open_regular
from ..errors import DataError, DataFileNotFoundError, XpnetValueError
from ._files import file_sha256, read_npy, read_npz
from .idx import IDX_FILES, idx_folder_sha256, is_idx_folder, load_idx_folder
from .npy import RowSubset, is_npy_folder, npy_folder_sha256, on_disk, open_npy_folder
from .scaling import SCALINGS, fixed_scaling, standard_scaling

__all__ = [
    "BLOCK_BATCHES",
    "BUILTIN",
    "MAX_CSV_LINE",
    "SCALINGS",
    "DataError",
    "Dataset",
    "batches",
    "block_order",
    "data_sha256",
    "file_sha256",
    "fixed_scaling",
    "host_batches",
    "is_builtin",
    "load_dataset",
    "load_digits",
    "load_file",
    "load_idx",
    "load_mnist1d",
    "load_npy",
    "on_disk",
    "read_arrays",
    "read_features",
    "standard_scaling",
    "stratified_split",
]

TEST_FRACTION = 0.25


@dataclass
class Dataset:
    """A train/test split of a classification dataset (host arrays).

    Attributes
    ----------
    name : str
        ``"digits"``, ``"mnist1d"`` or the file path as given.
    X_train, X_test : numpy.ndarray or RowSubset
        ``(N, F)`` features: float64 in memory, or on disk in their stored dtype (a
        ``numpy.memmap`` or a :class:`~xpnet.data.npy.RowSubset` of one).
    y_train, y_test : numpy.ndarray
        ``(N,)`` int64 class ids in ``[0, K)``.
    classes : list
        The original label of each class id (JSON-serialisable).
    split : dict
        How the split was made: ``{"seed": int, "test_fraction": float}`` (a dataset with
        an official split, such as MNIST-1D, records ``{"official": True}``).
    path : str or None
        For a data file, its absolute path; None for a built-in dataset.
    sha256 : str or None
        For a data file, the SHA-256 of its bytes.
    label_column : int, str or None
        The CSV label column the file was read with.
    input_scale : float or None
        The fixed range of the features, where the source has one: 16 for the digits'
        pixels, 255 for 8-bit IDX images (``xpnet train`` divides by it inside the model).
        None for data without one.
    """

    name: str
    X_train: np.ndarray | RowSubset
    y_train: np.ndarray
    X_test: np.ndarray | RowSubset
    y_test: np.ndarray
    classes: list = field(default_factory=list)
    split: dict = field(default_factory=dict)
    path: str | None = None
    sha256: str | None = None
    label_column: int | str | None = None
    input_scale: float | None = None

    @property
    def n_features(self) -> int:
        """The number of feature columns.

        Returns
        -------
        int
            ``F``.
        """
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """The number of classes.

        Returns
        -------
        int
            ``K``.
        """
        return len(self.classes)

    def split_warnings(self) -> list[str]:
        """What makes this split's test score misleading: classes on one side only.

        A class that the test split lacks is not measured at all (a stratified split keeps
        a class with one row in training); a class that training lacks can never be
        predicted, so its test rows all count as errors.

        Returns
        -------
        list of str
            One sentence per problem; empty for a sound split.
        """
        train, test = set(np.unique(self.y_train).tolist()), set(np.unique(self.y_test).tolist())
        found = []
        for side, missing in (("test", train - test), ("training", test - train)):
            if missing:
                names = [self.classes[i] for i in sorted(missing)]
                shown = ", ".join(map(str, names[:10])) + (" ..." if len(names) > 10 else "")
                found.append(
                    f"the {side} split has no rows of {len(names)} of the {self.n_classes} "
                    f"classes ({shown})"
                )
        return found

    def record(self) -> dict:
        """What rebuilds this exact split, as JSON (checkpoints and ``metrics.json`` store it).

        Returns
        -------
        dict
            ``name``, ``path``, ``sha256``, ``label_column``, ``split``, ``n_train``,
            ``n_test``, ``classes`` and ``input_scale``.
        """
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "label_column": self.label_column,
            "split": dict(self.split),
            "n_train": int(self.y_train.shape[0]),
            "n_test": int(self.y_test.shape[0]),
            "classes": list(self.classes),
            "input_scale": self.input_scale,
        }


def stratified_split(y, *, test_fraction=TEST_FRACTION, seed=0):
    """Indices of a stratified train/test split, drawn with a seeded generator.

    Parameters
    ----------
    y : numpy.ndarray
        ``(N,)`` class ids.
    test_fraction : float
        The share of every class held out (rounded; at least one sample of each class stays
        in train). When rounding holds out no row at all, one row of the largest class is
        held out, so that a test split of at least two rows is never empty.
    seed : int
        Seeds the draw.

    Returns
    -------
    train : numpy.ndarray
        Sorted row indices of the training rows.
    test : numpy.ndarray
        Sorted row indices of the held-out rows.

    Raises
    ------
    DataError
        No class has two rows, so no row can be held out without leaving a class out of
        training.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    # each class's rows in ascending order, from one stable sort: O(N log N), not O(N K)
    order = np.argsort(y, kind="stable")
    starts = np.flatnonzero(np.r_[True, y[order][1:] != y[order][:-1]])
    groups = np.split(order, starts[1:])
    train, test = [], []
    for rows in groups:
        idx = rng.permutation(rows)
        n_test = min(round(len(idx) * test_fraction), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    if test_fraction > 0 and len(y) >= 2 and not any(len(t) for t in test):
        largest = max(range(len(groups)), key=lambda k: len(groups[k]))
        if len(train[largest]) < 2:
            raise DataError(
                f"cannot hold out a test split: each of the {len(groups)} classes has one row"
            )
        test[largest], train[largest] = train[largest][:1], train[largest][1:]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _checked(X, labels, source):
    """``(X as float64, labels)`` after checking shapes, dtypes and finiteness."""
    X = np.asarray(X)
    labels = np.asarray(labels)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise DataError(f"{source}: X must be a 2-D array (samples, features), got {X.shape}")
    if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
        raise DataError(
            f"{source}: y must be 1-D with one label per row of X ({X.shape[0]}), "
            f"got shape {labels.shape}"
        )
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool) or X.dtype.kind == "c":
        raise DataError(f"{source}: X must be real numbers, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        bad = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"{source}: X has a non-finite value at row {bad[0]}, column {bad[1]}")
    return X, _checked_labels(labels, source)


def _checked_labels(labels, source):
    """Class labels as integers or strings: whole-number floats become int64; NaN,
    infinite, fractional and complex labels are refused."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)):
            raise DataError(f"{source}: y holds a NaN or infinite label")
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{source}: y must hold class labels; got non-integer values")
        return labels.astype(np.int64)
    if labels.dtype.kind not in "biuUS":
        raise DataError(
            f"{source}: y must hold class labels (integers or strings), got dtype {labels.dtype}"
        )
    return labels


def _split(name, X, labels, *, seed, source, **where):
    """A :class:`Dataset` of checked arrays: class ids and a stratified split (of a
    memory map: :class:`~xpnet.data.npy.RowSubset` views that read nothing yet)."""
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source}: need at least 2 classes, found {len(classes)}")
    train, test = stratified_split(y, seed=seed)
    y = y.astype(np.int64)
    split = {"seed": int(seed), "test_fraction": TEST_FRACTION}
    classes = [c.item() for c in classes]
    return Dataset(
        name, _rows(X, train), y[train], _rows(X, test), y[test], classes, split, **where
    )


def _rows(X, index):
    """The rows ``index`` of ``X``: a view of a memory map, else a copy."""
    return RowSubset(X, index) if on_disk(X) else X[index]


def load_digits(*, seed=0) -> Dataset:
    """The bundled 8x8 digits: 1797 images, 10 classes, pixels from 0 to 16 (``input_scale`` 16).

    See ``xpnet/data/DIGITS.md`` for source and license.

    Parameters
    ----------
    seed : int
        Seeds the split.

    Returns
    -------
    Dataset
        Host arrays, split 75/25 stratified by ``seed``.
    """
    with resources.files(__package__).joinpath("digits.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as data:
            X, y = data["X"], data["y"]
    data = _split("digits", *_checked(X, y, "digits"), seed=seed, source="digits")
    data.input_scale = 16.0
    return data


def load_file(path, *, label_column=None, seed=0) -> Dataset:
    """A user dataset from a ``.npz`` or ``.csv`` file.

    A ``.npz`` holds arrays ``X`` and ``y``; a ``.csv`` has the label in the last column
    (or ``label_column``). A CSV header row is detected when its feature cells are not
    numbers.

    Parameters
    ----------
    path : str or Path
        The file.
    label_column : int or str, optional
        The CSV label column: an index or a header name (default: the last).
    seed : int
        Seeds the split.

    Returns
    -------
    Dataset
        Host arrays, split 75/25 stratified by ``seed``. ``path`` and ``sha256`` record the file.

    Raises
    ------
    DataFileNotFoundError
        The file does not exist (also a ``FileNotFoundError``).
    DataError
        The file is unreadable or malformed; the message names the place.
    """
    X, y = read_arrays(path, label_column=label_column)
    return _split(
        str(path),
        X,
        y,
        seed=seed,
        source=str(path),
        path=str(Path(path).resolve()),
        sha256=file_sha256(path),
        label_column=label_column,
    )


def _check_file(path, kind="data file"):
    """Raise a DataError that names the real problem unless ``path`` is a readable file."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a {kind}")
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: no such file", filename=str(path))
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a {kind}")


def _label_column_applies(spec, label_column):
    """Refuse a label column for data without columns: an option given is never ignored."""
    if label_column is not None and not str(spec).lower().endswith(".csv"):
        raise DataError(
            f"{spec}: a label column applies to CSV files only; this dataset stores its "
            f"labels apart from its features"
        )


def read_arrays(path, *, label_column=None):
    """The features and labels of a ``.npz`` or ``.csv`` data file, unsplit.

    Parameters
    ----------
    path : str or Path
        The file (see :func:`load_file`).
    label_column : int or str, optional
        The CSV label column.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)`` float64 features.
    labels : numpy.ndarray
        ``(N,)`` labels: integers or strings.

    Raises
    ------
    DataFileNotFoundError, DataError
        As for :func:`load_file`.
    """
    path = Path(path)
    _check_file(path, "data file (.npz or .csv)")
    _label_column_applies(path, label_column)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        X, y = _read_npz(path)
    elif suffix == ".csv":
        X, y = _read_csv(path, label_column)
    else:
        raise DataError(f"{path}: unsupported data file type {suffix!r}; use .npz or .csv")
    return _checked(X, y, str(path))


def read_features(path, *, n_features=None):
    """Features for prediction from a ``.npy`` array or a ``.csv`` of numbers.

    Parameters
    ----------
    path : str or Path
        A ``.npy`` array (a 1-D array is one sample) or a ``.csv`` (a header row is
        skipped).
    n_features : int, optional
        The width the model expects: a file of another width is refused, and a message
        says when the file looks like training data with its label column still in it.

    Returns
    -------
    numpy.ndarray
        ``(N, F)`` float64.

    Raises
    ------
    DataFileNotFoundError, DataError
        A missing, unreadable, non-numeric or non-finite file.
    """
    path = Path(path)
    _check_file(path, "features file (.npy or .csv)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        X = read_npy(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
        first_line = 1
        if rows and not all(_is_number(c) for c in rows[0]):
            rows, first_line = rows[1:], 2
        X = _numeric_rows(path, rows, first_line, n_features)
    else:
        raise DataError(f"{path}: unsupported input type {suffix!r}; use .npy or .csv")
    if X.ndim == 1:
        X = X[None, :]
    if (
        X.ndim != 2
        or X.shape[0] == 0
        or not np.issubdtype(X.dtype, np.number)
        or X.dtype.kind == "c"
    ):
        raise DataError(
            f"{path}: expected a real-valued (N, F) array, got shape {X.shape}, dtype {X.dtype}"
        )
    if not np.all(np.isfinite(X)):
        raise DataError(f"{path}: features contain NaN or infinite values")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"{path}: {X.shape[1]} columns, the model expects {n_features} features"
            + _label_hint(X.shape[1], n_features)
        )
    return X.astype(np.float64)


def _label_hint(width, n_features):
    """A hint for a file one column wider than the model: its label column is still in."""
    if width == n_features + 1:
        return "; is the label column still in the file? predict takes the features only"
    return ""


def _numeric_rows(path, rows, first_line, n_features):
    """The CSV rows as a float array, or a DataError naming the first cell that is not a
    number (and the label column, when that is what it is)."""
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        line = next(i for i, row in enumerate(rows, first_line) if len(row) != len(rows[0]))
        raise DataError(
            f"{path}, line {line}: {len(rows[line - first_line])} columns, the first row has "
            f"{len(rows[0])}"
        )
    cells = (
        (line, column, cell)
        for line, row in enumerate(rows, first_line)
        for column, cell in enumerate(row, 1)
    )
    bad = next((where for where in cells if not _is_number(where[2])), None)
    if bad is None:
        return np.asarray([[float(c) for c in row] for row in rows], dtype=np.float64)
    line, column, cell = bad
    hint = "" if n_features is None else _label_hint(len(rows[line - first_line]), n_features)
    raise DataError(f"{path}, line {line}, column {column}: {cell!r} is not a number{hint}")


def _read_npz(path):
    arrays = read_npz(path, ("X", "y", "X_test", "y_test"))
    missing = {"X", "y"} - set(arrays)
    if missing:
        raise DataError(f"{path}: expected arrays 'X' and 'y', missing {sorted(missing)}")
    extra = sorted({"X_test", "y_test"} & set(arrays))
    if extra:  # a split given in the file is not silently replaced by another
        raise DataError(
            f"{path}: holds {' and '.join(extra)}; xpnet splits X and y itself (stratified, "
            f"seeded), so a file with its own test split is refused rather than read in part: "
            f"use a folder of X.npy, y.npy, X_test.npy and y_test.npy for an official split"
        )
    return arrays["X"], arrays["y"]


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a byte-order mark dropped
            return [
                row for row in csv.reader(_lines(fh, path)) if row and any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None


#: The longest CSV line read, in characters: 200,000 cells of 20 characters. Wider data
#: belong in a ``.npy`` file; the bound keeps one line's cells within about 150 MB.
MAX_CSV_LINE = 4 * 1024 * 1024


def _lines(fh, path):
    """The lines of a text file, each refused when longer than :data:`MAX_CSV_LINE`."""
    for number, line in enumerate(iter(lambda: fh.readline(MAX_CSV_LINE + 1), ""), 1):
        if len(line) > MAX_CSV_LINE:
            raise DataError(_too_long(path, number))
        yield line


def _too_long(path, number):
    return (
        f"{path}, line {number}: longer than {MAX_CSV_LINE} characters, more than a CSV row "
        f"xpnet reads; store data this wide as X.npy and y.npy"
    )


def _first_rows(path, n=2):
    """``(line number, cells)`` of the first ``n`` non-blank rows of a CSV file (fewer in a
    shorter file); a byte-order mark (Excel's "CSV UTF-8") is not part of the first cell."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(_lines(fh, path))
            for row in reader:
                if row and any(c.strip() for c in row):
                    rows.append((reader.line_num, row))
                    if len(rows) == n:
                        break
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None
    return rows


def _check_widths(path, width, first_line):
    """Refuse a row whose number of cells differs from the first row's, naming its line.

    One pass over the bytes, 1 MB at a time: the commas of each line are counted with
    NumPy; the few lines that do not count ``width - 1`` commas, and every line with a
    quote (a quoted cell may hold commas), go through the csv module.
    """
    line, tail = 0, b""
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            data = tail + block
            end = data.rfind(b"\n") + 1
            data, tail = data[:end], data[end:]
            line = _check_block(path, data, line, width, first_line)
            if len(tail) > MAX_CSV_LINE:  # bytes, at least as many as characters
                raise DataError(_too_long(path, line + 1))
    if tail:
        _check_block(path, tail + b"\n", line, width, first_line)


def _check_block(path, data, line, width, first_line):
    """:func:`_check_widths` on whole lines ``data`` after ``line`` lines; returns the count."""
    if not data:
        return line
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    suspect = np.diff(np.searchsorted(np.flatnonzero(buf == ord(",")), ends), prepend=0)
    suspect = suspect != width - 1
    if b'"' in data:  # a quoted cell may hold commas: its line is parsed
        suspect |= np.diff(np.searchsorted(np.flatnonzero(buf == ord('"')), ends), prepend=0) > 0
    starts = np.concatenate([[0], ends[:-1] + 1])
    for k in np.flatnonzero(suspect):
        number = line + int(k) + 1
        if number < first_line:
            continue
        text = data[starts[k] : ends[k]].decode("utf-8", "replace").lstrip("\ufeff")
        if not text.strip():
            continue  # a blank line, skipped by every reader
        cells = len(next(csv.reader([text]), []))
        if cells != width:
            raise DataError(f"{path}, line {number}: {cells} columns, the first row has {width}")
    return line + len(ends)


def _read_csv(path, label_column):
    """Features and labels of a CSV file through NumPy's C parser (``numpy.loadtxt``): one
    pass for numeric labels, two for string labels. A malformed file is read again row by
    row, only to name the line and the cell that is wrong."""
    first_rows = _first_rows(path)
    if not first_rows:
        raise DataError(f"{path}: empty file")
    line_of_first, row = first_rows[0]
    width = len(row)
    if width < 2:
        other = next((d for d in (";", "\t", "|", " ") if d in row[0].strip()), None)
        if other is not None:
            name = {";": "semicolons", "\t": "tabs", "|": "vertical bars", " ": "spaces"}[other]
            raise DataError(
                f"{path}: line {line_of_first} has one column and contains {name}; xpnet "
                f"reads comma-separated files: save the file with commas between the columns"
            )
        raise DataError(f"{path}: need at least one feature column and a label column")
    second = [c.strip() for c in first_rows[1][1]] if len(first_rows) > 1 else None
    label_index, has_header = _label_column(path, [c.strip() for c in row], label_column, second)
    skip = line_of_first if has_header else line_of_first - 1
    _check_widths(path, width, line_of_first)  # a ragged row would read a wrong column
    features = [i for i in range(width) if i != label_index]
    options = {
        "delimiter": ",",
        "comments": None,
        "quotechar": '"',
        "skiprows": skip,
        "ndmin": 2,
        "encoding": "utf-8-sig",
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            try:
                data = np.loadtxt(path, dtype=np.float64, **options)
                if data.shape[1] != width:
                    raise ValueError("column count")
                X, labels = _without_column(data, label_index), data[:, label_index]
            except ValueError:  # string labels, or a malformed row (found below)
                X = np.loadtxt(path, dtype=np.float64, usecols=features, **options)
                labels = np.char.strip(
                    np.loadtxt(path, dtype=str, usecols=[label_index], **options).reshape(-1)
                )
    except ValueError:
        X, labels = _read_csv_rows(path, label_index, has_header)
    if X.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    if labels.dtype.kind == "U" and np.any(labels == ""):
        row = int(np.argmax(labels == "")) + 1
        raise DataError(f"{path}: data row {row} has a blank label")
    if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "U":
        labels = _numeric_labels(labels)  # numbers written oddly stay numbers
    return X, labels


def _label_column(path, first, label_column, second=None):
    """``(label index, whether the first row is a header)``; ``second`` is the next row."""
    width = len(first)
    text = None if label_column is None else str(label_column)
    if text is not None and not text.lstrip("-").isdigit():
        # a label column given by name: the first row is the header that names it
        if text not in first:
            raise DataError(f"{path}: no column named {text!r} in header {first}")
        if first.count(text) > 1:
            raise DataError(f"{path}: {first.count(text)} columns are named {text!r}")
        return first.index(text), True
    label_index = width - 1 if text is None else int(text)
    if not -width <= label_index < width:
        raise DataError(f"{path}: label column {text} out of range for {width} columns")
    label_index %= width
    # a header is a first row whose feature cells are not all numbers, or whose label cell
    # is text above numeric labels (pandas' "0,1,2,label")
    named = not all(_is_number(c) for i, c in enumerate(first) if i != label_index)
    over_numbers = (
        second is not None
        and len(second) == width
        and not _is_number(first[label_index])
        and _is_number(second[label_index])
    )
    return label_index, named or over_numbers


def _without_column(data, index):
    """``data`` without column ``index``: a view when it is the first or the last."""
    if index == data.shape[1] - 1:
        return data[:, :-1]
    if index == 0:
        return data[:, 1:]
    return np.delete(data, index, axis=1)


def _numeric_labels(values):
    try:
        numeric = values.astype(np.float64)
    except ValueError:
        return values
    return numeric.astype(np.int64) if np.all(numeric == np.round(numeric)) else numeric


def _read_csv_rows(path, label_index, has_header):
    """The row-by-row reader, for a file NumPy's parser refused: the first malformed cell
    is named from a stream of rows; a file without one (widths are checked before) is read
    as Python values."""
    _first_bad_cell(path, label_index, has_header)
    rows = _csv_rows(path)[1 if has_header else 0 :]
    X = [[float(c) for i, c in enumerate(row) if i != label_index] for row in rows]
    labels = np.asarray([row[label_index].strip() for row in rows], dtype=str)
    n_features = len(rows[0]) - 1 if rows else 0
    return np.asarray(X, dtype=np.float64).reshape(len(rows), n_features), _numeric_labels(labels)


def _first_bad_cell(path, label_index, has_header):
    """Raise a DataError naming the first feature cell that is not a number, holding one
    row at a time; return when there is none."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(_lines(fh, path))
            skipped = not has_header
            for row in reader:
                if not row or not any(c.strip() for c in row):
                    continue
                if not skipped:
                    skipped = True
                    continue
                for i, cell in enumerate(row):
                    if i != label_index and not _is_number(cell):
                        raise DataError(
                            f"{path}, line {reader.line_num}: feature value {cell!r} is not a "
                            f"number"
                        )
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read CSV ({err})") from None


def _cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "xpnet"


def load_mnist1d(*, seed=0, cache_dir=None) -> Dataset:
    """MNIST-1D: 4000 train and 1000 test sequences of length 40, 10 classes.

    Generated offline by the ``mnist1d`` package (``pip install 'xpnet[datasets]'``) with its
    default arguments and cached as ``.npz`` in the user's cache directory.

    Parameters
    ----------
    seed : int
        Ignored: the dataset has its own train/test split.
    cache_dir : str or Path, optional
        Where to cache it (default: ``$XDG_CACHE_HOME/xpnet`` or ``~/.cache/xpnet``).

    Returns
    -------
    Dataset
        The official split.
    """
    del seed
    cache = Path(cache_dir) if cache_dir is not None else _cache_dir()
    file = cache / "mnist1d.npz"
    if not file.is_file():
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:
            raise DataError(
                "dataset 'mnist1d' needs the mnist1d package: pip install 'xpnet[datasets]'"
            ) from None
        data = make_dataset(get_dataset_args())
        cache.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"]
        )
        os.replace(tmp, file)
    with np.load(file, allow_pickle=False) as d:
        X, y, Xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
    classes = np.unique(np.concatenate([y, yt]))
    return Dataset(
        "mnist1d",
        X.astype(np.float64),
        np.searchsorted(classes, y),
        Xt.astype(np.float64),
        np.searchsorted(classes, yt),
        [c.item() for c in classes],
        {"official": True},
    )


#: The built-in datasets by name: the one list that the CLI, runs and evaluation use.
BUILTIN = {"digits": load_digits, "mnist1d": load_mnist1d}


def is_builtin(spec) -> bool:
    """Whether a dataset spec names a built-in dataset rather than a file.

    Parameters
    ----------
    spec : str or Path
        A name from :data:`BUILTIN` or a path.

    Returns
    -------
    bool
        True for a built-in name.
    """
    return isinstance(spec, str) and spec in BUILTIN


def load_idx(folder) -> Dataset:
    """An IDX dataset folder (MNIST and its kin) with its official train and test split.

    Parameters
    ----------
    folder : str or Path
        A folder with the four IDX files under their standard names (:mod:`xpnet.data.idx`).

    Returns
    -------
    Dataset
        Pixels as stored (``input_scale`` 255 for 8-bit images), ``path`` and ``sha256``
        recording the folder.
    """
    X, y, Xt, yt, bits8 = load_idx_folder(folder)
    y = _checked_labels(y, f"{folder} (training labels)")
    yt = _checked_labels(yt, f"{folder} (test labels)")
    classes = np.unique(np.concatenate([y, yt]))
    return Dataset(
        str(folder),
        X,
        np.searchsorted(classes, y),
        Xt,
        np.searchsorted(classes, yt),
        [c.item() for c in classes],
        {"official": True},
        path=str(Path(folder).resolve()),
        sha256=idx_folder_sha256(folder),
        input_scale=255.0 if bits8 else None,
    )


def load_npy(folder, *, seed=0) -> Dataset:
    """A folder of ``.npy`` files, memory-mapped: a dataset larger than memory.

    Parameters
    ----------
    folder : str or Path
        A folder with ``X.npy`` and ``y.npy`` (:mod:`xpnet.data.npy`).
    seed : int
        Seeds the split of a folder without test files.

    Returns
    -------
    Dataset
        ``X_train`` and ``X_test`` stay on disk, in their stored dtype: the folder's
        ``X.npy`` and ``X_test.npy`` maps, or without test files
        :class:`~xpnet.data.npy.RowSubset` views of ``X.npy`` split as every data file is
        (stratified by class, seeded); the labels are in memory.
    """
    X, y, Xt, yt = open_npy_folder(folder)
    path, sha256 = str(Path(folder).resolve()), npy_folder_sha256(folder)
    if Xt is None:
        labels = _checked_labels(y, f"{folder}/y.npy")
        return _split(
            str(folder), X, labels, seed=seed, source=str(folder), path=path, sha256=sha256
        )
    y, yt = _checked_labels(y, f"{folder}/y.npy"), _checked_labels(yt, f"{folder}/y_test.npy")
    classes, ids = np.unique(np.concatenate([y, yt]), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{folder}: need at least 2 classes, found {len(classes)}")
    ids = ids.astype(np.int64)
    return Dataset(
        str(folder),
        X,
        ids[: len(y)],
        Xt,
        ids[len(y) :],
        [c.item() for c in classes],
        {"official": True},
        path=path,
        sha256=sha256,
    )


def data_sha256(path) -> str:
    """The SHA-256 that records a data file, or the four files of an IDX folder.

    Parameters
    ----------
    path : str or Path
        A data file or an IDX folder.

    Returns
    -------
    str
        Hexadecimal.
    """
    if is_npy_folder(path):
        return npy_folder_sha256(path)
    return idx_folder_sha256(path) if Path(path).is_dir() else file_sha256(path)


def load_dataset(spec="digits", *, label_column=None, seed=0) -> Dataset:
    """A built-in dataset by name or a data file by path.

    Parameters
    ----------
    spec : str or Path
        A name from :data:`BUILTIN` (``"digits"``, ``"mnist1d"``), a folder of IDX files
        (:func:`load_idx`: MNIST, with its official split), a folder of ``.npy`` files
        (:func:`load_npy`: memory-mapped, larger than memory) or a ``.npz``/``.csv`` file
        (:func:`load_file`).
    label_column : int or str, optional
        The CSV label column.
    seed : int
        Seeds the split.

    Returns
    -------
    Dataset
        Host arrays and the record of the split.
    """
    _label_column_applies(spec, label_column)
    if is_builtin(spec):
        return BUILTIN[spec](seed=seed)
    if is_idx_folder(spec):
        return load_idx(spec)
    if is_npy_folder(spec):
        return load_npy(spec, seed=seed)
    path = Path(spec)
    kinds = (
        f"a built-in dataset ({', '.join(BUILTIN)}), a .npz or .csv file, or a folder of "
        f"MNIST-format IDX files or of X.npy and y.npy"
    )
    if not path.exists():
        hint = (
            "; MNIST itself is not bundled: put its four IDX files in a folder and pass the folder"
            if str(spec).lower() in ("mnist", "fashion-mnist", "fashion_mnist", "kmnist", "emnist")
            else ""
        )
        raise DataFileNotFoundError(
            f"{spec}: no such file or folder; expected {kinds}{hint}", filename=str(spec)
        )
    if path.is_dir():
        raise DataError(
            f"{spec}: a folder without a dataset in it: expected MNIST's IDX files "
            f"({', '.join(IDX_FILES.values())}, gzipped or not) or X.npy and y.npy"
        )
    return load_file(spec, label_column=label_column, seed=seed)


#: Rows per shuffled block, in batches: memory-mapped data are read a block at a time.
BLOCK_BATCHES = 64


def block_order(rng, n, block):
    """A shuffle that reads a memory-mapped file a block at a time.

    The blocks of ``block`` consecutive rows come in random order, and the rows within
    each block in random order, so that every batch is gathered from one region of the
    file instead of from anywhere in it.

    Parameters
    ----------
    rng : numpy.random.Generator
        The host generator.
    n : int
        Rows.
    block : int
        Rows per block.

    Returns
    -------
    numpy.ndarray
        A permutation of ``range(n)``.
    """
    starts = rng.permutation(np.arange(0, n, block))
    return np.concatenate([s + rng.permutation(min(block, n - s)) for s in starts])


def batches(X, y, batch_size, *, rng=None, drop_last=False, shuffle="full"):
    """Minibatches of arrays already on their device.

    With ``rng`` the order is drawn on the host (a fresh permutation, or with
    ``shuffle="blocks"`` the :func:`block_order` that memory-mapped data use); the order
    moves to the device once and the data are gathered there with one ``take`` per epoch.

    Parameters
    ----------
    X : array
        ``(N, F)`` features.
    y : array
        ``(N,)`` class ids, of ``X``'s library and device.
    batch_size : int
        Rows per batch.
    rng : numpy.random.Generator, optional
        Shuffles the rows (None: in order).
    drop_last : bool
        Drop a last batch smaller than ``batch_size`` (with shuffling, different rows each
        epoch).
    shuffle : str
        ``"full"`` or ``"blocks"`` (blocks of :data:`BLOCK_BATCHES` batches).

    Yields
    ------
    X_batch, y_batch : array
        Views of the (shuffled) arrays.
    """
    xp = backend.namespace(X, y)
    n = X.shape[0]
    if rng is not None:
        order = _order(rng, n, batch_size, shuffle)
        perm = xp.asarray(order, device=backend.device(X))
        X, y = xp.take(X, perm, axis=0), xp.take(y, perm, axis=0)
    stop_at = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop_at, batch_size):
        stop = min(start + batch_size, n)
        yield X[start:stop, ...], y[start:stop]


def host_batches(X, y, batch_size, convert, *, rng, drop_last=False, gather=None):
    """Minibatches gathered from host arrays (a memory map) one at a time and moved.

    Only one batch at a time is read from the file and held in memory, in
    :func:`block_order`; the result equals :func:`batches` with ``shuffle="blocks"``.

    Parameters
    ----------
    X : numpy.ndarray
        ``(N, F)`` features, typically a ``numpy.memmap``.
    y : numpy.ndarray
        ``(N,)`` class ids.
    batch_size : int
        Rows per batch.
    convert : callable
        Moves ``(X_batch, y_batch)`` to the model: returns them converted.
    rng : numpy.random.Generator
        Draws the order.
    drop_last : bool
        Drop a last batch smaller than ``batch_size``.
    gather : callable, optional
        ``gather(X, y, rows)`` reads and moves one batch itself, in place of
        ``convert(X[rows], y[rows])`` (:func:`xpnet.backend.prefetcher` gathers into
        pinned memory and copies while the previous step runs).

    Yields
    ------
    X_batch, y_batch : array
        On the model's library and device.
    """
    n = X.shape[0]
    order = _order(rng, n, batch_size, "blocks")
    if isinstance(X, RowSubset):  # gather from the map itself, at the subset's positions
        labels = np.zeros(X.base.shape[0], dtype=y.dtype)
        labels[X.rows] = y
        X, y, order = X.base, labels, X.rows[order]
    stop_at = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop_at, batch_size):
        rows = order[start : min(start + batch_size, n)]
        yield convert(X[rows], y[rows]) if gather is None else gather(X, y, rows)


def _order(rng, n, batch_size, shuffle):
    if shuffle == "blocks":
        return block_order(rng, n, batch_size * BLOCK_BATCHES)
    if shuffle != "full":
        raise XpnetValueError(f"shuffle must be 'full' or 'blocks', got {shuffle!r}")
    return rng.permutation(n)
