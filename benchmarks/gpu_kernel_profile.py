"""Where the GPU time of one training step goes, kernel by kernel: xpnet on CuPy beside
PyTorch eager, at the sizes where xpnet is furthest from its targets.

Both run in one process and PyTorch's profiler (CUPTI, which records every kernel of the
process, CuPy's too) times their kernels; the table lists each kernel's GPU time per step,
largest first, and the GPU's busy time per step in all. For the sizes named by ``--host``
it also profiles the host's time of xpnet's eager steps (cProfile), where an eager step is
launches rather than GPU work.

    python benchmarks/gpu_kernel_profile.py       # wide+bn, wide, big, mnist-b128; float32, TF32
    python benchmarks/gpu_kernel_profile.py --sizes wide,big --steps 10
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

import numpy as np

from xpnet import backend
from xpnet.app.bench_gpu import GPU_SIZES
from xpnet.app.peers import TorchStep, XpnetStep


def _short(name, width=58):
    name = re.sub(r"\s+", " ", name)
    name = re.sub(r"<.*>", "<…>", name)  # template arguments
    return name if len(name) <= width else name[: width - 1] + "…"


def kernel_times(step, sync, steps):
    """{kernel name: (calls, µs)} per step, and the µs per step from the first kernel's
    start to the last one's end and of those the GPU spent idle (between kernels)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    table = defaultdict(lambda: [0, 0.0])
    spans = []
    for event in prof.events():
        device_type = str(getattr(event, "device_type", ""))
        if "CUDA" not in device_type:
            continue
        us = event.time_range.elapsed_us()  # a kernel's (or copy's) time on the device
        entry = table[event.name]
        entry[0] += 1
        entry[1] += us
        spans.append((event.time_range.start, event.time_range.end))
    idle, reached = 0.0, None
    for start, end in sorted(spans):
        if reached is not None and start > reached:
            idle += start - reached
        reached = end if reached is None else max(reached, end)
    span = (reached - min(s for s, _ in spans)) if spans else 0.0
    times = {name: (calls / steps, us / steps) for name, (calls, us) in table.items()}
    return times, span / steps, idle / steps


def host_profile(step, sync, steps=300, top=15):
    """Where the host's time of eager steps goes (cProfile, by own time)."""
    import cProfile
    import io
    import pstats

    for _ in range(10):
        step()
    sync()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    sync()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def print_side_by_side(label, ours, theirs, top):
    print(f"\n{label}: GPU µs per step by kernel (calls per step)")
    for who, (table, span, idle) in (("xpnet", ours), ("pytorch", theirs)):
        busy = sum(us for _, us in table.values())
        print(
            f"  {who}: {busy:9.1f} µs busy, {sum(c for c, _ in table.values()):.0f} kernels; "
            f"{span:.1f} µs from first start to last end, {idle:.1f} of them idle"
        )
        for name, (calls, us) in sorted(table.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"    {us:9.1f}  {calls:4.0f}x  {_short(name)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="wide+bn,wide,big,mnist-b128")
    parser.add_argument("--precisions", default="float32,tf32")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument(
        "--host", default="mnist-b128", help="sizes whose eager host time to profile too"
    )
    args = parser.parse_args(argv)
    if "cupy" not in backend.available():
        sys.exit("gpu_kernel_profile: needs CuPy and a CUDA device")
    import cupy
    import torch

    xp = backend.get("cupy")

    def sync():
        cupy.cuda.get_current_stream().synchronize()
        torch.cuda.synchronize()

    for size in args.sizes.split(","):
        widths, batch, bn = GPU_SIZES[size]
        rng = np.random.default_rng(0)
        X = rng.standard_normal((batch, widths[0])).astype(np.float32)
        y = rng.integers(0, widths[-1], batch)
        for precision in args.precisions.split(","):
            tf32 = precision == "tf32"
            before = (backend.set_tf32(xp, tf32), backend.set_tf32(torch, tf32))
            try:
                ours = XpnetStep(widths, X, y, batchnorm=bn, xp="cupy")
                theirs = TorchStep(widths, X, y, batchnorm=bn, device="cuda")
                a = kernel_times(ours, sync, args.steps)
                b = kernel_times(theirs, sync, args.steps)
                if size in args.host.split(",") and precision == "float32":
                    print(f"\n{size} {precision}: host time of xpnet's eager steps")
                    print(host_profile(ours, sync))
                del ours, theirs
            finally:
                backend.set_tf32(xp, before[0])
                backend.set_tf32(torch, before[1])
            if not a[0]:
                print(f"{size} {precision}: the profiler saw no CuPy kernels")
            print_side_by_side(f"{size} {precision}", a, b, args.top)
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
