"""Lazy arrays of data read block by block, and computing them in order (Dask)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import BackendNotInstalledError, BackendUnavailableError
from ._capabilities import blockwise
from ._convert import to_numpy
from ._namespace import namespace

__all__ = ["compute_together", "computed_blocks", "dask_scheduler", "lazy_rows"]


def _read(read, dtype):
    return np.asarray(read(), dtype=dtype)


def lazy_rows(blocks: Sequence[Any], n_features: int, dtype: str) -> Any:
    """One lazy ``(N, F)`` Dask array of blocks of rows, each read when it is computed.

    Parameters
    ----------
    blocks : sequence
        Objects with ``read()`` (the block's ``(rows, F)`` host array) and ``rows`` (its
        number of rows, or None where it is known only once read).
        :func:`xpnet.data.parts.feature_blocks` makes them.
    n_features : int
        ``F``.
    dtype : str
        The dtype the blocks are cast to as they are read.

    Returns
    -------
    dask.array.Array
        One chunk per block.
    """
    import dask
    import dask.array as da

    return da.concatenate(
        [
            da.from_delayed(
                dask.delayed(_read)(block.read, dtype),
                shape=(math.nan if block.rows is None else block.rows, n_features),
                dtype=dtype,
            )
            for block in blocks
        ],
        axis=0,
    )


def computed_blocks(x: Any, at_once: int) -> Iterator[np.ndarray]:
    """The chunks of a lazy Dask array along its first axis, computed in order.

    ``at_once`` chunks are computed together (one per thread of the scheduler), so that
    memory holds about that many chunks, whatever the length of ``x``.

    Parameters
    ----------
    x : dask.array.Array
        Chunked along its first axis only.
    at_once : int
        Chunks computed together.

    Yields
    ------
    numpy.ndarray
        Each chunk, in order.
    """
    import dask

    if any(n > 1 for n in x.numblocks[1:]):
        x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    pieces = x.to_delayed().ravel()
    for start in range(0, len(pieces), at_once):
        yield from dask.compute(*pieces[start : start + at_once])


@contextlib.contextmanager
def dask_scheduler(address: str | None = None) -> Iterator[int]:
    """Dask's local threaded scheduler, or the ``dask.distributed`` cluster at ``address``.

    The local scheduler gets a pool of threads of its own for the duration, rather than
    the one Dask keeps for the life of the process.

    Parameters
    ----------
    address : str, optional
        A scheduler's address (``tcp://host:8786``); None for the local scheduler.

    Yields
    ------
    int
        The threads that compute chunks: this machine's cores, or the cluster's threads.

    Raises
    ------
    BackendNotInstalledError
        ``address`` without dask.distributed installed.
    BackendUnavailableError
        No scheduler answers at ``address``.
    """
    if address is None:  # a pool of its own, started and stopped here: a process forked
        import dask  # later (a multiprocessing worker) finds no stale pool of Dask's

        threads = os.cpu_count() or 1
        with (
            concurrent.futures.ThreadPoolExecutor(threads) as pool,
            dask.config.set(scheduler="threads", pool=pool),
        ):
            yield threads
        return
    try:
        from distributed import Client
    except ImportError:
        raise BackendNotInstalledError(
            "a Dask cluster needs dask.distributed: pip install 'xpnet[dask]'"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise BackendUnavailableError(f"no Dask scheduler answers at {address} ({err})") from None
    with client:
        yield max(1, sum(client.nthreads().values()))


def compute_together(*arrays: Any) -> tuple[np.ndarray, ...]:
    """Arrays as host arrays, lazy ones computed in one pass over the data they share.

    Parameters
    ----------
    *arrays : array
        Of any library; Dask's are computed together (``dask.compute``).

    Returns
    -------
    tuple of numpy.ndarray
        In order.
    """
    lazy = [i for i, x in enumerate(arrays) if blockwise(namespace(x))]
    computed: dict[int, Any] = {}
    if lazy:
        import dask

        computed = dict(zip(lazy, dask.compute(*(arrays[i] for i in lazy)), strict=True))
    return tuple(
        np.asarray(computed[i]) if i in computed else to_numpy(x) for i, x in enumerate(arrays)
    )
