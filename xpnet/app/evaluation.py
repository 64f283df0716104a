"""Evaluation and prediction: the data that evaluates a checkpoint, and predictions.

Checkpoints record the data they were trained on (:meth:`xpnet.data.Dataset.record`: the
dataset's name, a data file's absolute path and SHA-256, the label column and the split's
seed and test fraction), so :func:`evaluation_data` rebuilds exactly the test rows that
training held out, from any folder, and refuses a data file that changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import backend
from ..checkpoint import LEGACY_FORMATS
from ..data import data_sha256, is_builtin, load_dataset, read_arrays
from ..data.idx import is_idx_folder, stores_bytes
from ..data.npy import open_npy_folder
from ..errors import DataError, RunError
from ..nn import Softmax

__all__ = ["evaluation_data", "legacy_input_scale", "predictions", "write_predictions"]


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
        return X[cut:], _label_ids(labels[cut:], classes, spec), f"{spec}: {where}"
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
    logits = model.forward(
        xp.asarray(X.astype(backend.dtype_name(model.dtype)), device=model.device)
    )
    classes = classes or list(range(model.sizes[-1]))
    if proba:
        result = backend.to_numpy(Softmax().forward(logits)).astype(np.float64)
        lines = [",".join(str(c) for c in classes)]
        lines += [",".join(f"{p:.6g}" for p in row) for row in result]
    else:
        ids = backend.to_numpy(xp.argmax(logits, axis=1))
        result = np.asarray([classes[i] for i in ids])
        lines = [str(v) for v in result]
    return result, lines


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
    out = Path(path)
    try:
        if out.suffix.lower() == ".npy":
            np.save(out, result, allow_pickle=False)
        else:
            out.write_text("\n".join(lines) + "\n")
    except (OSError, ValueError) as err:
        raise RunError(f"cannot write {out}: {err}") from None
