"""One process through the data-parallel sum path of its backend: NCCL on device buffers
for CuPy (the GPU check runs this with ``--backend=cupy``), MPI for host arrays, the host
for other device arrays. Needs mpi4py (the nox session ``mpi`` runs it on NumPy); one
process is MPI's singleton, no ``mpiexec``."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, to_numpy
from xpnet import backend
from xpnet.distributed import convert_sync_batchnorm
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD
from xpnet.train import fit

MPI = pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed (pip install 'xpnet[mpi]')")


@pytest.fixture
def comm():
    from xpnet.distributed import MPICommunicator

    return MPICommunicator(MPI.COMM_WORLD)


def _expected_transport(x):
    if isinstance(x, np.ndarray):
        return "mpi"
    return "nccl" if backend.nccl_usable(x) else "mpi, staged through the host"


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_one_process_sums_on_its_path(xp, device, comm, dtype):
    if comm.size != 1:
        pytest.skip("one process only")
    x = asarray(xp, device, np.arange(12).reshape(3, 4) * 1.5, dtype=dtype)
    total = comm.allreduce_sum(x)
    assert comm.transport == _expected_transport(x)
    assert backend.placement(total) == backend.placement(x) and total.dtype == x.dtype
    np.testing.assert_array_equal(to_numpy(total), to_numpy(x))
    assert total is not x


@pytest.mark.parametrize("batchnorm", [False, True])
def test_one_process_fit_equals_fit_without_communicator(xp, device, comm, batchnorm):
    # The same operations without BatchNorm; with it, the global batch's variance is
    # computed from shifted sums (one all-reduce) instead of two passes: rounding apart.
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((96, 5)))
    y = asarray(xp, device, rng.integers(0, 3, 96), dtype="int64")
    results = []
    for c in (None, comm):
        model = MLP([5, 16, 3], batchnorm=batchnorm, xp=xp, device=device, dtype="float64", seed=1)
        if c is not None:
            convert_sync_batchnorm(model, c)
        opt = SGD(model, lr=0.05, momentum=0.9)
        history = fit(model, CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=32, comm=c)
        results.append(([to_numpy(p.value) for _, p in model.named_parameters()], history))
    (alone, h0), (through, h1) = results
    assert comm.transport == _expected_transport(X)
    rtol = 1e-10 if batchnorm else 0
    for a, b in zip(alone, through, strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=0)
    np.testing.assert_allclose([r["loss"] for r in h1], [r["loss"] for r in h0], rtol=rtol)
