"""Where the time of a CUDA-graph training step goes (CuPy): the graph's nodes by kind, the
GPU's time per replay (CUDA events around back-to-back replays) and the host's time per
step as ``fit`` calls it (batch copied into the graph's inputs, one launch).

    python benchmarks/gpu_graph_profile.py      # mnist [784,256,128,10], batch 128 and 4096
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter

import numpy as np

from xpnet import backend
from xpnet.app.peers import XpnetStep

KINDS = [  # (label, pattern of a kernel node's name in the graph's DOT text)
    ("matrix products (cuBLAS)", r"gemm|xmma|sm\d+_|cutlass|ampere|hopper"),
    ("xpnet fused kernels", r"bias_activation|activation_backward|batchnorm|cross_entropy"
     r"|argmax_hits|sgd_update|column_partials|column_totals"),
    ("CuPy kernels (sums, concat, copies)", r"cupy|cub|reduce|concat|copy|DeviceReduce"),
]  # fmt: skip


def profile(widths, batch, replays=200):
    import cupy

    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch)
    step = XpnetStep(widths, X, y, xp="cupy")
    run = backend.cuda_graph_step(step.run, step.model.layers[0].W)
    run(step.X, step.y, key=0)  # eager
    run(step.X, step.y, key=0)  # captured and launched
    graph = next(iter(run._graphs.values()))[0]
    dot = graph.debug_dot_str()
    if isinstance(dot, bytes):
        dot = dot.decode(errors="replace")
    labels = re.findall(r'label="(.*?)"\s*\]', dot, re.S)
    kinds: Counter = Counter()
    other: Counter = Counter()
    for label in labels:
        if "KERNEL" not in label.upper():
            other[re.sub(r"[^A-Z_].*", "", label.lstrip("{").upper(), flags=re.S) or "?"] += 1
            continue
        kind = next((k for k, p in KINDS if re.search(p, label, re.I)), "other kernels")
        kinds[kind] += 1
        if kind == "other kernels" and kinds[kind] == 1:  # one, to read what the DOT holds
            print("  unclassified kernel node:", " ".join(label.split())[:300])
    stream = cupy.cuda.get_current_stream()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    stream.synchronize()
    start.record(stream)
    for _ in range(replays):
        graph.launch(stream=stream)
    stop.record(stream)
    stop.synchronize()
    gpu_us = cupy.cuda.get_elapsed_time(start, stop) * 1e3 / replays
    stream.synchronize()
    t0 = time.perf_counter()
    for _ in range(replays):
        run(step.X, step.y, key=0)
    stream.synchronize()
    host_us = (time.perf_counter() - t0) * 1e6 / replays
    return kinds, other, gpu_us, host_us


def main():
    if "cupy" not in backend.available():
        sys.exit("gpu_graph_profile: needs CuPy and a CUDA device")
    for batch in (128, 4096):
        kinds, other, gpu_us, host_us = profile([784, 256, 128, 10], batch)
        total = sum(kinds.values())
        print(f"mnist b{batch}: {total} kernel nodes; other nodes: {dict(other)}")
        for label, count in kinds.most_common():
            print(f"  {count:>3}  {label}")
        print(f"  GPU time per replay {gpu_us:.1f} µs (back to back); per step as fit calls it "
              f"(copy the batch in, launch) {host_us:.1f} µs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
