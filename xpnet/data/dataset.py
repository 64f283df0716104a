"""The dataset record and its split: :class:`Dataset` and :func:`stratified_split`.

Every reader's arrays go through the same checks (``_checked``, ``_checked_labels``)
before they become a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .npy import RowSubset, on_disk

__all__ = ["TEST_FRACTION", "Dataset", "stratified_split"]

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
        held out, so that a test split of at least two rows is never empty. 0 holds out
        nothing.
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
        raise DataError(
            f"{source}: X must be a 2-D array (samples, features) of at least 2 samples and "
            f"1 feature, got shape {X.shape}"
        )
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
