"""From a name or a path to its reader: the one place that knows which formats exist.

:data:`DATA_FILES` and :data:`FEATURE_FILES` map a file's suffix to its reader; folders
are recognised by their contents (:func:`~xpnet.data.idx.is_idx_folder`,
:func:`~xpnet.data.npy.is_npy_folder`) and names by :data:`~xpnet.data.builtin.BUILTIN`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, DataFileNotFoundError
from . import csvfile, npz
from ._files import file_sha256, read_npy
from .builtin import BUILTIN, is_builtin
from .csvfile import check_width
from .dataset import Dataset, _checked, _checked_labels, _split
from .idx import IDX_FILES, idx_folder_sha256, is_idx_folder, load_idx_folder
from .npy import is_npy_folder, npy_folder_sha256, open_npy_folder

__all__ = [
    "DATA_FILES",
    "FEATURE_FILES",
    "data_sha256",
    "load_dataset",
    "load_file",
    "load_idx",
    "load_npy",
    "read_arrays",
    "read_features",
]

#: Training data files by suffix: ``reader(path, label_column)`` returns the features and
#: labels, unsplit and unchecked.
DATA_FILES = {".npz": npz.read_arrays, ".csv": csvfile.read_arrays}

#: Features for prediction by suffix: ``reader(path, n_features)`` returns an array.
FEATURE_FILES = {".npy": lambda path, n_features: read_npy(path), ".csv": csvfile.read_features}


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


def _reader(path, readers, kind):
    """The reader for ``path``'s suffix among ``readers``, once ``path`` is known to be a
    regular file; a DataError naming the real problem otherwise."""
    suffixes = " or ".join(readers)
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a {kind} ({suffixes})")
    if not path.exists():
        raise DataFileNotFoundError(f"{path}: no such file", filename=str(path))
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a {kind} ({suffixes})")
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unsupported {kind} type {path.suffix.lower()!r}; use {suffixes}")
    return reader


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
    reader = _reader(path, DATA_FILES, "data file")
    _label_column_applies(path, label_column)
    return _checked(*reader(path, label_column), str(path))


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
        A missing, unreadable, empty, non-numeric or non-finite file.
    """
    path = Path(path)
    X = _reader(path, FEATURE_FILES, "features file")(path, n_features)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.size == 0 or not np.issubdtype(X.dtype, np.number) or X.dtype.kind == "c":
        raise DataError(
            f"{path}: expected a real-valued (N, F) array, got shape {X.shape}, dtype {X.dtype}"
        )
    if not np.all(np.isfinite(X)):
        raise DataError(f"{path}: features contain NaN or infinite values")
    if n_features is not None:
        check_width(path, X.shape[1], n_features)
    return X.astype(np.float64)


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
