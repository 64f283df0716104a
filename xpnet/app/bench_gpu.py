"""``xpnet bench --gpu``: one float32 training step on a CUDA GPU, side by side.

xpnet on CuPy, PyTorch eager on CUDA, and the GEMM floor (the step's matrix products
alone, on CuPy) at the sizes the CUDA work is measured on. A GPU runs asynchronously, so
each measurement runs steps back to back and waits for the device before reading the
clock; the number is the median over rounds of at least ``--seconds`` each.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .. import backend
from ..errors import BackendUnavailableError, XpnetValueError
from .bench import XpnetStep
from .peers import GemmFloor, TorchStep

__all__ = ["GPU_SIZES", "format_gpu_table", "run_gpu", "time_on_device"]

#: name -> (layer widths, batch, BatchNorm), the sizes of the CUDA measurements.
GPU_SIZES = {
    "mnist-b128": ([784, 256, 128, 10], 128, False),
    "mnist-b4096": ([784, 256, 128, 10], 4096, False),
    "wide": ([784, 4096, 4096, 10], 4096, False),
    "wide+bn": ([784, 4096, 4096, 10], 4096, True),
    "big": ([4096] * 4, 4096, False),
}


def time_on_device(step, sync, *, seconds=1.0, rounds=5, warmup=5):
    """Median seconds per step of a step that runs asynchronously on a device.

    Parameters
    ----------
    step : callable
        One training step; it may return before the device has finished.
    sync : callable
        Waits until the device has finished (called before every clock reading).
    seconds : float
        The least time of all rounds together.
    rounds : int
        Each round runs steps back to back, then waits for the device once.
    warmup : int
        Untimed steps first (kernel compilation, allocator growth).

    Returns
    -------
    float
        The median over the rounds of the mean time per step.
    """
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    step()
    sync()
    once = max(time.perf_counter() - start, 1e-6)
    per_round = max(1, int(seconds / rounds / once))
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            step()
        sync()
        means.append((time.perf_counter() - start) / per_round)
    return statistics.median(means)


def run_gpu(sizes=None, *, seconds=1.0, xp="cupy", torch_device="cuda", table=None, log=None):
    """Time xpnet, PyTorch eager and the GEMM floor at every size.

    Parameters
    ----------
    sizes : list of str, optional
        Keys of ``table`` (default: all).
    seconds : float
        Timing per peer and size.
    xp : str
        The library xpnet and the GEMM floor run on (``"cupy"``; another for tests).
    torch_device : str or None
        PyTorch's device; None leaves PyTorch out.
    table : dict, optional
        Sizes to choose from (default :data:`GPU_SIZES`).
    log : callable, optional
        Called with a line per measurement.

    Returns
    -------
    list of dict
        ``{size, peer, us}`` rows; ``us`` is None for a peer that cannot run.

    Raises
    ------
    BackendUnavailableError
        ``xp`` is ``"cupy"`` and no CUDA device is visible.
    XpnetValueError
        An unknown size.
    """
    table = GPU_SIZES if table is None else table
    sizes = list(table) if sizes is None else sizes
    unknown = [s for s in sizes if s not in table]
    if unknown:
        raise XpnetValueError(f"unknown GPU sizes {unknown}; expected some of {list(table)}")
    if xp == "cupy" and "cupy" not in backend.available():
        raise BackendUnavailableError(
            "xpnet bench --gpu needs CuPy and a visible CUDA device: pip install "
            "'xpnet[cuda13]' (or '[cuda12]') on a machine with an NVIDIA GPU"
        )
    namespace = backend.get(xp)
    rows = []
    for size in sizes:
        widths, batch, batchnorm = table[size]
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], batch)
        ours = XpnetStep(widths, X, y, batchnorm=batchnorm, xp=xp)
        peers = [("xpnet", ours, ours.X)]
        if torch_device is not None:
            theirs = TorchStep(widths, X, y, batchnorm=batchnorm, device=torch_device)
            peers.append(("torch", theirs, theirs.X))
        floor = GemmFloor(widths, batch, namespace, device=backend.device(ours.X))
        peers.append(("gemm", floor, floor.acts[0]))
        for name, step, probe in peers:
            seconds_per_step = time_on_device(
                step, lambda probe=probe: backend.synchronize(probe), seconds=seconds
            )
            rows.append({"size": size, "peer": name, "us": seconds_per_step * 1e6})
            if log:
                log(f"  {size:<12} {name:<6} {seconds_per_step * 1e6:>10.1f} us")
    return rows


def format_gpu_table(rows, card):
    """GPU benchmark rows as a table, with the card named.

    Parameters
    ----------
    rows : list of dict
        As :func:`run_gpu` returns them.
    card : str
        The device's name, for the heading.

    Returns
    -------
    str
        Microseconds per step for each peer, and xpnet's ratio to PyTorch and to the
        GEMM floor.
    """
    by = {(r["size"], r["peer"]): r["us"] for r in rows}
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    lines = [
        f"µs per training step (median), float32, {card}",
        f"{'size':<14}{'xpnet':>10}{'pytorch':>10}{'gemm floor':>12}"
        f"{'xpnet/pytorch':>15}{'xpnet/floor':>13}",
    ]
    for size in sizes:
        ours, theirs, floor = (by.get((size, p)) for p in ("xpnet", "torch", "gemm"))

        def cell(v, width):
            return f"{v:>{width}.1f}" if v is not None else f"{'n/a':>{width}}"

        def ratio(a, b, width):
            return f"{a / b:>{width - 1}.2f}x" if a and b else f"{'n/a':>{width}}"

        lines.append(
            f"{size:<14}{cell(ours, 10)}{cell(theirs, 10)}{cell(floor, 12)}"
            f"{ratio(ours, theirs, 15)}{ratio(ours, floor, 13)}"
        )
    return "\n".join(lines)
