"""SyncBatchNorm1d's global-batch statistics (the data-parallel layer, with a stand-in
communicator of one process) against the exact statistics of the same inputs,
computed in float64 by NumPy: features far from zero must not lose their variance to
cancellation, in float32 too."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import OneProcess, asarray, to_numpy
from xpnet.distributed import SyncBatchNorm1d

SPREAD = np.array([1.0, 2.0, 0.5, 3.0])


def _exact(Z, G, eps):
    """Forward output and input gradient of a fresh BatchNorm (scale 1, shift 0) in float64."""
    M, V = Z.mean(axis=0), Z.var(axis=0)
    NZ = (Z - M) / np.sqrt(V + eps)
    dZ = (G - G.mean(axis=0) - NZ * (G * NZ).mean(axis=0)) / np.sqrt(V + eps)
    return M, V, NZ, dZ


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
@pytest.mark.parametrize("offset", [0.0, 3e3, -5e5])
def test_global_statistics_are_exact(xp, device, dtype, rtol, offset):
    # The variance is compared relatively: it is what cancellation destroys (ΣZ²/N - M²
    # at a mean of 3000 leaves float32 no correct digit). The mean and the normalised
    # outputs can be off by the rounding of numbers of the features' size, eps·|offset|
    # (over the spread, for the outputs), whichever formula computes them.
    rounding = 8 * float(np.finfo(dtype).eps) * (abs(offset) + 10)
    rng = np.random.default_rng(0)
    bn = SyncBatchNorm1d(4, alpha=0.0, comm=OneProcess(), xp=xp, device=device, dtype=dtype)
    for step in range(3):  # the first batch, then batches after it (a mean is known)
        Z = (offset + rng.standard_normal((64, 4)) * SPREAD).astype(dtype)
        G = rng.standard_normal((64, 4)).astype(dtype)
        M, V, NZ, dZ = _exact(Z.astype("float64"), G.astype("float64"), bn.eps)
        out = bn.forward(asarray(xp, device, Z, dtype))
        grad = bn.backward(asarray(xp, device, G, dtype))
        where = f"step {step}"
        np.testing.assert_allclose(to_numpy(bn.V)[0], V, rtol=rtol, err_msg=where)
        np.testing.assert_allclose(to_numpy(bn.M)[0], M, rtol=rtol, atol=rounding, err_msg=where)
        atol = rounding / SPREAD.min()
        np.testing.assert_allclose(to_numpy(out), NZ, rtol=rtol, atol=atol, err_msg=where)
        np.testing.assert_allclose(
            to_numpy(grad), dZ, rtol=rtol, atol=max(atol, rtol), err_msg=where
        )


class Counting(OneProcess):
    def __init__(self):
        self.calls = 0

    def allreduce_sum(self, x):
        self.calls += 1
        return x * 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_all_reduce_each_way_after_the_first_batch(xp, device, dtype):
    """The first batch sums Z for a shift (one call more); every later one shifts by the
    previous global mean, so forward and backward take one call each. The statistics keep
    the layer's dtype and shape."""
    comm = Counting()
    bn = SyncBatchNorm1d(3, comm=comm, xp=xp, device=device, dtype=dtype)
    rng = np.random.default_rng(1)
    expected = [(2, 1), (1, 1), (1, 1)]
    for step, (forward, backward) in enumerate(expected):
        Z = asarray(xp, device, rng.standard_normal((8, 3)), dtype)
        comm.calls = 0
        out = bn.forward(Z)
        assert comm.calls == forward, f"step {step}: forward"
        comm.calls = 0
        grad = bn.backward(asarray(xp, device, rng.standard_normal((8, 3)), dtype))
        assert comm.calls == backward, f"step {step}: backward"
        for name, array in (("M", bn.M), ("V", bn.V), ("out", out), ("grad", grad)):
            assert array.dtype == getattr(xp, dtype), name
        assert tuple(bn.M.shape) == tuple(bn.V.shape) == (1, 3)
