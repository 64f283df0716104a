"""What one eager CuPy training step launches, counted on any machine (no GPU needed).

At the mnist sizes an eager step on a GPU takes the time of its launches, not of its
kernels (see BENCHMARKS.md), so the number of launches per step is what to cut there. This
script runs xpnet's real CuPy code path (``CupyFused``, the modules, SGD) on a stand-in
CuPy whose kernels, products and allocations only count themselves, and prints per size:
xpnet's kernels by name, the cuBLAS products, CuPy's own kernels (a reduction and the
arithmetic on its result), the allocations, and the host's Python time of
one step with the GPU work taken out (the part of an eager step that is xpnet's own
code; CuPy's own per-call cost comes on top on a device).

    python benchmarks/launch_count.py
    python benchmarks/launch_count.py --sizes mnist-b128 --steps 2000 --detail
"""

from __future__ import annotations

import argparse
import time
import types
from collections import Counter

import numpy as np

import xpnet.backend
from xpnet.app.bench_gpu import GPU_SIZES
from xpnet.app.peers import XpnetStep
from xpnet.backend import CupyFused


def counting_cupy(counts):
    """The part of CuPy's interface that ``CupyFused`` uses, over NumPy, counting."""

    class Function:
        def __init__(self, name):
            self.name = name

        def __call__(self, grid, block, args):
            counts[f"kernel {self.name}"] += 1

    class Module:
        def __init__(self, code, options=()):
            pass

        def get_function(self, name):
            return Function(name)

    def counted(what, function):
        def call(*args, **kwargs):
            counts[what] += 1
            return function(*args, **kwargs)

        return call

    class Result(np.ndarray):
        """A library reduction's 0-d result: arithmetic on it is one more library kernel."""

        def __truediv__(self, other):
            counts["library kernel"] += 1
            return np.asarray(self) / other

    def library_sum(x):
        with np.errstate(all="ignore"):  # the stand-in's arrays hold whatever was there
            return np.asarray(np.sum(x)).view(Result)

    pool = {}  # one buffer per shape and dtype, as cheap as CuPy's memory pool (the
    # kernels write nothing, so arrays that share a buffer change no count)

    def empty(shape, dtype=np.float64):
        key = (tuple(shape) if isinstance(shape, (tuple, list)) else (shape,), np.dtype(dtype))
        if key not in pool:
            pool[key] = np.empty(*key)
        return pool[key]

    return types.SimpleNamespace(
        RawModule=Module,
        empty=counted("allocation", empty),
        empty_like=counted("allocation", lambda x: empty(x.shape, x.dtype)),
        zeros=counted("allocation", np.zeros),
        ascontiguousarray=np.ascontiguousarray,
        sum=counted("library kernel", library_sum),
        int64=np.int64,
    )


def counting_ops(counts):
    """``CupyFused`` on the counting stand-in, its cuBLAS products counted too."""
    cupy = counting_cupy(counts)
    ops = CupyFused(cupy=cupy)
    ops._blas_loaded = True  # no cuBLAS: matmul below stands in for it

    def matmul(A, B, trans_a=False, trans_b=False):
        counts["product"] += 1
        rows = A.shape[1] if trans_a else A.shape[0]
        cols = B.shape[0] if trans_b else B.shape[1]
        return cupy.empty((rows, cols), dtype=A.dtype)

    ops.matmul = matmul
    return ops


def measure(size, steps, dtype="float32"):
    """(counts of one step, host µs per step) at ``size``."""
    widths, batch, batchnorm = GPU_SIZES[size]
    counts: Counter = Counter()
    ops = counting_ops(counts)
    real = xpnet.backend.fused
    xpnet.backend.fused = lambda xp: ops
    try:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, widths[0])).astype(dtype)
        y = rng.integers(0, widths[-1], batch)
        step = XpnetStep(widths, X, y, batchnorm=batchnorm, xp="numpy")
        for _ in range(3):
            step()
        counts.clear()
        step()
        one = Counter(counts)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        host = (time.perf_counter() - start) / steps * 1e6
    finally:
        xpnet.backend.fused = real
    return one, host


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(GPU_SIZES))
    parser.add_argument("--steps", type=int, default=500, help="steps timed per size")
    parser.add_argument("--detail", action="store_true", help="also list kernels by name")
    args = parser.parse_args(argv)
    print(
        "| size | xpnet kernels | products | CuPy kernels | launches | allocations "
        "| host µs per step, GPU work stubbed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    details = []
    for size in args.sizes.split(","):
        counts, host = measure(size, args.steps)
        kernels = sum(v for k, v in counts.items() if k.startswith("kernel "))
        launches = kernels + counts["product"] + counts["library kernel"]
        print(
            f"| {size} | {kernels} | {counts['product']} | {counts['library kernel']} "
            f"| {launches} | {counts['allocation']} | {host:.1f} |"
        )
        details.append((size, counts))
    if args.detail:
        for size, counts in details:
            print(f"\n{size}:")
            for name, n in sorted(counts.items()):
                print(f"  {n:3d}  {name}")


if __name__ == "__main__":
    main()
