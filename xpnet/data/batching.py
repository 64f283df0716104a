"""Minibatches: shuffled on the host, gathered on the arrays' device.

Memory-mapped data are read a batch at a time (:func:`host_batches`).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..errors import XpnetValueError
from .npy import RowSubset

__all__ = ["BLOCK_BATCHES", "batches", "block_order", "host_batches"]

#: Rows per shuffled block, in batches: memory-mapped data are read a block at a time.
BLOCK_BATCHES = 64


def block_order(rng, n, block):
    """A shuffle that reads a memory-mapped file a block at a time.

    The blocks of ``block`` consecutive rows come in random order, and the rows within
    each block in random order, so that every batch is gathered from one region of the
    file instead of from anywhere in it.

    Parameters
    ----------
    rng : numpy.random.Generator
        The host generator.
    n : int
        Rows.
    block : int
        Rows per block.

    Returns
    -------
    numpy.ndarray
        A permutation of ``range(n)``.
    """
    starts = rng.permutation(np.arange(0, n, block))
    return np.concatenate([s + rng.permutation(min(block, n - s)) for s in starts])


def batch_count(n, batch_size, drop_last) -> int:
    """The number of batches in an epoch of ``n`` rows.

    ``drop_last`` leaves out a short last batch, but never the only one: fewer rows than
    ``batch_size`` still train.

    Parameters
    ----------
    n, batch_size : int
        Rows, and rows per batch.
    drop_last : bool
        Leave out a last batch smaller than ``batch_size``.

    Returns
    -------
    int
        The number of batches :func:`batches` and :func:`host_batches` give.
    """
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


def _spans(n, batch_size, drop_last):
    """``(start, stop)`` of each of the :func:`batch_count` batches of ``n`` rows."""
    return (
        (start, min(start + batch_size, n))
        for start in range(0, batch_count(n, batch_size, drop_last) * batch_size, batch_size)
    )


def batches(X, y, batch_size, *, rng=None, drop_last=False, shuffle="full"):
    """Minibatches of arrays already on their device.

    With ``rng`` the order is drawn on the host (a fresh permutation, or with
    ``shuffle="blocks"`` the :func:`block_order` that memory-mapped data use); the order
    moves to the device once and the data are gathered there with one ``take`` per epoch.

    Parameters
    ----------
    X : array
        ``(N, F)`` features.
    y : array
        ``(N,)`` class ids, of ``X``'s library and device.
    batch_size : int
        Rows per batch.
    rng : numpy.random.Generator, optional
        Shuffles the rows (None: in order).
    drop_last : bool
        Drop a last batch smaller than ``batch_size``, unless it is the only one (with
        shuffling, different rows each epoch).
    shuffle : str
        ``"full"`` or ``"blocks"`` (blocks of :data:`BLOCK_BATCHES` batches).

    Yields
    ------
    X_batch, y_batch : array
        Views of the (shuffled) arrays.
    """
    xp = backend.namespace(X, y)
    n = X.shape[0]
    if rng is not None:
        order = _order(rng, n, batch_size, shuffle)
        perm = xp.asarray(order, device=backend.device(X))
        X, y = xp.take(X, perm, axis=0), xp.take(y, perm, axis=0)
    for start, stop in _spans(n, batch_size, drop_last):
        yield X[start:stop, ...], y[start:stop, ...]


def host_batches(X, y, batch_size, convert, *, rng, drop_last=False, gather=None):
    """Minibatches gathered from host arrays (a memory map) one at a time and moved.

    Only one batch at a time is read from the file and held in memory, in
    :func:`block_order`; the result equals :func:`batches` with ``shuffle="blocks"``.

    Parameters
    ----------
    X : numpy.ndarray
        ``(N, F)`` features, typically a ``numpy.memmap``.
    y : numpy.ndarray
        ``(N,)`` class ids.
    batch_size : int
        Rows per batch.
    convert : callable
        Moves ``(X_batch, y_batch)`` to the model: returns them converted.
    rng : numpy.random.Generator
        Draws the order.
    drop_last : bool
        Drop a last batch smaller than ``batch_size``, unless it is the only one.
    gather : callable, optional
        ``gather(X, y, rows)`` reads and moves one batch itself, in place of
        ``convert(X[rows], y[rows])`` (:func:`xpnet.backend.prefetcher` gathers into
        pinned memory and copies while the previous step runs).

    Yields
    ------
    X_batch, y_batch : array
        On the model's library and device.
    """
    n = X.shape[0]
    order = _order(rng, n, batch_size, "blocks")
    if isinstance(X, RowSubset):  # gather from the map itself, at the subset's positions
        labels = np.zeros(X.base.shape[0], dtype=y.dtype)
        labels[X.rows] = y
        X, y, order = X.base, labels, X.rows[order]
    for start, stop in _spans(n, batch_size, drop_last):
        rows = order[start:stop]
        yield convert(X[rows], y[rows]) if gather is None else gather(X, y, rows)


def _order(rng, n, batch_size, shuffle):
    if shuffle == "blocks":
        return block_order(rng, n, batch_size * BLOCK_BATCHES)
    if shuffle != "full":
        raise XpnetValueError(f"shuffle must be 'full' or 'blocks', got {shuffle!r}")
    return rng.permutation(n)
