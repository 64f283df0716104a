"""Evaluation and prediction: the data that evaluates a checkpoint, and predictions.

Checkpoints record the data they were trained on (:meth:`xpnet.data.Dataset.record`: the
dataset's name, a data file's absolute path and SHA-256, the label column and the split's
seed and test fraction), so :func:`evaluation_data` rebuilds exactly the test rows that
training held out, from any folder, and refuses a data file that changed.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..checkpoint import LEGACY_FORMATS
from ..data import data_sha256, is_builtin, load_dataset, read_arrays
from ..data.idx import is_idx_folder, stores_bytes
from ..data.npy import RowSubset, open_npy_folder, row_blocks
from ..errors import DataError, RunError
from ..nn import Softmax
from ..step import count_correct

__all__ = [
    "PredictionWriter",
    "evaluate_lazily",
    "evaluation_data",
    "legacy_input_scale",
    "prediction_header",
    "predictions",
    "predictions_in_blocks",
    "write_predictions",
]


def _recorded_data(user):
    """The data record of a checkpoint's metadata; older checkpoints, which have none,
    get one rebuilt from their training configuration."""
    record = user.get("data")
    if isinstance(record, dict) and isinstance(record.get("split"), dict):
        return record
    config = user.get("config") if isinstance(user.get("config"), dict) else {}
    return {
        "name": user.get("dataset"),
        "path": config.get("data_path"),
        "sha256": config.get("data_sha256"),
        "label_column": config.get("label_column"),
        "split": {"seed": config.get("seed", 0)},
    }


def legacy_input_scale(info):
    """What a checkpoint of the old format expects its features divided by, or None.

    Checkpoints of format 1 (:data:`xpnet.checkpoint.LEGACY_FORMATS`) came from an
    ``xpnet train`` that divided the digits by 16 and 8-bit IDX images by 255 before the
    model saw them, and recorded it nowhere; today's models carry their scaling.

    Parameters
    ----------
    info : dict
        The checkpoint's metadata.

    Returns
    -------
    float or None
        16 for the digits, 255 for an IDX folder of 8-bit images, None for anything else
        (and for every checkpoint of the current format).
    """
    if info.get("format") not in LEGACY_FORMATS:
        return None
    record = _recorded_data(info.get("user") or {})
    if record.get("name") == "digits":
        return 16.0
    path = record.get("path")
    if isinstance(path, str) and is_idx_folder(path) and stores_bytes(path):
        return 255.0
    return None


def evaluation_data(info, dataset=None, *, label_column=None, all_rows=False):
    """The rows to evaluate a checkpoint on, as ``(X, y, description)``.

    Without ``dataset``: the test split of the data the model was trained on, rebuilt
    from the checkpoint's record (same seed and test fraction; a data file found by its
    recorded absolute path when the path as given does not exist here, and refused when
    its SHA-256 changed). With ``dataset``: a built-in name or the training file itself
    (found by its SHA-256) gives that same test split; any other file is scored whole.
    ``all_rows`` scores every row of the data instead of the test split.

    Parameters
    ----------
    info : dict
        The checkpoint's metadata (:func:`xpnet.checkpoint.read_metadata`).
    dataset : str, optional
        A built-in dataset name or a ``.npz``/``.csv`` file.
    label_column : int or str, optional
        The CSV label column (default: the one training used, else the last).
    all_rows : bool
        Score all rows rather than the test split.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)`` features.
    y : numpy.ndarray
        ``(N,)`` class ids of the model's classes.
    description : str
        Which rows these are, for the user.

    Raises
    ------
    DataError
        The data cannot be found or read, changed since training, or has labels the model
        does not know.
    """
    user = info.get("user") or {}
    classes = user.get("classes")
    record = _recorded_data(user)
    split = record["split"]
    seed = split.get("seed", 0) if isinstance(split.get("seed", 0), int) else 0
    recorded_label = record.get("label_column")
    given = dataset if dataset is not None else record.get("name")
    if label_column is None and str(given).lower().endswith(".csv"):
        label_column = recorded_label  # the training file's column, for a CSV file
    if dataset is None:
        spec = record.get("name")
        if not isinstance(spec, str):
            raise DataError("the checkpoint does not name its dataset; pass --dataset")
        if not is_builtin(spec):
            spec = _recorded_file(spec, record)
        same = True
    elif is_builtin(dataset):
        spec, same = dataset, dataset == record.get("name")
    else:
        spec = dataset
        path = Path(dataset)
        if not path.exists():
            read_arrays(path)  # raises the DataError that names the problem
        same = record.get("sha256") is not None and data_sha256(path) == record["sha256"]
    legacy = info.get("format") in LEGACY_FORMATS
    if not same or all_rows:
        if is_builtin(spec):
            data = load_dataset(spec, seed=seed)
            X = _legacy_scaled(np.concatenate([data.X_train, data.X_test]), data, legacy)
            ids = np.concatenate([data.y_train, data.y_test])
            labels = [data.classes[i] for i in ids]
        else:
            X, labels = read_arrays(spec, label_column=label_column)
        y = _label_ids(labels, classes, spec)
        return X, y, f"{spec}: all {X.shape[0]} rows"
    if split.get("last"):  # a folder of .npy files split before splits were stratified
        X, labels, _, _ = open_npy_folder(spec)
        cut = X.shape[0] - max(1, X.shape[0] // 4)
        where = (
            f"test split, the last quarter of the rows ({X.shape[0] - cut} of {X.shape[0]} rows)"
        )
        rows = RowSubset(X, np.arange(cut, X.shape[0]))  # on disk, read by whoever scores it
        return rows, _label_ids(labels[cut:], classes, spec), f"{spec}: {where}"
    data = load_dataset(spec, label_column=label_column, seed=seed)
    if classes is not None and data.classes != classes:
        raise DataError(f"{spec}: classes {data.classes} differ from the checkpoint's {classes}")
    if split.get("official"):
        where = "official test split"
    else:
        where = f"test split, seed {seed}"
    total = len(data.y_train) + len(data.y_test)
    X = _legacy_scaled(data.X_test, data, legacy)
    return X, data.y_test, f"{spec}: {where} ({len(data.y_test)} of {total} rows)"


def _legacy_scaled(X, data, legacy):
    """``X`` as a format-1 checkpoint's training saw it: divided by the dataset's range."""
    return X / data.input_scale if legacy and data.input_scale else X


def _recorded_file(spec, record):
    """The training file of a checkpoint, checked against its recorded SHA-256."""
    path = Path(spec)
    if not path.exists() and record.get("path"):
        path = Path(record["path"])
    if not path.exists():
        raise DataError(
            f"the model was trained on {record.get('path') or spec}, which is not there; "
            f"pass --dataset FILE"
        )
    digest = record.get("sha256")
    if digest is not None and data_sha256(path) != digest:
        raise DataError(
            f"{path}: the file changed since the model was trained (SHA-256 differs), so "
            f"its test split is not the one training held out; pass --dataset {path} "
            f"--all-rows to score every row of it as it is now"
        )
    return str(path)


def _label_ids(labels, classes, source):
    if not isinstance(classes, list):
        raise DataError("the checkpoint records no classes; cannot map the labels")
    index = {str(c): i for i, c in enumerate(classes)}
    try:
        return np.asarray(
            [index[str(v.item() if hasattr(v, "item") else v)] for v in labels], dtype=np.int64
        )
    except KeyError as err:
        raise DataError(
            f"{source}: label {err.args[0]} is not one of the model's classes {classes}"
        ) from None


def _scores(model, X, proba):
    """Class ids (argmax of the logits) or probabilities of ``X``, in the model's library."""
    logits = model.forward(X)
    return Softmax().forward(logits) if proba else model.xp.argmax(logits, axis=1)


def _rows_out(scores, classes, proba):
    """Host scores as the result array and its text lines (no header)."""
    if proba:
        result = np.asarray(scores, dtype=np.float64)
        return result, [",".join(f"{p:.6g}" for p in row) for row in result]
    result = np.asarray(classes)[np.asarray(scores)]  # one dtype for every block
    return result, [str(v) for v in result]


def prediction_header(classes, proba):
    """The first line of text predictions: the class labels of probabilities, else None.

    Parameters
    ----------
    classes : list
        The class labels.
    proba : bool
        Whether the lines are probabilities.

    Returns
    -------
    str or None
        Comma-separated labels, or None for labels.
    """
    return ",".join(str(c) for c in classes) if proba else None


def predictions(model, X, classes=None, *, proba=False):
    """The model's predictions for host features ``X``, as an array and as text lines.

    Parameters
    ----------
    model : MLP
        A model in evaluation mode, on any backend.
    X : numpy.ndarray
        ``(N, F)`` features.
    classes : list, optional
        The label of each class id (default: the ids themselves).
    proba : bool
        Class probabilities (softmax of the logits) instead of labels.

    Returns
    -------
    result : numpy.ndarray
        ``(N,)`` labels, or ``(N, K)`` float64 probabilities.
    lines : list of str
        One line per row; with ``proba``, a header line of the class labels first.
    """
    xp = model.xp
    classes = classes or list(range(model.sizes[-1]))
    X = xp.asarray(X.astype(backend.dtype_name(model.dtype)), device=model.device)
    result, lines = _rows_out(backend.to_numpy(_scores(model, X, proba)), classes, proba)
    header = prediction_header(classes, proba)
    return result, ([header] if header is not None else []) + lines


def predictions_in_blocks(model, blocks, classes=None, *, proba=False, at_once=1):
    """The predictions of a lazy model (Dask) for features read block by block.

    The model's own forward builds one lazy computation over every block; its blocks are
    then computed in order, ``at_once`` together, so that memory holds about that many
    blocks however many rows there are.

    Parameters
    ----------
    model : MLP
        A model in evaluation mode on Dask.
    blocks : list of Block
        The rows (:func:`xpnet.data.parts.feature_blocks`).
    classes : list, optional
        The label of each class id (default: the ids themselves).
    proba : bool
        Class probabilities instead of labels.
    at_once : int
        Blocks computed together (the scheduler's threads).

    Yields
    ------
    result : numpy.ndarray
        A block's labels, or its probabilities.
    lines : list of str
        Its text lines (no header: see :class:`PredictionWriter`).
    """
    classes = classes or list(range(model.sizes[-1]))
    X = backend.lazy_rows(blocks, model.sizes[0], backend.dtype_name(model.dtype))
    for scores in backend.computed_blocks(_scores(model, X, proba), at_once):
        yield _rows_out(scores, classes, proba)


def evaluate_lazily(model, loss, X, y, *, chunk_rows):
    """Mean loss and accuracy of a lazy model (Dask) over host or on-disk rows, in one pass.

    In evaluation mode, as :func:`xpnet.train.evaluate`; the model's mode is restored.

    Parameters
    ----------
    model : MLP
        A model on Dask.
    loss : Module
        A loss with ``forward(A, y)``.
    X : numpy.ndarray, numpy.memmap or RowSubset
        ``(N, F)`` features (:func:`xpnet.data.npy.row_blocks`).
    y : numpy.ndarray
        ``(N,)`` class ids.
    chunk_rows : int
        Rows per block.

    Returns
    -------
    loss : float
        The mean loss.
    accuracy : float
        The fraction of rows whose largest output is their class.
    """
    xp = model.xp
    rows = backend.lazy_rows(row_blocks(X, chunk_rows), X.shape[1], backend.dtype_name(model.dtype))
    labels = xp.asarray(np.asarray(y))
    was_training = model.training
    model.eval()
    try:
        out = model.forward(rows)
        mean, correct = backend.compute_together(
            loss.forward(out, labels), count_correct(out, labels, xp)
        )
    finally:
        model.train(was_training)
    return float(mean), float(correct) / X.shape[0]


class PredictionWriter:
    """Predictions written as they come, to a file or to standard output.

    A ``.npy`` file gets the array (its rows go to a file beside it as they come, and the
    ``.npy`` is assembled at the end, when their number is known); any other file, or
    standard output, the text lines. A file appears under its name only once every row is
    written: a run that fails leaves nothing there.

    Parameters
    ----------
    path : str or Path, optional
        The file; None for standard output.
    header : str, optional
        A first line of text (the class labels of probabilities).
    """

    def __init__(self, path=None, header=None) -> None:
        self.path = None if path is None else Path(path)
        self.npy = self.path is not None and self.path.suffix.lower() == ".npy"
        self.rows, self.dtype, self.shape = 0, None, ()
        self.part = None if self.path is None else self.path.with_name(self.path.name + ".part")
        self._out: Any = sys.stdout
        try:
            if self.part is not None:
                self._out = open(self.part, "wb" if self.npy else "w")
        except OSError as err:
            raise RunError(f"cannot write {self.path}: {err}") from None
        if header is not None and not self.npy:
            self._out.write(header + "\n")

    def write(self, result, lines):
        """Append a block of predictions.

        Parameters
        ----------
        result : numpy.ndarray
            The block's labels or probabilities.
        lines : list of str
            The same as text.

        Raises
        ------
        RunError
            The file cannot be written.
        """
        try:
            if self.npy:
                if self.dtype is None:
                    self.dtype, self.shape = result.dtype, result.shape[1:]
                self._out.write(np.ascontiguousarray(result, dtype=self.dtype).tobytes())
            elif lines:
                self._out.write("\n".join(lines) + "\n")
        except OSError as err:
            raise RunError(f"cannot write {self.path}: {err}") from None
        self.rows += len(result)

    def close(self, *, complete=True):
        """Finish the file (or drop it when ``complete`` is False).

        Parameters
        ----------
        complete : bool
            Whether every block was written.

        Raises
        ------
        RunError
            The file cannot be written.
        """
        if self.path is None:
            self._out.flush()
            return
        self._out.close()
        try:
            if complete and self.npy:
                self._assemble()
            elif complete:
                os.replace(self.part, self.path)
        except OSError as err:
            raise RunError(f"cannot write {self.path}: {err}") from None
        finally:
            self.part.unlink(missing_ok=True)

    def _assemble(self):
        """``path``: a ``.npy`` header for the rows written, then the rows."""
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype or np.int64)),
            "fortran_order": False,
            "shape": (self.rows, *self.shape),
        }
        assembling = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(assembling, "wb") as out, open(self.part, "rb") as rows:
                np.lib.format.write_array_header_1_0(out, header)  # as numpy.save writes it
                shutil.copyfileobj(rows, out, 1 << 24)
            os.replace(assembling, self.path)
        finally:
            assembling.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        self.close(complete=kind is None)


def write_predictions(path, result, lines):
    """Write predictions to a file: ``.npy`` gets the array, anything else the text lines.

    Parameters
    ----------
    path : str or Path
        The file.
    result : numpy.ndarray
        As :func:`predictions` returns it.
    lines : list of str
        As :func:`predictions` returns them.

    Raises
    ------
    RunError
        The file cannot be written.
    """
    with PredictionWriter(path) as writer:
        writer.write(result, lines)
