"""Data-parallel training over MPI: every process a shard of every batch, one sum per step.

Start ``N`` processes with ``mpiexec -n N`` (or ``srun``); each loads the same data and
model, takes a disjoint share of every global batch, and after its backward pass the
gradients of all parameters are summed across processes with **one** all-reduce over one
flat buffer, so that every process takes the same optimizer step. BatchNorm layers,
converted to :class:`SyncBatchNorm1d` by :func:`convert_sync_batchnorm` before the
optimizer is made, sum their batch statistics (one all-reduce in forward, one in
backward), and dropout masks are drawn for the global batch, so ``N`` processes compute
what one process computes on the whole batch. :func:`xpnet.train.fit` with ``comm`` runs
its steps through :class:`DataParallel`. The transport is MPI through
``mpi4py`` (``pip install 'xpnet[mpi]'``) for host arrays, and NCCL for CuPy arrays when
every process can load it (the NCCL id travels over MPI; ``XPNET_NCCL=0`` turns it off),
else CuPy and PyTorch CUDA arrays are staged through the host. Processes on one machine
take its GPUs in turn when no device is given (:func:`xpnet.backend.rank_device`).

Examples
--------
A script started with ``mpiexec -n 4 python train.py``::

    from xpnet import distributed
    comm = distributed.init()          # None when started as a single process
    if comm is not None:               # BatchNorm over the global batch; then the optimizer
        model = distributed.convert_sync_batchnorm(model, comm)
    opt = SGD(model, lr=0.05, momentum=0.9)
    history = fit(model, loss, opt, data, epochs=10, batch_size=256, comm=comm)
    if comm is None or comm.rank == 0:
        xpnet.save(model, "model.safetensors")
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from . import backend
from ._typing import Array, Device, DType, Namespace
from .errors import BackendNotInstalledError, XpnetValueError
from .nn import BatchNorm1d, Dropout

__all__ = [
    "DataParallel",
    "MPICommunicator",
    "ShardedDropout",
    "SyncBatchNorm1d",
    "active",
    "convert_sync_batchnorm",
    "init",
    "shard",
]

_ACTIVE: list = []  # the communicator init() made, for the command line's error paths


class MPICommunicator:
    """The sums data-parallel training needs, over an MPI communicator.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        The communicator (``MPI.COMM_WORLD`` by default in :func:`init`).

    Attributes
    ----------
    rank : int
        This process's index, 0 to ``size - 1``.
    size : int
        The number of processes.
    local_rank : int
        This process's index among the processes on its machine (it picks the GPU).
    transport : str or None
        How the last :meth:`allreduce_sum` travelled: ``"mpi"`` (host arrays),
        ``"nccl"`` (CuPy arrays, on the device) or ``"mpi, staged through the host"``.
    abort_grace : float
        Seconds :meth:`abort` waits for this process's output to reach the launcher
        (0.5 by default).
    """

    abort_grace = 0.5

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._mpi, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = node.Get_rank()
        node.Free()
        self.transport: str | None = None
        self._device_sums: dict[tuple[str, str], Any] = {}  # placement -> NCCLSum or None

    def _device_sum(self, x: Array) -> Any:
        """The NCCL sum for ``x``'s device, made once per device (collectively), or None."""
        key = backend.placement(x)
        if key not in self._device_sums:
            # every process must take the same path, or the first sum would mismatch
            usable = self.comm.allreduce(backend.nccl_usable(x), op=self._mpi.LAND)
            summer = None
            if usable:
                unique_id = self.broadcast(backend.nccl_unique_id() if self.rank == 0 else None)
                summer = backend.NCCLSum(unique_id, self.rank, self.size, x)
            self._device_sums[key] = summer
        return self._device_sums[key]

    def allreduce_sum(self, x: Array) -> Array:
        """The elementwise sum of ``x`` over all processes, on ``x``'s library and device.

        Parameters
        ----------
        x : array
            The same shape, dtype and library on every process.

        Returns
        -------
        array
            The sum, a new array: host arrays through MPI, CuPy arrays through NCCL on
            the device where every process has it, other device arrays through the host.
        """
        if not isinstance(x, np.ndarray):
            summer = self._device_sum(x)
            if summer is not None and summer.supports(x):
                self.transport = "nccl"
                return summer(x)
        self.transport = "mpi" if isinstance(x, np.ndarray) else "mpi, staged through the host"
        host = np.ascontiguousarray(backend.to_numpy(x))
        total = np.empty_like(host)
        self.comm.Allreduce(host, total, op=self._mpi.SUM)
        if isinstance(x, np.ndarray):
            return total
        return backend.convert(total, backend.namespace(x), device=backend.device(x))

    def broadcast(self, value: Any, root: int = 0) -> Any:
        """A Python value from process ``root`` to all.

        Parameters
        ----------
        value : object
            Picklable; only ``root``'s counts.
        root : int
            The sending process.

        Returns
        -------
        object
            ``root``'s value.
        """
        return self.comm.bcast(value, root=root)

    def abort(self, code: int = 1) -> None:
        """End every process of the job (after an error on one of them).

        Flushes this process's output and waits :attr:`abort_grace` seconds first: the
        launcher forwards a process's output while it runs and stops forwarding when
        ``MPI_Abort`` ends the job, so without the pause the error message that explains
        the abort can be lost (seen with MPICH's ``mpiexec`` in 3 of 200 jobs, none with a
        0.2 s pause).

        Parameters
        ----------
        code : int
            The exit status.
        """
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):  # closed, or replaced by None
                pass
        time.sleep(self.abort_grace)
        self.comm.Abort(code)


def init() -> MPICommunicator | None:
    """The world communicator when started under MPI with more than one process.

    Also makes an uncaught exception on any process end the whole job (``MPI_Abort``), so
    that the other processes do not wait for it forever.

    Returns
    -------
    MPICommunicator or None
        None for a single process (no MPI needed, mpi4py not imported).

    Raises
    ------
    BackendNotInstalledError
        Started by an MPI launcher with several processes but mpi4py is not installed
        (one process started by a launcher trains alone without it).
    """
    import os

    launched = any(
        key in os.environ
        for key in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID")
    )
    if not launched:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        # the launcher's count of processes (MPICH's, Open MPI's); one needs no MPI
        size = (os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE") or "1").strip()
        if size == "1":
            return None
        raise BackendNotInstalledError(
            f"started under MPI with {size} processes but mpi4py is not installed: "
            "pip install 'xpnet[mpi]'"
        ) from None
    if MPI.COMM_WORLD.Get_size() == 1:
        return None
    comm = MPICommunicator(MPI.COMM_WORLD)
    previous = sys.excepthook

    def _abort_all(kind, value, traceback):
        previous(kind, value, traceback)
        comm.abort(1)

    sys.excepthook = _abort_all
    _ACTIVE[:] = [comm]
    return comm


def active() -> MPICommunicator | None:
    """The communicator :func:`init` made in this process, if any.

    Returns
    -------
    MPICommunicator or None
        None for a single process.
    """
    return _ACTIVE[0] if _ACTIVE else None


def shard(n: int, size: int, rank: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a global batch of ``n`` rows that process ``rank`` takes.

    The first ``n % size`` processes take one row more than the others.

    Parameters
    ----------
    n : int
        Rows in the global batch.
    size : int
        Processes.
    rank : int
        This process.

    Returns
    -------
    tuple of int
        ``(start, stop)``.
    """
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class SyncBatchNorm1d(BatchNorm1d):
    """:class:`~xpnet.nn.BatchNorm1d` over the global batch of a data-parallel run.

    In training, the mean and variance are those of the rows of every process together,
    summed with one all-reduce in forward, and the backward pass sums its two column sums
    with one more, so ``N`` processes normalise and differentiate exactly as one process
    does on the whole batch (:class:`~xpnet.nn.BatchNorm1d`'s equations with ``N`` the
    global batch size). ``dLdBW`` and ``dLdBb`` stay this process's share, summed with
    the other gradients by :class:`DataParallel`. Evaluation uses the running statistics,
    as the plain layer does. :func:`convert_sync_batchnorm` makes these from a model's
    layers.

    Parameters
    ----------
    num_features : int
        ``C``.
    alpha : float
        The running statistics' weight of the past, as for :class:`~xpnet.nn.BatchNorm1d`.
    eps : float
        Added to the variance.
    comm : MPICommunicator
        The processes; anything with ``allreduce_sum`` will do.
    xp : str or namespace, optional
        Library of the arrays (default NumPy).
    device : optional
        Their device.
    dtype : optional
        ``float32`` (default) or ``float64``.

    Attributes
    ----------
    comm : MPICommunicator
        The processes.
    """

    local_statistics = False
    declared_caches = (*BatchNorm1d.declared_caches, "_n", "_shift")

    def __init__(
        self,
        num_features: int,
        alpha: float = 0.9,
        eps: float = 1e-8,
        *,
        comm: Any,
        xp: Namespace = None,
        device: Device = None,
        dtype: DType = None,
    ) -> None:
        super().__init__(num_features, alpha, eps, xp=xp, device=device, dtype=dtype)
        self.comm = comm
        self._n: Array = None
        self._shift: Array = None

    @classmethod
    def from_module(cls, layer: BatchNorm1d, comm: Any) -> SyncBatchNorm1d:
        """The synchronised twin of ``layer``, over the very same arrays (nothing copied).

        Parameters
        ----------
        layer : BatchNorm1d
            The layer to replace.
        comm : MPICommunicator
            The processes.

        Returns
        -------
        SyncBatchNorm1d
            With ``layer``'s parameters, running statistics, constants and mode.
        """
        twin = cls.__new__(cls)
        twin.__dict__.update(layer.__dict__)  # the same arrays, caches and settings
        twin.comm, twin._n, twin._shift = comm, None, None
        return twin

    def check_batch(self, n: int) -> None:
        """Accept any share: the global batch is what needs two rows.

        Parameters
        ----------
        n : int
            This process's rows.
        """

    def _batch_statistics(self, Z, xp):
        """Mean and variance of the global batch, summed across processes in one call.

        The sums are of ``Z - K`` and ``(Z - K)²`` for a shift ``K`` that every process
        shares: the previous global batch's mean. ``Σ(Z-K)²/N - (Σ(Z-K)/N)²`` then loses
        nothing to cancellation when the features lie far from zero (``ΣZ²/N - M²`` would
        lose all of float32's digits at a mean of 3000 and a unit spread). The first batch,
        with no previous mean, sums ``Z`` first for its mean: one call more, once.
        """
        C = Z.shape[1]
        rows = xp.ones((1,), dtype=Z.dtype, device=backend.device(Z)) * Z.shape[0]
        K = self._shift
        if K is None:
            total = self.comm.allreduce_sum(xp.concat([xp.sum(Z, axis=0), rows]))
            K = xp.reshape(total[:C] / total[C], (1, C))
        D = Z - K
        total = self.comm.allreduce_sum(xp.concat([xp.sum(D, axis=0), xp.sum(D * D, axis=0), rows]))
        self._n = total[2 * C]
        S = xp.reshape(total[:C] / self._n, (1, C))  # the mean of Z - K
        M = K + S
        V = xp.reshape(total[C : 2 * C] / self._n, (1, C)) - S * S
        self._shift = M
        return M, V, Z - M

    def _gradient_sums(self, dLdBZ, xp):
        """The column sums over the global batch, in one call; ``dLdBW`` and ``dLdBb``
        stay this process's share."""
        C = dLdBZ.shape[1]
        total = self.comm.allreduce_sum(xp.concat([self.dLdBb[0, :], self.dLdBW[0, :]]))
        return self._n, xp.reshape(total[:C], (1, C)), xp.reshape(total[C:], (1, C))


class ShardedDropout(Dropout):
    """:class:`~xpnet.nn.Dropout` whose mask is drawn for the global batch.

    Every process draws the same mask for all ``rows`` rows from the same generator and
    takes its own rows ``[start, stop)`` of it, so ``N`` processes drop what one process
    drops. :class:`DataParallel` sets :attr:`shard` before each step.

    Attributes
    ----------
    shard : tuple of int or None
        ``(rows, start, stop)``; None draws for the input itself, as the plain layer.
    """

    shard: tuple[int, int, int] | None = None

    @classmethod
    def from_module(cls, layer: Dropout) -> ShardedDropout:
        """The sharded twin of ``layer``, drawing from the very same generator.

        Parameters
        ----------
        layer : Dropout
            The layer to stand in for.

        Returns
        -------
        ShardedDropout
            With ``layer``'s probability, generator and mode.
        """
        twin = cls.__new__(cls)
        twin.__dict__.update(layer.__dict__)
        twin.shard = None
        return twin

    def _keep(self, shape):
        if self.shard is None:
            return super()._keep(shape)
        rows, start, stop = self.shard
        return self.rng.random((rows, *shape[1:]))[start:stop] >= self.p


def convert_sync_batchnorm(model: Any, comm: Any) -> Any:
    """Synchronise a model's BatchNorm layers, as PyTorch's ``convert_sync_batchnorm``.

    Every :class:`~xpnet.nn.BatchNorm1d` is replaced by a :class:`SyncBatchNorm1d` over
    the same arrays. Call it before the optimizer is made: an optimizer holds the layers
    whose gradients it reads. The model's ``state_dict`` keys, and so its checkpoints, do
    not change.

    Parameters
    ----------
    model : MLP
        A model with ``bn_layers``.
    comm : MPICommunicator
        The processes.

    Returns
    -------
    MLP
        ``model`` itself, converted in place.
    """
    model.bn_layers[:] = [
        layer if isinstance(layer, SyncBatchNorm1d) else SyncBatchNorm1d.from_module(layer, comm)
        for layer in model.bn_layers
    ]
    return model


class DataParallel:
    """A model's training steps shared across processes.

    Each process takes its rows of every global batch, and the gradients (with the loss)
    are summed in one all-reduce.

    While open (:meth:`open`, or as a context manager), the model's dropout layers are
    :class:`ShardedDropout` over their own generators; closing puts the plain layers back.
    :func:`xpnet.train.fit` with ``comm`` trains through one of these.

    Parameters
    ----------
    model : MLP
        Its BatchNorm layers must be :class:`SyncBatchNorm1d` (:func:`convert_sync_batchnorm`).
    comm : MPICommunicator
        The processes.

    Raises
    ------
    XpnetValueError
        A BatchNorm layer that would normalise with this process's rows only.
    """

    def __init__(self, model: Any, comm: Any) -> None:
        plain = [i for i, bn in enumerate(model.bn_layers) if not isinstance(bn, SyncBatchNorm1d)]
        if plain:
            raise XpnetValueError(
                f"data-parallel training: the model's BatchNorm layers {plain} would normalise "
                f"with this process's rows only; convert them before making the optimizer: "
                f"model = xpnet.distributed.convert_sync_batchnorm(model, comm)"
            )
        self.model, self.comm = model, comm
        self.params = [p for _, p in model.named_parameters()]
        self._plain: list | None = None  # the model's own dropout layers while open

    def open(self) -> DataParallel:
        """Put :class:`ShardedDropout` layers in place of the model's dropout layers.

        Returns
        -------
        DataParallel
            Itself.
        """
        if self._plain is None:  # opening what is open changes nothing
            drops = self.model.dropout_layers
            self._plain = list(drops)
            drops[:] = [ShardedDropout.from_module(d) for d in drops]
        return self

    def close(self) -> None:
        """Put the model's own dropout layers back (their generators have moved on).

        Closing what is not open changes nothing.
        """
        if self._plain is not None:
            self.model.dropout_layers[:] = self._plain
            self._plain = None

    def __enter__(self) -> DataParallel:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shard(self, X: Array, y: Array) -> tuple[Array, Array, float] | None:
        """This process's rows of a global batch, and their share of it.

        Parameters
        ----------
        X, y : array
            The global batch, the same in every process.

        Returns
        -------
        tuple or None
            ``(X_shard, y_shard, share)``; None for a batch with fewer rows than processes
            (skipped by every process alike).
        """
        n = X.shape[0]
        if n < self.comm.size:
            return None
        start, stop = shard(n, self.comm.size, self.comm.rank)
        for drop in self.model.dropout_layers:
            drop.shard = (n, start, stop)
        return X[start:stop, ...], y[start:stop], (stop - start) / n

    def sum_gradients(self, loss: Array) -> Array:
        """Sum every parameter's gradient and ``loss`` over the processes, in one call.

        Parameters
        ----------
        loss : array
            This process's share of the global batch's loss, 0-d.

        Returns
        -------
        array
            The global batch's loss; the gradients are replaced by their sums.
        """
        xp = self.model.xp
        flat = xp.concat(
            [xp.reshape(p.grad, (-1,)) for p in self.params] + [xp.reshape(loss, (1,))]
        )
        flat = self.comm.allreduce_sum(flat)
        offset = 0
        for p in self.params:
            shape = tuple(p.grad.shape)
            size = math.prod(shape)
            setattr(p.module, p.grad_attr, xp.reshape(flat[offset : offset + size], shape))
            offset += size
        return flat[offset]
