"""Data-parallel training as a wrapper beneath the model: SyncBatchNorm1d swapped in by
convert_sync_batchnorm, ShardedDropout and the gradient sum of DataParallel, checked in
one process with a stand-in communicator (tests/mpi runs them under mpiexec)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import OneProcess, asarray, to_numpy
from xpnet.distributed import (
    DataParallel,
    ShardedDropout,
    SyncBatchNorm1d,
    convert_sync_batchnorm,
)
from xpnet.errors import XpnetValueError
from xpnet.models import MLP
from xpnet.nn import BatchNorm1d, CrossEntropyLoss, Dropout
from xpnet.optim import SGD
from xpnet.train import fit


def test_conversion_keeps_the_arrays_and_the_checkpoint_keys(xp, device):
    model = MLP([5, 8, 6, 3], batchnorm=True, xp=xp, device=device, seed=2)
    before = [(bn.BW, bn.Bb, bn.running_M, bn.running_V) for bn in model.bn_layers]
    keys = list(model.state_dict())
    model.eval()
    comm = OneProcess()
    assert convert_sync_batchnorm(model, comm) is model
    assert [type(bn) for bn in model.bn_layers] == [SyncBatchNorm1d, SyncBatchNorm1d]
    for bn, arrays in zip(model.bn_layers, before, strict=True):
        assert bn.comm is comm and not bn.training
        now = (bn.BW, bn.Bb, bn.running_M, bn.running_V)
        assert all(a is b for a, b in zip(now, arrays, strict=True))
    assert list(model.state_dict()) == keys
    again = list(model.bn_layers)
    convert_sync_batchnorm(model, comm)  # converting twice changes nothing
    assert all(a is b for a, b in zip(model.bn_layers, again, strict=True))


def test_fit_refuses_batchnorm_that_is_not_synchronised(xp, device):
    model = MLP([5, 8, 3], batchnorm=True, xp=xp, device=device, dtype="float64")
    start = to_numpy(model.layers[0].W).copy()
    X = asarray(xp, device, np.random.default_rng(0).standard_normal((32, 5)))
    y = asarray(xp, device, np.arange(32) % 3, dtype="int64")
    with pytest.raises(XpnetValueError, match=r"layers \[0\] would normalise .*convert_sync"):
        fit(model, CrossEntropyLoss(), SGD(model), (X, y), epochs=1, batch_size=16,
            comm=OneProcess())  # fmt: skip
    np.testing.assert_array_equal(to_numpy(model.layers[0].W), start)
    assert type(model.bn_layers[0]) is BatchNorm1d


@pytest.mark.parametrize("batchnorm", [False, True])
def test_one_process_through_the_wrapper_trains_as_without_it(xp, device, batchnorm):
    """The same steps: without BatchNorm to the bit; with it, the global statistics come
    from shifted sums (one all-reduce) instead of two passes, so to rounding."""
    rng = np.random.default_rng(0)
    X = asarray(xp, device, rng.standard_normal((96, 5)))
    y = asarray(xp, device, rng.integers(0, 3, 96), dtype="int64")
    results = []
    for comm in (None, OneProcess()):
        model = MLP([5, 16, 3], batchnorm=batchnorm, dropout=0.3, xp=xp, device=device,
                    dtype="float64", seed=1)  # fmt: skip
        drops = list(model.dropout_layers)
        if comm is not None:
            convert_sync_batchnorm(model, comm)
        opt = SGD(model, lr=0.05, momentum=0.9)
        history = fit(model, CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=32, comm=comm)
        assert all(a is b for a, b in zip(model.dropout_layers, drops, strict=True))
        assert all(type(d) is Dropout for d in model.dropout_layers)
        state = [d.rng.bit_generator.state for d in drops]
        results.append(([to_numpy(p.value) for _, p in model.named_parameters()], history, state))
    (alone, h0, s0), (through, h1, s1) = results
    rtol = 1e-10 if batchnorm else 0
    for a, b in zip(alone, through, strict=True):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=0)
    np.testing.assert_allclose([r["loss"] for r in h1], [r["loss"] for r in h0], rtol=rtol)
    assert s0 == s1  # the generators moved on alike


def test_sharded_masks_put_together_are_the_whole_batch_s(xp, device):
    X = asarray(xp, device, np.ones((10, 4)))
    whole = to_numpy(Dropout(0.4, seed=7).forward(X))
    parts = []
    for start, stop in ((0, 4), (4, 7), (7, 10)):  # three processes' shards
        drop = ShardedDropout.from_module(Dropout(0.4, seed=7))
        drop.shard = (10, start, stop)
        parts.append(to_numpy(drop.forward(X[start:stop, ...])))
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < np.count_nonzero(whole == 0) < whole.size


def test_the_wrapper_sums_gradients_and_loss_in_one_call(xp, device):
    class Counting(OneProcess):
        calls = 0

        def allreduce_sum(self, x):
            Counting.calls += 1
            return x * 2  # as if a second process had the same numbers

    model = MLP([4, 6, 3], batchnorm=False, xp=xp, device=device, dtype="float64", seed=0)
    X = asarray(xp, device, np.random.default_rng(1).standard_normal((8, 4)))
    y = asarray(xp, device, np.arange(8) % 3, dtype="int64")
    loss = CrossEntropyLoss()
    L = loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    grads = [to_numpy(p.grad).copy() for _, p in model.named_parameters()]
    with DataParallel(model, Counting()) as parallel:
        total = parallel.sum_gradients(L)
    assert Counting.calls == 1
    assert float(total) == pytest.approx(2 * float(L), rel=1e-15)
    for g, (_, p) in zip(grads, model.named_parameters(), strict=True):
        np.testing.assert_array_equal(to_numpy(p.grad), 2 * g)
