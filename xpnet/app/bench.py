"""``xpnet bench``: one training step of xpnet against its peers, side by side.

A step is forward, softmax cross-entropy, backward and SGD with momentum 0.9 on one
fixed batch. Each implementation is timed in this one process: a warm-up, then the
median over at least ``--seconds`` of back-to-back steps, taken in four rounds in which
the implementations alternate. Ratios compare numbers of the same run only.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

from .. import backend
from ..errors import XpnetValueError
from ..models import MLP
from ..nn import CrossEntropyLoss
from ..optim import SGD
from .peers import JaxStep, NumpyStep, SklearnStep, TorchStep, XpnetStep

#: The command's description in ``xpnet bench --help`` (plain text: argparse prints it as is).
DESCRIPTION = (
    "One training step of xpnet against its peers, side by side. A step is forward, "
    "softmax cross-entropy, backward and SGD with momentum 0.9 on one fixed batch. Each "
    "implementation is timed in this one process: a warm-up, then the median over at least "
    "--seconds of back-to-back steps, taken in four rounds in which the implementations "
    "alternate. Ratios compare numbers of the same run only."
)

__all__ = ["SIZES", "main", "run", "time_step"]

#: name -> (layer sizes, batch, batchnorm)
SIZES = {
    "tiny": ([2, 4, 8, 8, 4, 2], 4, False),
    "mnist": ([784, 256, 128, 10], 128, False),
    "mnist+bn": ([784, 256, 128, 10], 128, True),
    "wide": ([784, 1024, 1024, 10], 512, False),
}


def time_step(step, *, seconds=2.0, warmup=10):
    """Median seconds per call of a step.

    Parameters
    ----------
    step : callable
        One training step.
    seconds : float
        Time at least this long (and at least 5 calls).
    warmup : int
        Untimed calls first.

    Returns
    -------
    float
        The median over the timed calls.
    """
    for _ in range(warmup):
        step()
    return statistics.median(_samples(step, seconds))


def _samples(step, seconds, at_least=5):
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < at_least:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def peak_memory(step, calls=3):
    """Peak bytes that NumPy allocated (traced by tracemalloc) over a few steps.

    Parameters
    ----------
    step : callable
        One training step.
    calls : int
        How many steps to trace.

    Returns
    -------
    int
        Bytes.
    """
    tracemalloc.start()
    try:
        for _ in range(calls):
            step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: Environment variables that make OpenBLAS use another kernel than it would choose.
_OPENBLAS_FORCING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _blas_pools():
    """The BLAS thread pools threadpoolctl finds (none without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [p for p in threadpool_info() if p["user_api"] == "blas"]


def _blas():
    """NumPy's BLAS: library, version, kernel and threads, and any variable forcing it."""
    pools = _blas_pools()
    if pools:
        p = pools[0]
        name = " ".join(w for w in (p["internal_api"], p.get("version")) if w)
        kernel = f", {p['architecture']} kernel" if p.get("architecture") else ""
        text = f"BLAS {name}{kernel}, {p['num_threads']} threads"
    else:
        text = f"BLAS threads {_threads()}"
    forced = [f"{k}={os.environ[k]}" for k in _OPENBLAS_FORCING if k in os.environ]
    return text + (f" ({', '.join(forced)} set)" if forced else "")


def _threads():
    counts = [p["num_threads"] for p in _blas_pools()]
    return max(counts) if counts else (os.cpu_count() or 1)


PEERS = {
    "xpnet": XpnetStep,
    "numpy": NumpyStep,
    "torch": TorchStep,
    "sklearn": SklearnStep,
    "xpnet-jax": functools.partial(XpnetStep, xp="jax"),
    "xpnet-jit": functools.partial(XpnetStep, xp="jax", compile=True),
    "jax": JaxStep,
}
LABELS = {
    "xpnet": "xpnet",
    "numpy": "numpy hand",
    "torch": "pytorch",
    "sklearn": "sklearn",
    "xpnet-jax": "xpnet jax",
    "xpnet-jit": "xpnet jit",
    "jax": "jax.grad",
}
SHORT = {**LABELS, "numpy": "numpy", "xpnet-jax": "jax-eager", "xpnet-jit": "jit"}
#: The ratio columns: xpnet on NumPy, and its compiled JAX step, to the peers beside them.
RATIOS = {
    "xpnet": ("numpy", "torch", "sklearn"),
    "xpnet-jit": ("jax", "xpnet", "numpy", "torch"),
}


def run(sizes=None, peers=None, *, seconds=2.0, seed=0, rounds=4, log=None):
    """Time every peer at every size.

    At each size the peers take turns: ``rounds`` rounds of ``seconds / rounds`` each, so
    that a slow drift of the machine (another process, the clock) hits every peer alike.

    Parameters
    ----------
    sizes : list of str, optional
        Keys of :data:`SIZES` (default: all).
    peers : list of str, optional
        Keys of ``PEERS`` (default: all).
    seconds : float
        Timing window per peer and size.
    seed : int
        Seeds the batch and the parameters.
    rounds : int
        Turns per peer.
    log : callable, optional
        Called with a line per measurement.

    Returns
    -------
    list of dict
        ``{size, peer, us, peak_mib}`` rows; ``us`` is the median over all of a peer's
        samples.
    """
    sizes = list(SIZES) if sizes is None else sizes
    peers = list(PEERS) if peers is None else peers
    threads = _threads()
    rows = []
    for size in sizes:
        layer_sizes, batch, batchnorm = SIZES[size]
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((batch, layer_sizes[0])).astype(np.float32)
        y = rng.integers(0, layer_sizes[-1], batch)
        steps, samples = {}, {}
        for peer in peers:
            kwargs = {"batchnorm": batchnorm, "seed": seed}
            if peer == "torch":
                kwargs["threads"] = threads
            try:
                steps[peer] = PEERS[peer](layer_sizes, X, y, **kwargs)
            except (ImportError, ValueError) as err:
                rows.append({"size": size, "peer": peer, "us": None, "note": str(err)})
                continue
            for _ in range(10):  # warm-up
                steps[peer]()
            samples[peer] = []
        for _ in range(rounds):
            for peer, step in steps.items():
                samples[peer] += _samples(step, seconds / rounds, at_least=2)
        for peer, step in steps.items():
            us = statistics.median(samples[peer]) * 1e6
            row = {"size": size, "peer": peer, "us": us}
            if size == "wide" and peer in ("xpnet", "numpy", "sklearn"):
                row["peak_mib"] = peak_memory(step) / 2**20
            rows.append(row)
            if log:
                log(f"  {size:<9} {peer:<8} {us:>10.1f} us")
    order = {p: i for i, p in enumerate(peers)}
    return sorted(rows, key=lambda r: (sizes.index(r["size"]), order[r["peer"]]))


def format_table(rows):
    """Benchmark rows as the table in BENCHMARKS.md (µs per step and ratios to xpnet).

    Parameters
    ----------
    rows : list of dict
        As :func:`run` returns them.

    Returns
    -------
    str
        The table.
    """
    by = {(r["size"], r["peer"]): r for r in rows}
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows))
    head = f"{'size':<10}" + "".join(f"{LABELS[p]:>12}" for p in peers)
    ratios = [(mine, p) for mine, others in RATIOS.items() if mine in peers for p in others]
    ratios = [(mine, p) for mine, p in ratios if p in peers]
    head += "".join(f"{SHORT[mine] + '/' + SHORT[p]:>18}" for mine, p in ratios)
    lines = ["µs per training step (median), float32", head]
    for size in sizes:
        cells = []
        for p in peers:
            us = by.get((size, p), {}).get("us")
            cells.append(f"{us:>12.1f}" if us is not None else f"{'n/a':>12}")
        for mine, p in ratios:
            ours, other = by.get((size, mine), {}).get("us"), by.get((size, p), {}).get("us")
            ratio = f"{ours / other:.2f}x" if ours and other else "n/a"
            cells.append(f"{ratio:>18}")
        lines.append(f"{size:<10}" + "".join(cells))
    peaks = [(LABELS[r["peer"]], r["peak_mib"]) for r in rows if "peak_mib" in r]
    if peaks:
        lines.append(
            "peak NumPy memory in the wide run (tracemalloc): "
            + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in peaks)
        )
    return "\n".join(lines)


def train_comparison(
    *, repeats=3, epochs=40, batch_size=32, lr=0.05, momentum=0.9, hidden=(128, 64)
):
    """Training-loop seconds of ``xpnet train``'s default run against scikit-learn.

    The default run (with and without BatchNorm) and scikit-learn's MLPClassifier with the
    same architecture, epochs and batch size, on the bundled digits; the median of
    ``repeats`` runs, with test accuracies.

    Parameters
    ----------
    repeats : int
        Runs per row.
    epochs, batch_size : int
        As in ``xpnet train``.
    lr, momentum : float
        As in ``xpnet train``.
    hidden : tuple of int
        Hidden widths.

    Returns
    -------
    list of tuple
        ``(label, seconds, accuracy)``; None for a peer that is not installed.
    """
    from ..data import load_digits
    from ..train import evaluate, fit
    from .peers import sklearn_fit

    data = load_digits(seed=0)
    # every peer gets the pixels in [0, 1], as xpnet train's model sees them
    data.X_train, data.X_test = data.X_train / data.input_scale, data.X_test / data.input_scale
    sizes = [data.n_features, *hidden, data.n_classes]
    rows = []
    for label, batchnorm in (("xpnet (default, BatchNorm)", True), ("xpnet --no-batchnorm", False)):
        times, accuracy = [], None
        for _ in range(repeats):
            model = MLP(sizes, batchnorm=batchnorm, seed=0)
            loss = CrossEntropyLoss()
            opt = SGD(model, lr=lr, momentum=momentum)
            start = time.perf_counter()
            fit(
                model,
                loss,
                opt,
                (data.X_train, data.y_train),
                epochs=epochs,
                batch_size=batch_size,
                seed=0,
                progress=False,
            )
            times.append(time.perf_counter() - start)
            accuracy = evaluate(model, loss, data.X_test, data.y_test)[1]
        rows.append((label, statistics.median(times), accuracy))
    try:
        times, accuracy = [], None
        for _ in range(repeats):
            seconds, predict = sklearn_fit(
                data.X_train.astype(np.float32),
                data.y_train,
                hidden=hidden,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                momentum=momentum,
            )
            times.append(seconds)
            accuracy = float(np.mean(predict(data.X_test.astype(np.float32)) == data.y_test))
        rows.append(("scikit-learn MLPClassifier", statistics.median(times), accuracy))
    except ImportError:
        rows.append(("scikit-learn MLPClassifier", None, None))
    return rows


def format_train(rows, *, epochs=40, batch_size=32):
    """The rows of :func:`train_comparison` as a table.

    Parameters
    ----------
    rows : list of tuple
        As :func:`train_comparison` returns them.
    epochs, batch_size : int
        For the heading.

    Returns
    -------
    str
        The table.
    """
    lines = [
        f"training loop on the bundled digits: 64-128-64-10, {epochs} epochs, batch "
        f"{batch_size}, SGD momentum 0.9 (median of 3 runs)",
        f"{'':<30}{'seconds':>10}{'test accuracy':>16}",
    ]
    for label, seconds, accuracy in rows:
        if seconds is None:
            lines.append(f"{label:<30}{'n/a':>10}")
        else:
            lines.append(f"{label:<30}{seconds:>10.2f}{accuracy:>16.4f}")
    return "\n".join(lines)


def describe_machine():
    """One line that names the machine and the library versions the timings depend on.

    Returns
    -------
    str
        Processor, cores, Python, NumPy, the BLAS kernel NumPy runs and its threads (and the
        environment variables that force OpenBLAS's kernel, where set), PyTorch, JAX and
        scikit-learn versions.
    """
    import numpy

    parts = [
        f"{platform.processor() or platform.machine()}",
        f"{os.cpu_count()} cores",
        f"python {platform.python_version()}",
        f"numpy {numpy.__version__}",
        _blas(),
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    try:
        import jax

        parts.append(f"jax {jax.__version__}")
    except ImportError:
        pass
    try:
        import sklearn

        parts.append(f"scikit-learn {sklearn.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def _seconds(text):
    """``--seconds``: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0.0 < value < float("inf"):  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds above 0, got {text}")
    return value


def build_parser(parser=None):
    """The options of ``xpnet bench``.

    Parameters
    ----------
    parser : argparse.ArgumentParser, optional
        Add them to this parser (the CLI's subcommand) instead of a new one.

    Returns
    -------
    argparse.ArgumentParser
        The parser.
    """
    parser = parser or argparse.ArgumentParser(prog="xpnet bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default=None,
        help=f"comma-separated, from {', '.join(SIZES)} (with --gpu: the GPU sizes; default: all)",
    )
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated, from {', '.join(PEERS)}"
    )
    parser.add_argument(
        "--seconds", type=_seconds, default=2.0, help="timing window per measurement (default 2)"
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="also time the default training run against scikit-learn",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="time on a CUDA GPU instead: xpnet on CuPy (fused kernels, as a CUDA graph, "
        "and the array code alone), PyTorch on CUDA (eager, and torch.compile with "
        "mode='reduce-overhead') and the GEMM floor, at mnist-b128, mnist-b4096, wide, "
        "wide+bn and big (float32)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="with --gpu: time every size again with TF32 products, every peer alike",
    )
    return parser


def main(args=None):
    """Run ``xpnet bench`` and print its tables.

    Parameters
    ----------
    args : argparse.Namespace or list of str, optional
        Parsed options, or the arguments to parse.

    Returns
    -------
    list of dict
        The rows of :func:`run`.

    Raises
    ------
    XpnetValueError
        An unknown size or peer.
    """
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if args.gpu:
        return _main_gpu(args)
    sizes = [s for s in (args.sizes or ",".join(SIZES)).split(",") if s]
    peers = [p for p in args.peers.split(",") if p]
    unknown = [s for s in sizes if s not in SIZES] + [p for p in peers if p not in PEERS]
    if unknown:
        raise XpnetValueError(f"unknown sizes or peers {unknown}")
    print(describe_machine(), flush=True)
    rows = run(sizes, peers, seconds=args.seconds)
    print(format_table(rows), flush=True)
    if args.train:
        print()
        print(format_train(train_comparison()))
    return rows


def _main_gpu(args):
    from .bench_gpu import format_gpu_table, run_gpu

    sizes = [s for s in args.sizes.split(",") if s] if args.sizes else None
    precisions = ("float32", "tf32") if args.tf32 else ("float32",)
    rows = run_gpu(sizes, seconds=args.seconds, torch_device=_torch_cuda(), precisions=precisions)
    card = next((d for d in backend.devices(backend.get("cupy")) if "(" in d), "a CUDA GPU")
    print(describe_machine(), flush=True)
    print(format_gpu_table(rows, card), flush=True)
    return rows


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None
