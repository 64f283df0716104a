"""Batches of host data (a memory map) moved to a GPU while the previous step runs.

``fit`` on a ``numpy.memmap`` gathers each batch on the host and moves it to the model.
A plain copy from pageable memory makes the host wait for the device, which has the
previous step still queued; here each batch is gathered straight into page-locked
(pinned) host memory and copied on a separate CUDA stream, and the step that uses it waits
for that copy on the device, not on the host. A ring of ``depth`` slots (pinned buffer,
device buffer, two events) is reused: the host refills a pinned buffer once its last copy
has finished, and a copy refills a device buffer once the step that read it has run.
CuPy only; the other libraries move batches as before (:func:`prefetcher` returns None).
"""

from __future__ import annotations

import numpy as np

from ._namespace import placement

__all__ = ["PinnedPrefetcher", "prefetcher"]


def prefetcher(like, depth: int = 3):
    """A :class:`PinnedPrefetcher` for arrays like ``like``, when its library has one.

    Parameters
    ----------
    like : array
        An array on the model's device (a parameter).
    depth : int
        Slots in the ring: batches that may be in flight at once.

    Returns
    -------
    PinnedPrefetcher or None
        For CuPy arrays; None for host arrays and the other libraries.
    """
    lib, _ = placement(like)
    return PinnedPrefetcher(like, depth) if lib == "cupy" else None


class _Slot:
    """One batch's pinned host buffers, device buffers and events."""

    def __init__(self, cupy, rows, features, x_dtype):
        import cupyx

        self.rows, self.features, self.x_dtype = rows, features, np.dtype(x_dtype)
        self.host_X = cupyx.empty_pinned((rows, features), dtype=self.x_dtype)
        self.host_y = cupyx.empty_pinned((rows,), dtype=np.int64)
        self.dev_X = cupy.empty((rows, features), dtype=self.x_dtype)
        self.dev_y = cupy.empty((rows,), dtype=np.int64)
        self.copied = None  # the copy stream's event after this slot's last copy
        self.consumed = None  # the compute stream's event after the last step that read it

    def fits(self, rows, features, x_dtype):
        return rows <= self.rows and features == self.features and x_dtype == self.x_dtype


class PinnedPrefetcher:
    """Gathers batches into pinned memory and copies them on their own CUDA stream.

    Parameters
    ----------
    like : cupy.ndarray
        An array on the device the batches go to.
    depth : int
        Slots in the ring (at least 2).

    Examples
    --------
    ``fit`` uses it for memory-mapped data on a CuPy model; by hand::

        move = backend.prefetcher(model.layers[0].W)
        for rows in batches_of_row_indices:
            Xb, yb = move(X_memmap, y, rows, dtype=model.dtype)
            ...  # a training step on Xb, yb
    """

    def __init__(self, like, depth: int = 3) -> None:
        import cupy

        self._cupy = cupy
        self.device = like.device
        self.depth = max(2, int(depth))
        with self.device:
            self.stream = cupy.cuda.Stream(non_blocking=True)
        self._slots: list[_Slot | None] = [None] * self.depth
        self._count = 0

    def _slot(self, index, rows, features, x_dtype, compute):
        slot = self._slots[index]
        if slot is None or not slot.fits(rows, features, x_dtype):
            if slot is not None and slot.copied is not None:
                slot.copied.synchronize()  # its pinned memory is freed: no copy may read it
            capacity = max(rows, slot.rows if slot is not None else 0)
            slot = _Slot(self._cupy, capacity, features, x_dtype)
            # new device memory may have been freed by steps still queued on the compute
            # stream: the first copy into it waits for them
            slot.consumed = compute.record()
            self._slots[index] = slot
        return slot

    def __call__(self, X, y, rows, *, dtype):
        """Rows ``rows`` of ``X`` and ``y`` on the device, ``X`` cast to ``dtype``.

        Parameters
        ----------
        X : numpy.ndarray
            ``(N, F)`` host features (a ``numpy.memmap``).
        y : numpy.ndarray
            ``(N,)`` int64 class ids.
        rows : numpy.ndarray
            The row indices of the batch.
        dtype : dtype
            The model's floating dtype.

        Returns
        -------
        X_batch, y_batch : cupy.ndarray
            Ready for the steps queued after this call on the current stream. They share
            the ring's memory: valid until ``depth - 1`` further calls.
        """
        cupy = self._cupy
        n, features = len(rows), X.shape[1]
        with self.device:
            compute = cupy.cuda.get_current_stream()
            previous = self._slots[(self._count - 1) % self.depth] if self._count else None
            if previous is not None:  # the last batch's step is queued: mark its end
                previous.consumed = compute.record()
            slot = self._slot(self._count % self.depth, n, features, X.dtype, compute)
            self._count += 1
            if slot.copied is not None:
                slot.copied.synchronize()  # the host waits only for this slot's last copy
            np.take(X, rows, axis=0, out=slot.host_X[:n])
            np.take(y, rows, axis=0, out=slot.host_y[:n])
            self.stream.wait_event(slot.consumed)
            kind = cupy.cuda.runtime.memcpyHostToDevice
            for dev, host in ((slot.dev_X, slot.host_X[:n]), (slot.dev_y, slot.host_y[:n])):
                cupy.cuda.runtime.memcpyAsync(
                    dev.data.ptr, host.ctypes.data, host.nbytes, kind, self.stream.ptr
                )
            slot.copied = self.stream.record()
            compute.wait_event(slot.copied)
            X_batch = slot.dev_X[:n]
            if X_batch.dtype != np.dtype(dtype):
                X_batch = X_batch.astype(dtype)
            return X_batch, slot.dev_y[:n]
