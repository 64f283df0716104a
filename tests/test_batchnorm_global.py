"""SyncBatchNorm1d's global-batch statistics (the data-parallel layer, with a stand-in
communicator of one process) against the exact statistics of the same inputs,
computed in float64 by NumPy: features far from zero must not lose their variance to
cancellation, in float32 too."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import asarray, to_numpy
from xpnet.distributed import SyncBatchNorm1d

SPREAD = np.array([1.0, 2.0, 0.5, 3.0])


class OneProcess:
    """A communicator of one process: every sum is the process's own value."""

    rank, size = 0, 1

    def allreduce_sum(self, x):
        return x * 1


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
