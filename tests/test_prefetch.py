"""Memory-mapped batches moved to the model ahead of use: on CuPy through pinned memory and
a copy stream (run by the GPU check with ``--backend=cupy``), elsewhere as before. The
batches, and so training, are the same with and without prefetching."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import to_numpy
from xpnet import backend
from xpnet.data import host_batches
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD
from xpnet.train import fit


def _memmap(tmp_path, n=2000, features=37, dtype="float64", seed=0, integers=False):
    rng = np.random.default_rng(seed)
    X = rng.integers(-50, 50, (n, features)) if integers else rng.standard_normal((n, features))
    X = X.astype(dtype)
    y = rng.integers(0, 5, n)
    np.save(tmp_path / "X.npy", X)
    return np.load(tmp_path / "X.npy", mmap_mode="r"), y, X


def test_a_gather_hook_replaces_read_and_convert(tmp_path):
    X, y, _ = _memmap(tmp_path, n=300)
    seen = []

    def gather(X_, y_, rows):
        seen.append(len(rows))
        return np.asarray(X_[rows]) + 0, y_[rows]

    plain = list(host_batches(X, y, 64, lambda a, b: (a, b), rng=np.random.default_rng(1)))
    hooked = list(
        host_batches(X, y, 64, None, rng=np.random.default_rng(1), gather=gather)  # type: ignore[arg-type]
    )
    assert seen == [64, 64, 64, 64, 44] and len(plain) == len(hooked)
    for (a, b), (c, d) in zip(plain, hooked, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def _prefetcher_or_skip(xp, device, depth=3):
    param = xp.zeros((2, 2), dtype=xp.float32, device=device)
    move = backend.prefetcher(param, depth=depth)
    if move is None:
        assert backend.on_host(param) or backend.library_name(xp) != "cupy"
        pytest.skip(f"{backend.library_name(xp)}: batches are moved without prefetching")
    return move


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prefetched_batches_equal_the_rows(xp, device, tmp_path, depth, dtype):
    move = _prefetcher_or_skip(xp, device, depth)
    # small integers: every sum below is exact in float32 and float64 whatever the order of
    # its terms, so a batch read from a reused slot cannot hide in rounding
    X, y, host = _memmap(tmp_path, integers=True)
    rng = np.random.default_rng(2)
    order = rng.permutation(X.shape[0])
    sums, labels, expected = [], [], []
    for start in range(0, X.shape[0], 96):  # the last batch is smaller: same ring slots
        rows = order[start : start + 96]
        Xb, yb = move(X, y, rows, dtype=dtype)
        assert Xb.dtype == xp.asarray(np.zeros(1, dtype)).dtype and Xb.shape == (len(rows), 37)
        # queued work that reads the batch after later copies were issued: a slot reused
        # too early would show here
        heavy = Xb @ xp.ones((37, 512), dtype=Xb.dtype, device=device)
        sums.append(xp.sum(heavy, axis=1) / 512)
        labels.append(yb * 1)
        expected.append((host[rows].astype(dtype).sum(axis=1), y[rows]))
    for got, want_y, (want, wanted_y) in zip(sums, labels, expected, strict=True):
        np.testing.assert_array_equal(to_numpy(got), want)
        np.testing.assert_array_equal(to_numpy(want_y), wanted_y)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_training_is_the_same_with_and_without_prefetching(xp, device, tmp_path, batchnorm):
    X, y, _ = _memmap(tmp_path, n=1500, features=12, dtype="float32")
    results = []
    for prefetch in (False, True):
        model = MLP([12, 16, 5], batchnorm=batchnorm, xp=xp, device=device, seed=1)
        history = fit(
            model, CrossEntropyLoss(), SGD(model, lr=0.05, momentum=0.9), (X, y),
            epochs=2, batch_size=64, seed=3, prefetch=prefetch,
        )  # fmt: skip
        results.append(([to_numpy(p.value) for _, p in model.named_parameters()], history))
    (plain, h0), (ahead, h1) = results
    assert [r["loss"] for r in h0] == [r["loss"] for r in h1]
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a, b)


class _HostCupy:
    """Just enough of CuPy's interface, on the host and synchronous, to run the
    prefetcher's bookkeeping (ring slots, partial batches, casts, pointers) on a machine
    without a GPU; the GPU check runs the real thing above."""

    class ndarray(np.ndarray):
        @property
        def data(self):  # CuPy's MemoryPointer: .ptr
            return type("Pointer", (), {"ptr": self.ctypes.data})()

        @property
        def device(self):
            return _HostCupy.Device()

    class Device:
        id = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class Event:
        def synchronize(self):
            pass

    class Stream:
        ptr = 0

        def __init__(self, non_blocking=False):
            self.waited = 0

        def record(self):
            return _HostCupy.Event()

        def wait_event(self, event):
            assert isinstance(event, _HostCupy.Event)
            self.waited += 1

    def __init__(self):
        import ctypes
        import types

        current = self.Stream()
        runtime = types.SimpleNamespace(
            memcpyHostToDevice=1,
            memcpyAsync=lambda dst, src, n, kind, stream: ctypes.memmove(dst, src, n),
        )
        self.cuda = types.SimpleNamespace(
            Stream=self.Stream, get_current_stream=lambda: current, runtime=runtime
        )
        self.current = current
        self.cupyx = types.SimpleNamespace(empty_pinned=lambda shape, dtype: np.empty(shape, dtype))

    def empty(self, shape, dtype):
        return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -1, dtype).view(
            self.ndarray
        )


def test_prefetcher_bookkeeping_on_a_host_stand_in(tmp_path, monkeypatch):
    import sys

    fake = _HostCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupyx", fake.cupyx)
    X, y, host = _memmap(tmp_path, n=500, features=7)
    move = backend.PinnedPrefetcher(fake.empty((1,), "float32"), depth=2)
    order = np.random.default_rng(4).permutation(500)
    sizes = [32, 32, 64, 64, 10, 64, 96, 3]  # growing batches replace a slot; small ones reuse it
    start = 0
    for size in sizes:
        rows = order[start : start + size]
        start += size
        Xb, yb = move(X, y, rows, dtype="float32")
        assert Xb.dtype == np.float32 and Xb.shape == (size, 7) and yb.shape == (size,)
        np.testing.assert_array_equal(np.asarray(Xb), host[rows].astype("float32"))
        np.testing.assert_array_equal(np.asarray(yb), y[rows])
    same, _ = move(X, y, order[:5], dtype="float64")  # no cast: the ring's own memory
    np.testing.assert_array_equal(np.asarray(same), host[order[:5]])
    assert fake.current.waited == len(sizes) + 1  # every batch waited for its copy
    assert all(slot.rows >= 64 for slot in move._slots)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_rows_gathered_in_threads_equal_numpy_take(tmp_path, threads):
    """A batch split among threads (uneven parts too) equals one ``numpy.take``."""
    X, _, host = _memmap(tmp_path, n=3000, features=11, dtype="float32")
    rows = np.random.default_rng(5).permutation(3000)[:1999]
    out = np.full((2100, 11), np.nan, dtype=np.float32)
    backend.gather_rows(X, rows, out[:1999], threads=threads)
    np.testing.assert_array_equal(out[:1999], host[rows])
    assert np.isnan(out[1999:]).all()  # nothing written past the batch
