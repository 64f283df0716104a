"""``xpnet bench --gpu``: one float32 training step on a CUDA GPU, side by side.

xpnet on CuPy (with its fused kernels, replayed as a CUDA graph, and its Array API code
alone), PyTorch on CUDA (eager, and compiled with ``torch.compile(mode="reduce-overhead")``:
Inductor's fused kernels replayed as CUDA graphs), and the GEMM floor (the step's matrix
products alone, on CuPy: the faster of CuPy's ``@`` and xpnet's own cuBLAS calls) at the
sizes the CUDA work is measured on, with float32 or TF32 products. A GPU runs
asynchronously, so each measurement runs steps back to back and waits for the device
before reading the clock;
the peers take turns round by round (a drift of the machine touches all of them), and the
number is the median over the rounds, of at least ``--seconds`` per peer in all.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .. import backend
from ..errors import BackendUnavailableError, XpnetValueError
from .peers import GemmFloor, TorchStep, XpnetStep

__all__ = [
    "GPU_PEERS",
    "GPU_SIZES",
    "format_gpu_table",
    "run_gpu",
    "time_interleaved",
]

#: name -> (layer widths, batch, BatchNorm), the sizes of the CUDA measurements.
GPU_SIZES = {
    "mnist-b128": ([784, 256, 128, 10], 128, False),
    "mnist-b4096": ([784, 256, 128, 10], 4096, False),
    "wide": ([784, 4096, 4096, 10], 4096, False),
    "wide+bn": ([784, 4096, 4096, 10], 4096, True),
    "big": ([4096] * 4, 4096, False),
}


def time_interleaved(steps, *, seconds=1.0, rounds=5, warmup=5):
    """Median seconds per step of several asynchronous steps, their rounds interleaved.

    Each round runs every step's share in turn, so that a drift of the machine (clocks,
    other work on the host) touches all of them alike rather than the one timed last.

    Parameters
    ----------
    steps : dict
        ``name -> (step, sync)``: one training step, which may return before the device
        has finished, and a callable that waits for the device (called before every
        clock reading).
    seconds : float
        The least time of each step's rounds together.
    rounds : int
        Rounds; each runs a step back to back, then waits for the device once.
    warmup : int
        Untimed calls of each step first.

    Returns
    -------
    times : dict
        ``name -> seconds`` per step (the median over the rounds of the mean).
    errors : dict
        ``name -> "Type: message"`` for each step that raised; it is left out of the
        rounds that follow.
    """
    counts, errors = {}, {}
    for name, (step, sync) in steps.items():
        try:
            for _ in range(warmup):
                step()
            sync()
            start = time.perf_counter()
            step()
            sync()
        except Exception as err:  # one step that cannot run leaves the others' numbers
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        once = max(time.perf_counter() - start, 1e-6)
        counts[name] = max(1, int(seconds / rounds / once))
    means: dict[str, list] = {name: [] for name in counts}
    for _ in range(rounds):
        for name in list(means):
            step, sync = steps[name]
            try:
                start = time.perf_counter()
                for _ in range(counts[name]):
                    step()
                sync()
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {err}"
                del means[name]
                continue
            means[name].append((time.perf_counter() - start) / counts[name])
    return {name: statistics.median(v) for name, v in means.items()}, errors


#: The peers of each size, in the table's order.
GPU_PEERS = ("xpnet", "graph", "generic", "torch", "compile", "gemm")


def run_gpu(
    sizes=None,
    *,
    seconds=1.0,
    xp="cupy",
    torch_device="cuda",
    table=None,
    log=None,
    precisions=("float32",),
    compiled=True,
):
    """Time xpnet, PyTorch (eager and compiled) and the GEMM floor at every size.

    The peers: ``xpnet`` (a step as ``fit`` runs it, with the library's fused kernels),
    ``graph`` (the same step replayed as a CUDA graph), ``generic`` (the Array API code
    alone, fused kernels off), ``torch`` (PyTorch eager), ``compile`` (PyTorch's step
    compiled with ``torch.compile(mode="reduce-overhead")``; its compilation, in the
    warm-up calls, is not timed) and ``gemm`` (the step's matrix products alone).

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
    precisions : tuple of str
        ``"float32"`` and/or ``"tf32"`` (float32 arrays, products on TF32 tensor cores
        for every peer: :func:`xpnet.backend.set_tf32`).
    compiled : bool
        Time PyTorch's compiled step too (with ``torch_device``); its compilation takes
        some seconds per size and precision.

    Returns
    -------
    list of dict
        ``{size, precision, peer, us}`` rows; ``us`` is None for a peer that cannot run
        (no graphs or no fused kernels off CuPy, no PyTorch) or was not asked for.

    Raises
    ------
    BackendUnavailableError
        ``xp`` is ``"cupy"`` and no CUDA device is visible.
    XpnetValueError
        An unknown size or precision.
    """
    table = GPU_SIZES if table is None else table
    sizes = list(table) if sizes is None else sizes
    unknown = [s for s in sizes if s not in table]
    unknown += [p for p in precisions if p not in ("float32", "tf32")]
    if unknown:
        raise XpnetValueError(
            f"unknown GPU sizes or precisions {unknown}; expected some of {list(table)} "
            "and float32, tf32"
        )
    if xp == "cupy" and "cupy" not in backend.available():
        raise BackendUnavailableError(
            "xpnet bench --gpu needs CuPy and a visible CUDA device: pip install "
            "'xpnet[cuda13]' (or '[cuda12]') on a machine with an NVIDIA GPU"
        )
    namespace = backend.get(xp)
    torch_ns = backend.get("torch") if torch_device is not None else None
    rows = []
    for precision in precisions:
        tf32 = precision == "tf32"
        before = backend.set_tf32(namespace, tf32)
        torch_before = backend.set_tf32(torch_ns, tf32) if torch_ns is not None else False
        try:
            for size in sizes:
                timed = _time_size(
                    size, table[size], namespace, xp, torch_device, seconds, compiled
                )
                for row in timed:
                    row["precision"] = precision
                    if log and row["us"] is not None:
                        log(f"  {size:<12} {precision:<8} {row['peer']:<8} {row['us']:>10.1f} us")
                rows += timed
        finally:
            backend.set_tf32(namespace, before)
            if torch_ns is not None:
                backend.set_tf32(torch_ns, torch_before)
    return rows


def _time_size(size, spec, namespace, xp, torch_device, seconds, compiled):
    widths, batch, batchnorm = spec
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch)
    fused = backend.fused(namespace) is not None
    ours = XpnetStep(widths, X, y, batchnorm=batchnorm, xp=xp)
    peers: list[tuple[str, object, object]] = [("xpnet", ours, ours.X)]
    runner = backend.cuda_graph_step(ours.run, ours.model.layers[0].W) if fused else None
    if runner is not None:
        peers.append(("graph", lambda: runner(ours.X, ours.y, key=size), ours.X))
    if fused:  # the readable step on the same library: make_step chooses it without kernels
        with backend.use_fused(False):
            plain = XpnetStep(widths, X, y, batchnorm=batchnorm, xp=xp)
        peers.append(("generic", plain, plain.X))
    if torch_device is not None:
        theirs = TorchStep(widths, X, y, batchnorm=batchnorm, device=torch_device)
        peers.append(("torch", theirs, theirs.X))
    if torch_device is not None and compiled:  # compiles lazily: a failure is its row's error
        fast = TorchStep(widths, X, y, batchnorm=batchnorm, device=torch_device, compile=True)
        peers.append(("compile", fast, fast.X))
    device = backend.device(ours.X)
    floor = GemmFloor(widths, batch, namespace, device=device)
    peers.append(("gemm", floor, floor.acts[0]))
    if fused:  # the floor is the faster of the library's `@` and xpnet's own cuBLAS calls
        own = GemmFloor(
            widths, batch, namespace, device=device, matmul=backend.fused(namespace).matmul
        )
        peers.append(("gemm-own", own, own.acts[0]))
    syncs = {name: (lambda probe=probe: backend.synchronize(probe)) for name, _, probe in peers}
    timed, errors = time_interleaved(
        {name: (step, syncs[name]) for name, step, _ in peers}, seconds=seconds
    )
    for name in ("xpnet", "gemm"):
        if name in errors:
            raise RuntimeError(f"xpnet bench --gpu: {size} {name}: {errors[name]}")
    timed = {name: 1e6 * t for name, t in timed.items()}
    if "gemm-own" in timed:
        timed["gemm"] = min(timed["gemm"], timed.pop("gemm-own"))
    errors.pop("gemm-own", None)
    return [
        {"size": size, "peer": name, "us": timed.get(name), "error": errors.get(name)}
        for name in GPU_PEERS
    ]


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
        Microseconds per step for each peer, and the ratios of xpnet (eager and as a
        graph) to PyTorch eager and compiled, and of xpnet to the GEMM floor.
    """
    by = {(r["size"], r.get("precision", "float32"), r["peer"]): r["us"] for r in rows}
    keys = list(dict.fromkeys((r["size"], r.get("precision", "float32")) for r in rows))
    head = ("xpnet", "graph", "generic", "pytorch", "pt compile", "gemm floor")
    ratios = ("xpnet/pt", "graph/pt", "xpnet/ptc", "graph/ptc", "xpnet/floor")
    lines = [
        f"µs per training step (median), float32 arrays, {card}",
        f"{'size':<13}{'products':<10}" + "".join(f"{h:>11}" for h in head)
        + "".join(f"{h:>12}" for h in ratios),
    ]  # fmt: skip

    for size, precision in keys:
        ours, graph, generic, theirs, compiled, floor = (
            by.get((size, precision, p)) for p in GPU_PEERS
        )
        lines.append(
            f"{size:<13}{precision:<10}"
            + "".join(_cell(v, 11) for v in (ours, graph, generic, theirs, compiled, floor))
            + _ratio(ours, theirs, 12) + _ratio(graph, theirs, 12)
            + _ratio(ours, compiled, 12) + _ratio(graph, compiled, 12)
            + _ratio(ours, floor, 12)
        )  # fmt: skip
    failed = [r for r in rows if r.get("error")]
    lines += [f"{r['size']} {r.get('precision', '')} {r['peer']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def _cell(v, width):
    return f"{v:>{width}.1f}" if v is not None else f"{'n/a':>{width}}"


def _ratio(a, b, width):
    return f"{a / b:>{width - 1}.2f}x" if a and b else f"{'n/a':>{width}}"
