"""The built-in datasets: the bundled digits and MNIST-1D, by name in :data:`BUILTIN`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset, _checked, _split

__all__ = ["BUILTIN", "is_builtin", "load_digits", "load_mnist1d"]


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
