"""Features larger than memory, as blocks of rows read one at a time.

``xpnet predict --backend dask`` scores an input a block at a time: one ``.npy`` file, or a
glob of ``.npy``, ``.csv`` or ``.parquet`` parts taken in the order of their names. A
``.npy`` block is read through a map that is closed again at once, so that memory holds
the blocks being scored and not every page read so far.
A ``.npy`` part is cut into blocks of ``chunk_rows``, a Parquet part into its row groups,
and a CSV part is one block (parts are how a CSV is split). Every block is checked as
it is read, as :func:`~xpnet.data.read_features` checks a whole file: its width, real
numbers, finite values.
"""

from __future__ import annotations

import functools
import glob
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import BackendNotInstalledError, DataError, DataFileNotFoundError
from ._files import check_finite_rows, read_npy
from .csvfile import check_width

__all__ = ["CHUNK_ROWS", "PART_FILES", "Block", "feature_blocks", "mapped_rows"]

#: Rows per block of a ``.npy`` input unless told otherwise: 51 MB of 784 float32 features.
CHUNK_ROWS = 16384

#: The kinds of part, by suffix.
PART_FILES = (".npy", ".csv", ".parquet")


class Block(NamedTuple):
    """Rows of the input, read when ``read()`` is called."""

    #: ``read()`` returns the block's ``(rows, F)`` float array, checked.
    read: Any
    #: Its number of rows; None for a CSV part, known once read.
    rows: int | None


def feature_blocks(pattern, *, n_features, chunk_rows) -> list[Block]:
    """The blocks of a file or of a glob of parts, in order, each not yet read.

    Parameters
    ----------
    pattern : str or Path
        A ``.npy``, ``.csv`` or ``.parquet`` file, or a glob pattern of them (one kind).
    n_features : int
        The width the model expects.
    chunk_rows : int
        Rows per block of a ``.npy`` part.

    Returns
    -------
    list of Block
        In the order of the parts' names, then of their rows.

    Raises
    ------
    DataFileNotFoundError
        No file matches.
    DataError
        Parts of several kinds, an unsupported kind, a header of another width or a
        size the file does not hold, no rows at all; Parquet without pyarrow.
    """
    paths = _parts(str(pattern))
    blocks: list[Block] = []
    for path in paths:
        kind = path.suffix.lower()
        if kind == ".npy":
            blocks += _npy_blocks(path, n_features, chunk_rows)
        elif kind == ".parquet":
            blocks += _parquet_blocks(path, n_features)
        else:
            blocks.append(Block(functools.partial(_csv_block, path, n_features), None))
    if not blocks:
        raise DataError(f"{pattern}: no rows to score")
    return blocks


def _parts(pattern):
    """The files ``pattern`` names: itself, or the matches of a glob, sorted, one kind."""
    if glob.has_magic(pattern):
        paths = [Path(p) for p in sorted(glob.glob(pattern))]
        if not paths:
            raise DataFileNotFoundError(f"{pattern}: no file matches", filename=pattern)
    else:
        paths = [Path(pattern)]
        if not paths[0].exists():
            raise DataFileNotFoundError(f"{pattern}: no such file", filename=pattern)
    kinds = {p.suffix.lower() for p in paths}
    if len(kinds) > 1 or not kinds <= set(PART_FILES):
        raise DataError(
            f"{pattern}: expected parts of one kind, {', '.join(PART_FILES)}; got "
            f"{', '.join(sorted(kinds))}"
        )
    return paths


def _npy_blocks(path, n_features, chunk_rows):
    """Blocks of ``chunk_rows`` rows of an ``(N, F)`` float ``.npy`` file."""
    X = read_npy(path, mmap=True)  # the header checked; nothing read yet
    if X.ndim != 2 or X.dtype.kind != "f":
        raise DataError(f"{path}: expected a float array (N, F), got {X.dtype} of shape {X.shape}")
    check_width(path, X.shape[1], n_features)
    n = X.shape[0]
    return [
        Block(
            functools.partial(mapped_rows, path, slice(start, min(start + chunk_rows, n))),
            min(chunk_rows, n - start),
        )
        for start in range(0, n, chunk_rows)
    ]


def mapped_rows(path, rows):
    """Rows of a ``.npy`` file, copied out of a map that is closed again at once.

    Parameters
    ----------
    path : str or Path
        The file.
    rows : slice or numpy.ndarray
        Which rows.

    Returns
    -------
    numpy.ndarray
        The rows, in memory of their own, checked finite; the pages read leave the
        process's memory with the map.
    """
    X = read_npy(path, mmap=True)
    block = np.array(X[rows])
    numbers = range(X.shape[0])[rows] if isinstance(rows, slice) else rows
    del X  # unmapped: memory holds this block, not every page read so far
    return check_finite_rows(path, block, numbers)


def _parquet_blocks(path, n_features):
    """One block per row group of a Parquet file of numeric columns."""
    pq = _pyarrow_parquet()
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as err:  # pyarrow's errors derive from these
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    check_width(path, meta.num_columns, n_features)
    return [
        Block(functools.partial(_parquet_rows, path, group), meta.row_group(group).num_rows)
        for group in range(meta.num_row_groups)
        if meta.row_group(group).num_rows
    ]


def _parquet_rows(path, group):
    """Row group ``group`` of a Parquet file as a float array."""
    pq = _pyarrow_parquet()
    table = pq.ParquetFile(path).read_row_group(group, use_threads=False)  # Dask's threads
    try:
        columns = [column.to_numpy() for column in table.columns]
    except (ValueError, TypeError) as err:
        raise DataError(f"{path}: row group {group}: {err}") from None
    if not all(np.issubdtype(c.dtype, np.number) and c.dtype.kind != "c" for c in columns):
        raise DataError(f"{path}: expected numeric columns only, got {table.schema}")
    block = np.stack(columns, axis=1).astype(np.float64, copy=False)
    first = sum(pq.ParquetFile(path).metadata.row_group(g).num_rows for g in range(group))
    return check_finite_rows(path, block, range(first, first + len(block)))


def _pyarrow_parquet():
    try:
        import pyarrow.parquet
    except ImportError:
        raise BackendNotInstalledError(
            "reading Parquet needs pyarrow: pip install 'xpnet[dask]'"
        ) from None
    return pyarrow.parquet


def _csv_block(path, n_features):
    """A whole CSV part, read as :func:`~xpnet.data.read_features` reads a file."""
    from .registry import read_features

    return read_features(path, n_features=n_features)
