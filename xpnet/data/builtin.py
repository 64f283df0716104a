"""The built-in datasets: the bundled digits and MNIST-1D, by name in :data:`BUILTIN`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import read_npz
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


_MNIST1D_ARRAYS = ("x", "y", "x_test", "y_test")


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

    Raises
    ------
    DataError
        The ``mnist1d`` package is needed and missing, or the cached file is unreadable
        (it is read through the same checks as every data file: no pickles, sizes checked
        before anything is inflated).
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
        np.savez_compressed(tmp, **{name: data[name] for name in _MNIST1D_ARRAYS})
        os.replace(tmp, file)
    # the cache is a file on disk like any other: read through the input policy
    arrays = read_npz(file, _MNIST1D_ARRAYS)
    missing = [name for name in _MNIST1D_ARRAYS if name not in arrays]
    if missing:
        raise DataError(
            f"{file}: the MNIST-1D cache lacks {', '.join(missing)}; delete it to generate it again"
        )
    X, y = _checked(arrays["x"], arrays["y"], f"{file} (training)")
    Xt, yt = _checked(arrays["x_test"], arrays["y_test"], f"{file} (test)")
    classes = np.unique(np.concatenate([y, yt]))
    return Dataset(
        "mnist1d",
        X,
        np.searchsorted(classes, y),
        Xt,
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
