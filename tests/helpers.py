"""Shared test helpers: array construction on the backend under test and one
``assert_close`` that checks namespace, dtype and shape before values."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import tracemalloc
import types
from pathlib import Path

import numpy as np

from xpnet import backend

# dtype name -> (rtol, atol)
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (2e-5, 1e-6)}


def asarray(xp, device, value, dtype="float64"):
    """``value`` (anything NumPy accepts) as an ``xp`` array on ``device``."""
    host = np.asarray(value)
    if dtype is not None:
        host = host.astype(dtype)
    return xp.asarray(host, device=device)


def to_numpy(x):
    return backend.to_numpy(x)


def assert_close(actual, expected, *, xp=None, dtype=None, rtol=None, atol=None):
    """Assert ``actual`` is an ``xp`` array of ``dtype`` shaped like ``expected``, with
    values within dtype-aware tolerances of ``expected`` (any array, compared on the host).
    """
    if xp is not None:
        got = backend.library_name(backend.namespace(actual))
        want = backend.library_name(xp)
        assert got == want, f"namespace: got a {got} array, expected {want}"
    expected = np.asarray(
        to_numpy(expected) if not isinstance(expected, (list, float, int)) else expected
    )
    name = backend.dtype_name(actual.dtype)
    if dtype is not None:
        assert name == backend.dtype_name(dtype), f"dtype: got {name}, expected {dtype}"
    assert tuple(actual.shape) == expected.shape, (
        f"shape: got {tuple(actual.shape)}, expected {expected.shape}"
    )
    default_rtol, default_atol = TOLERANCES.get(name, TOLERANCES["float32"])
    np.testing.assert_allclose(
        to_numpy(actual),
        expected,
        rtol=default_rtol if rtol is None else rtol,
        atol=default_atol if atol is None else atol,
    )


def run_cli(*args, cwd=None):
    """``python -m xpnet ARGS`` in a subprocess; the CompletedProcess with text output."""
    return subprocess.run(
        [sys.executable, "-m", "xpnet", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def mutated_bytes(data, pristine, *, heads, alphabet):
    """``pristine`` after 1 to 4 random edits drawn from Hypothesis's ``data``: byte flips,
    bytes set from ``alphabet``, truncation, insertion and deletion, at positions drawn
    below one of ``heads`` (to favour the headers) or anywhere."""
    from hypothesis import strategies as st

    blob = bytearray(pristine)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        limit = data.draw(st.sampled_from([*heads, len(blob)]))
        at = data.draw(st.integers(0, max(0, min(limit, len(blob)) - 1)))
        if kind == "flip" and blob:
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and blob:
            blob[at] = data.draw(st.sampled_from(alphabet))
        elif kind == "truncate":
            del blob[at:]
        elif kind == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif blob:
            del blob[at : at + data.draw(st.integers(1, 8))]
    return bytes(blob)


class OneProcess:
    """A communicator of one process: every sum is the process's own value."""

    rank, size = 0, 1

    def allreduce_sum(self, x):
        return x * 1


class _StandInMPI:
    """The ``mpi4py.MPI`` of a :class:`ThreadedProcesses` job: its constants, and a
    ``COMM_WORLD`` that is the calling thread's."""

    SUM, LAND, COMM_TYPE_SHARED = "MPI.SUM", "MPI.LAND", "MPI.COMM_TYPE_SHARED"

    def __init__(self, job):
        self._job = job

    @property
    def COMM_WORLD(self):
        return _StandInWorld(self._job, self._job.current_rank())


class _StandInWorld:
    """Process ``rank``'s ``COMM_WORLD``: the calls xpnet makes of mpi4py's."""

    def __init__(self, job, rank):
        self._job, self._rank = job, rank

    def Get_rank(self):
        return self._rank

    def Get_size(self):
        return self._job.size

    def Split_type(self, kind):
        assert kind == _StandInMPI.COMM_TYPE_SHARED, kind
        job, rank = self._job, self._rank
        return types.SimpleNamespace(
            Get_rank=lambda: rank % job.per_machine, Free=lambda: job.freed.append(rank)
        )

    def allreduce(self, value, op):
        return self._job.reduce(self._job.exchange(self._rank, value), op)

    def bcast(self, value, root=0):
        return self._job.exchange(self._rank, value)[root]

    def Allreduce(self, send, recv, op):
        recv[...] = self._job.reduce(self._job.exchange(self._rank, send.copy()), op)

    def Abort(self, code):  # the others stop waiting, as MPI_Abort ends them
        self._job.aborted.append((self._rank, code))
        self._job.barrier.abort()


class ThreadedProcesses:
    """An MPI job of ``size`` processes as threads of this one, for what mpiexec runs.

    :meth:`run` calls ``fn(world)`` in one thread per process, where ``world`` is a
    stand-in for mpi4py's ``COMM_WORLD`` with the calls xpnet makes (``Get_rank``,
    ``Get_size``, ``Split_type``, ``allreduce``, ``bcast``, ``Allreduce``, ``Abort``);
    every collective waits for all the threads and reduces their values in rank order.
    :attr:`module` stands in for the ``mpi4py`` package (``sys.modules["mpi4py"]``), its
    ``MPI.COMM_WORLD`` the calling thread's world (rank 0's outside :meth:`run`).
    Processes are ``per_machine`` to a machine, so their local ranks differ from their
    ranks. ``aborted`` lists each ``Abort``'s ``(rank, code)``, ``freed`` the ranks whose
    machine communicator was freed.
    """

    def __init__(self, size, *, per_machine=None):
        self.size, self.per_machine = size, per_machine or size
        self.aborted, self.freed = [], []
        self.barrier = threading.Barrier(size, timeout=120)
        self._values = [None] * size
        self._local = threading.local()
        self.module = types.SimpleNamespace(MPI=_StandInMPI(self))

    def current_rank(self):
        """The rank of the calling thread (0 outside :meth:`run`)."""
        return getattr(self._local, "rank", 0)

    def exchange(self, rank, value):
        """Every process's value, in rank order, once all have given theirs."""
        self._values[rank] = value
        self.barrier.wait()
        values = list(self._values)
        self.barrier.wait()  # all have read before anyone writes again
        return values

    @staticmethod
    def reduce(values, op):
        """``values`` reduced by the stand-in ``MPI.SUM`` (in order) or ``MPI.LAND``."""
        if op == _StandInMPI.LAND:
            return all(values)
        assert op == _StandInMPI.SUM, op
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def run(self, fn):
        """``[fn(world) for each process]``; the first error of any thread is raised."""
        self.barrier.reset()  # after an Abort of an earlier run
        results, errors = [None] * self.size, []

        def target(rank):
            self._local.rank = rank
            try:
                results[rank] = fn(_StandInWorld(self, rank))
            except BaseException as err:  # the others must not wait for this one
                errors.append(err)
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


def saved_arrays(path):
    """The arrays of a safetensors file (a run's ``model.safetensors``), by name."""
    from xpnet._safetensors import decode

    return decode(Path(path).read_bytes())[0]


def rst_python_blocks(path):
    """The ``.. code-block:: python`` blocks of a reStructuredText page, dedented."""
    import textwrap

    blocks, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith("   "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def strict_devices():
    """array-api-strict and two of its devices, ``(module, default, other)``: a device
    argument dropped or ignored shows there in every session, where the NumPy session
    has one device only. Skips when array-api-strict is not installed."""
    import pytest

    strict = pytest.importorskip("array_api_strict")
    info = strict.__array_namespace_info__()
    default = info.default_device()
    return strict, default, next(d for d in info.devices() if d != default)


def other_library(xp):
    """A second Array API library beside ``xp``'s, for the refusals of mixed libraries:
    array-api-strict beside NumPy, NumPy beside any other (skips if it is missing)."""
    import pytest

    other = "array_api_strict" if backend.library_name(xp) == "numpy" else "numpy"
    pytest.importorskip(other)
    return backend.get(other)


@contextlib.contextmanager
def traced_peak():
    """Trace the allocations of the ``with`` block (Python's and NumPy's); after it,
    ``peak.bytes`` is the most held at once."""
    peak = types.SimpleNamespace(bytes=None)
    tracemalloc.start()
    try:
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
