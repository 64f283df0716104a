"""Datasets and minibatches.

Every loader returns a :class:`Dataset` of host (NumPy) arrays: float64 features as the
source holds them (unscaled: the model carries its input scaling, see
:mod:`xpnet.data.scaling`), int64 class ids ``0..K-1`` and the original labels in
``classes``. Training code moves the arrays to the model's backend and device once, and
:func:`batches` slices them there, so no step copies data from the host.

One module per job: :mod:`~xpnet.data.registry` maps a name or a path to its reader;
the formats are :mod:`~xpnet.data.csvfile`, :mod:`~xpnet.data.npz`,
:mod:`~xpnet.data.idx`, :mod:`~xpnet.data.npy` and :mod:`~xpnet.data.builtin`, each
reading through the input policy of ``xpnet/data/_files.py``;
:mod:`~xpnet.data.dataset` holds the record and its split, :mod:`~xpnet.data.batching`
the minibatches and :mod:`~xpnet.data.scaling` the input scaling.
"""

from ..errors import DataError
from ._files import file_sha256
from .batching import BLOCK_BATCHES, batches, block_order, host_batches
from .builtin import BUILTIN, is_builtin, load_digits, load_mnist1d
from .csvfile import MAX_CSV_LINE
from .dataset import TEST_FRACTION, Dataset, stratified_split
from .npy import on_disk
from .registry import (
    DATA_FILES,
    FEATURE_FILES,
    data_sha256,
    load_dataset,
    load_file,
    load_idx,
    load_npy,
    read_arrays,
    read_features,
)
from .scaling import SCALINGS, fixed_scaling, standard_scaling

__all__ = [
    "BLOCK_BATCHES",
    "BUILTIN",
    "DATA_FILES",
    "FEATURE_FILES",
    "MAX_CSV_LINE",
    "SCALINGS",
    "TEST_FRACTION",
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
