"""Sums across processes of arrays that live on a GPU: NCCL through CuPy.

:class:`xpnet.distributed.MPICommunicator` sums host arrays with MPI itself. For CuPy
arrays it asks :func:`nccl_usable`; when every process answers yes, process 0 creates an
NCCL unique id (:func:`nccl_unique_id`), MPI broadcasts it, and each process builds a
:class:`NCCLSum` on its array's device: from then on the sums run on device buffers, on
the current CUDA stream, without a copy to the host or a wait for the device. Otherwise
(NumPy, PyTorch, array-api-strict, a CuPy without NCCL, or ``XPNET_NCCL=0`` in the
environment) the arrays are staged through the host.
"""

from __future__ import annotations

import os

from ._namespace import library_name, placement

__all__ = ["NCCLSum", "nccl_unique_id", "nccl_usable", "rank_device"]

_NCCL_TYPES = ("float32", "float64", "int32", "int64")


def _nccl():
    """CuPy's NCCL module, or None when CuPy was built or installed without NCCL."""
    try:
        from cupy.cuda import nccl

        nccl.get_version()  # loads libnccl: fails here, not in the first training step
    except (ImportError, AttributeError, RuntimeError, OSError):
        return None
    return nccl


def nccl_usable(x) -> bool:
    """Whether ``x`` can be summed across processes through NCCL in this process.

    Parameters
    ----------
    x : array
        An array of any supported library.

    Returns
    -------
    bool
        True for a CuPy array when CuPy's NCCL loads and ``XPNET_NCCL`` is not ``0``.
    """
    if os.environ.get("XPNET_NCCL", "1") == "0":
        return False
    lib, _ = placement(x)
    return lib == "cupy" and _nccl() is not None


def nccl_unique_id() -> tuple:
    """A new NCCL unique id (process 0 makes it; MPI broadcasts it to the others).

    Returns
    -------
    tuple
        The id, picklable.
    """
    nccl = _nccl()
    if nccl is None:
        raise RuntimeError("NCCL is not available in this process")
    return nccl.get_unique_id()


def rank_device(xp, local_rank: int):
    """The device a process of a data-parallel job uses when none is given.

    Processes on one machine take its CUDA devices in turn (NCCL needs one device per
    process), so four processes on a four-GPU node use ``cuda:0`` to ``cuda:3``.

    Parameters
    ----------
    xp : namespace
        The library of the model.
    local_rank : int
        The process's index among the processes on its machine.

    Returns
    -------
    device or None
        ``cupy.cuda.Device(local_rank % count)`` for CuPy; None (the library's default)
        for the other libraries.
    """
    if library_name(xp) != "cupy":
        return None
    import cupy

    return cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount())


class NCCLSum:
    """Sums of CuPy arrays over the processes of one NCCL communicator.

    Parameters
    ----------
    unique_id : tuple
        The id process 0 made with :func:`nccl_unique_id`, the same in every process.
    rank, size : int
        This process's index and the number of processes.
    like : cupy.ndarray
        An array on the device this process sums on.

    Notes
    -----
    Building it is collective: every process of the job must build one with the same id.
    """

    def __init__(self, unique_id: tuple, rank: int, size: int, like) -> None:
        import cupy

        nccl = _nccl()
        if nccl is None:
            raise RuntimeError("NCCL is not available in this process")
        self._cupy, self._nccl = cupy, nccl
        self._types = {
            cupy.dtype(name): getattr(nccl, f"NCCL_{name.upper()}") for name in _NCCL_TYPES
        }
        self.device = like.device
        with self.device:
            self._comm = nccl.NcclCommunicator(size, unique_id, rank)

    def supports(self, x) -> bool:
        """Whether ``x`` lives on this communicator's device with a type NCCL sums.

        Parameters
        ----------
        x : cupy.ndarray
            The array to sum.

        Returns
        -------
        bool
            True for float32, float64, int32 and int64 arrays on :attr:`device`.
        """
        return x.device.id == self.device.id and x.dtype in self._types

    def __call__(self, x):
        """The elementwise sum of ``x`` over all processes.

        Parameters
        ----------
        x : cupy.ndarray
            The same shape and dtype in every process (see :meth:`supports`).

        Returns
        -------
        cupy.ndarray
            A new array on ``x``'s device, queued on the current stream (no wait).
        """
        cupy = self._cupy
        with self.device:
            x = cupy.ascontiguousarray(x)
            out = cupy.empty_like(x)
            stream = cupy.cuda.get_current_stream().ptr
            self._comm.allReduce(
                x.data.ptr, out.data.ptr, x.size, self._types[x.dtype], self._nccl.NCCL_SUM, stream
            )
        return out
