"""Training from a memory-mapped file on a GPU: step time with and without prefetching.

A folder's ``X.npy`` is read a batch at a time (``fit`` on a ``numpy.memmap``). With
prefetching each batch is gathered into pinned memory and copied on its own CUDA stream
while the previous step runs; without it, a plain copy makes the host wait for the device
every step. The reference is the same training with the data already in GPU memory, and
the costs of the copy alone and of the host's gather of a batch's rows (in one thread and
in the threads the prefetcher uses) are measured too. One epoch is timed after a first one (kernels
compiled, the file in the page cache). Prints one table.

    python benchmarks/gpu_prefetch.py                    # on a CUDA machine (CuPy)
    python benchmarks/gpu_prefetch.py --backend numpy    # a dry run of the script
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xpnet import backend
from xpnet.models import MLP
from xpnet.nn import CrossEntropyLoss
from xpnet.optim import SGD
from xpnet.train import fit

SIZES = {  # name: (layer widths, batch size)
    "mnist b1024": ([784, 256, 128, 10], 1024),
    "mnist b4096": ([784, 256, 128, 10], 4096),
    "wide b4096": ([784, 4096, 4096, 10], 4096),
}


def _epoch_ms_per_step(xp, sizes, batch, data, **options):
    model = MLP(sizes, batchnorm=True, xp=xp, seed=0)
    opt = SGD(model, lr=0.01, momentum=0.9)
    history = fit(model, CrossEntropyLoss(), opt, data, epochs=2, batch_size=batch, **options)
    steps = data[0].shape[0] // batch
    return 1e3 * history[1]["seconds"] / steps, history[1]["loss"]


def _copy_ms(xp, rows, features):
    """One batch from pinned host memory to the device, alone (CuPy), else a host copy."""
    host = np.random.default_rng(0).standard_normal((rows, features)).astype(np.float32)
    if backend.library_name(xp) != "cupy":
        start = time.perf_counter()
        for _ in range(10):
            xp.asarray(host.copy())
        return 1e3 * (time.perf_counter() - start) / 10
    import cupy
    import cupyx

    pinned = cupyx.empty_pinned(host.shape, host.dtype)
    pinned[...] = host
    device = cupy.empty(host.shape, host.dtype)
    device.set(pinned)
    cupy.cuda.get_current_stream().synchronize()
    start = time.perf_counter()
    for _ in range(10):
        device.set(pinned)
    cupy.cuda.get_current_stream().synchronize()
    return 1e3 * (time.perf_counter() - start) / 10


def _gather_ms(mapped, batch, threads):
    """Rows of one shuffled batch gathered from the map on the host, alone."""
    rng = np.random.default_rng(1)
    out = np.empty((batch, mapped.shape[1]), dtype=mapped.dtype)
    times = []
    for _ in range(10):
        rows = np.sort(rng.choice(mapped.shape[0], batch, replace=False))
        start = time.perf_counter()
        backend.gather_rows(mapped, rows, out, threads=threads)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy")
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args(argv)
    xp = backend.get(args.backend)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.rows, 784))
        for start in range(0, args.rows, 10_000):
            stop = min(start + 10_000, args.rows)
            X[start:stop] = rng.standard_normal((stop - start, 784), dtype=np.float32)
        X.flush()
        del X
        y = rng.integers(0, 10, args.rows)
        mapped = np.load(path, mmap_mode="r")
        resident = (xp.asarray(np.asarray(mapped)), xp.asarray(y))
        print(f"{args.rows} rows x 784 float32 ({mapped.nbytes / 1e6:.0f} MB), BatchNorm, SGD; "
              f"on {backend.devices(xp)[0]}")  # fmt: skip
        threads = backend.gather_threads()
        print(
            f"{'size':<12} {'in GPU memory':>14} {'memmap+prefetch':>16} {'memmap, plain':>14} "
            f"{'copy alone':>11} {'gather, 1 thread':>17} {f'{threads} threads':>11}   ms per step"
        )
        for name in args.sizes.split(","):
            sizes, batch = SIZES[name]
            device_ms, loss_a = _epoch_ms_per_step(xp, sizes, batch, resident, shuffle="blocks")
            ahead_ms, loss_b = _epoch_ms_per_step(xp, sizes, batch, (mapped, y), prefetch=True)
            plain_ms, loss_c = _epoch_ms_per_step(xp, sizes, batch, (mapped, y), prefetch=False)
            same = "same losses" if loss_b == loss_c else f"LOSSES DIFFER {loss_b} {loss_c}"
            print(
                f"{name:<12} {device_ms:>14.2f} {ahead_ms:>16.2f} {plain_ms:>14.2f} "
                f"{_copy_ms(xp, batch, 784):>11.2f} {_gather_ms(mapped, batch, 1):>17.2f} "
                f"{_gather_ms(mapped, batch, threads):>11.2f}   ({same}; in memory {loss_a:.6f})"
            )


if __name__ == "__main__":
    main()
