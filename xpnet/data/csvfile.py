"""CSV files: features and labels for training, features for prediction.

NumPy's C parser (``numpy.loadtxt``) reads a well-formed file; a malformed one is read
again row by row, only to name the line and the cell that is wrong. Every line is
refused past :data:`MAX_CSV_LINE` characters before it is split into cells.
"""

from __future__ import annotations

import csv
import itertools
import warnings

import numpy as np

from .._io import open_regular
from ..errors import DataError

__all__ = ["MAX_CSV_LINE", "read_arrays", "read_features"]


def read_arrays(path, label_column=None):
    """The features and labels of a CSV file, unsplit and unchecked.

    Parameters
    ----------
    path : Path
        A regular file.
    label_column : int or str, optional
        The label column: an index or a header name (default: the last).

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)`` float64 features.
    labels : numpy.ndarray
        ``(N,)`` labels: integers, floats or strings.
    """
    return _read_csv(path, label_column)


def read_features(path, n_features=None):
    """The numbers of a CSV file of features (a header row is skipped).

    Parameters
    ----------
    path : Path
        A regular file.
    n_features : int, optional
        The width the model expects, named in the message for a cell that is not a
        number when the file looks like training data with its label column still in it.

    Returns
    -------
    numpy.ndarray
        ``(N, F)`` float64.
    """
    rows = list(_csv_rows(path))
    if not rows:
        raise DataError(f"{path}: empty file")
    if not all(_is_number(c) for c in rows[0][1]):
        rows = rows[1:]  # a header row
    if not rows:
        raise DataError(f"{path}: no data rows")
    return _numeric_rows(path, rows, n_features)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_rows(path):
    """``(line number, cells)`` of each non-blank row of a CSV file, read one at a time; a
    byte-order mark (Excel's "CSV UTF-8") is not part of the first cell."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(_lines(fh, path))
            for row in reader:
                if any(cell.strip() for cell in row):
                    yield reader.line_num, row
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
    if tail:  # the last line has no newline: the one added here is not the file's
        _check_block(path, tail + b"\n", line, width, first_line, longest=MAX_CSV_LINE + 1)


def _check_block(path, data, line, width, first_line, longest=MAX_CSV_LINE):
    """:func:`_check_widths` on whole lines ``data`` after ``line`` lines; returns the count.

    A line longer than ``longest`` bytes with its newline is refused first.
    """
    if not data:
        return line
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate([[0], ends[:-1] + 1])
    too_long = np.flatnonzero(ends - starts + 1 > longest)
    if too_long.size:
        raise DataError(_too_long(path, line + int(too_long[0]) + 1))
    suspect = np.diff(np.searchsorted(np.flatnonzero(buf == ord(",")), ends), prepend=0)
    suspect = suspect != width - 1
    if b'"' in data:  # a quoted cell may hold commas: its line is parsed
        suspect |= np.diff(np.searchsorted(np.flatnonzero(buf == ord('"')), ends), prepend=0) > 0
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
    first_rows = list(itertools.islice(_csv_rows(path), 2))
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
        try:
            data = np.loadtxt(path, dtype=np.float64, **options)
        except ValueError:  # string labels, or a malformed row
            data = None
        if data is not None and data.shape[1] == width:  # no data rows: (0, 1)
            X, labels = _without_column(data, label_index), data[:, label_index]
        else:
            try:
                X = np.loadtxt(path, dtype=np.float64, usecols=features, **options)
                labels = np.char.strip(
                    np.loadtxt(path, dtype=str, usecols=[label_index], **options).reshape(-1)
                )
            except ValueError:  # a malformed row: named from the rows one at a time
                X, labels = _read_csv_rows(path, width, label_index, has_header)
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


def _read_csv_rows(path, width, label_index, has_header):
    """The row-by-row reader, for a file NumPy's parser refused: the first malformed cell
    is named from a stream of rows; a file without one (widths are checked before) is read
    as Python values."""
    _first_bad_cell(path, label_index, has_header)
    rows = [cells for _, cells in _csv_rows(path)][1 if has_header else 0 :]
    X = [[float(c) for i, c in enumerate(row) if i != label_index] for row in rows]
    labels = np.asarray([row[label_index].strip() for row in rows], dtype=str)
    return np.asarray(X, dtype=np.float64).reshape(len(rows), width - 1), _numeric_labels(labels)


def _first_bad_cell(path, label_index, has_header):
    """Raise a DataError naming the first feature cell that is not a number, holding one
    row at a time; return when there is none."""
    rows = _csv_rows(path)
    if has_header:
        next(rows, None)
    for line, row in rows:
        for i, cell in enumerate(row):
            if i != label_index and not _is_number(cell):
                raise DataError(f"{path}, line {line}: feature value {cell!r} is not a number")


def check_width(source, width, n_features) -> None:
    """Refuse features of another width than the model's, saying so with the hint.

    Parameters
    ----------
    source : str or Path
        What names the file in the message.
    width : int
        The file's columns.
    n_features : int
        The width the model expects.

    Raises
    ------
    DataError
        ``width != n_features``.
    """
    if width != n_features:
        raise DataError(
            f"{source}: {width} columns, the model expects {n_features} features"
            + _label_hint(width, n_features)
        )


def _label_hint(width, n_features):
    """A hint for a file one column wider than the model: its label column is still in."""
    if width == n_features + 1:
        return "; is the label column still in the file? predict takes the features only"
    return ""


def _numeric_rows(path, rows, n_features):
    """The CSV rows, ``(line number, cells)``, at least one, as a float array, or a
    DataError naming the first row of another width or the first cell that is not a
    number (and the label column, when that is what it is)."""
    width = len(rows[0][1])
    for line, cells in rows:
        if len(cells) != width:
            raise DataError(f"{path}, line {line}: {len(cells)} columns, the first row has {width}")
    for line, cells in rows:
        for column, cell in enumerate(cells, 1):
            if not _is_number(cell):
                hint = "" if n_features is None else _label_hint(width, n_features)
                raise DataError(
                    f"{path}, line {line}, column {column}: {cell!r} is not a number{hint}"
                )
    return np.asarray([[float(c) for c in cells] for _, cells in rows], dtype=np.float64)
