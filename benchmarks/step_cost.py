"""What one training step must cost, before any tuning: FLOPs, bytes and kernels per size.

For each size of ``xpnet bench --gpu`` (float32, SGD with momentum, cross-entropy), counted,
not measured:

* GEMM FLOPs: three matrix products per Linear layer (forward, ``dLdW``, ``dLdA``; the
  first layer skips ``dLdA``), ``2·N·in·out`` each.
* Bytes: the least memory traffic of a step whose elementwise work is fused into as few
  passes as the math allows (bias and activation in one pass, BatchNorm in two forward and
  two backward, softmax cross-entropy in one, the optimizer in one pass over the flat
  parameter, gradient and momentum buffers), plus what the GEMMs read and write.
* Kernels: the array operations one step of xpnet's generic Array API path launches today,
  counted by PyTorch's dispatcher on the same code path (views and shape changes, which
  launch nothing, left out), by phase. Each is at least one kernel launch on a GPU.

From these, the floors of one step on a card's datasheet peaks (H100 SXM: 67 TFLOP/s
float32, 495 TFLOP/s TF32 dense, 3.35 TB/s; H200: the same compute, 4.8 TB/s): compute
``FLOPs / peak``, memory ``bytes / bandwidth``. Datasheet peaks are upper bounds that
cuBLAS reaches only in part, and at small sizes a step's time is launches, not either
floor, which is why the kernel count matters there; ``xpnet bench --gpu`` measures.

    python benchmarks/step_cost.py
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import numpy as np

from xpnet.app.bench_gpu import GPU_SIZES

PEAKS = {  # datasheet: (float32 FLOP/s, TF32 dense FLOP/s, bytes/s)
    "H100 SXM": (67e12, 495e12, 3.35e12),
    "H200": (67e12, 495e12, 4.8e12),
}
F32 = 4


def gemm_flops(sizes, n):
    """FLOPs of the matrix products of one step."""
    total = 0
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        products = 2 if i == 0 else 3  # the first layer needs no dLdA
        total += products * 2 * n * a * b
    return total


def fused_bytes(sizes, n, batchnorm):
    """Least memory traffic of one fused step, in bytes (float32; labels int64)."""
    layers = list(itertools.pairwise(sizes))
    params = sum(a * b + b for a, b in layers) + (
        sum(2 * b for _, b in layers[:-1]) if batchnorm else 0
    )
    total = n * sizes[0] * F32 + n * 8  # the batch and its labels, read once
    for i, (a, b) in enumerate(layers):
        last = i == len(layers) - 1
        act = n * b * F32
        # forward: the GEMM reads its input and W, writes Z; bias (+BatchNorm) +
        # activation read Z and write the layer's output
        total += n * a * F32 + a * b * F32 + act
        if batchnorm and not last:
            total += act + 2 * act  # statistics pass (read Z); normalise (read Z, write)
        total += 2 * act  # bias and activation: read, write
        # backward: activation backward reads dA and the output, writes dZ (BatchNorm:
        # a reduction pass and an elementwise pass more); the dLdW GEMM reads dZ and the
        # input and writes dW; the dLdA GEMM (not for the first layer) reads dZ and W and
        # writes dA; dLdb is a column sum of dZ
        total += 3 * act
        if batchnorm and not last:
            total += 2 * act + 3 * act
        total += act + n * a * F32 + a * b * F32 + act
        if i > 0:
            total += act + a * b * F32 + n * a * F32
    total += 2 * n * sizes[-1] * F32  # softmax cross-entropy: logits in, gradient out
    total += 5 * params * F32  # optimizer: read parameter, gradient, momentum; write two
    return total, params


def count_kernels(sizes, n, batchnorm):
    """Array operations of one generic step on PyTorch (CPU), by phase."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from xpnet import backend
    from xpnet.models import MLP
    from xpnet.nn import CrossEntropyLoss
    from xpnet.optim import SGD

    no_work = {
        "view", "_unsafe_view", "t", "transpose", "permute", "expand", "slice", "select",
        "as_strided", "alias", "unsqueeze", "squeeze", "detach", "reshape", "lift_fresh",
        "_to_copy", "_reshape_alias", "unbind", "split", "split_with_sizes",
    }  # fmt: skip
    phase = {"name": "other"}
    counts: Counter = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in no_work and not name.startswith("_local_scalar"):
                counts[phase["name"]] += 1
            return func(*args, **(kwargs or {}))

    xp = backend.get("torch")
    rng = np.random.default_rng(0)  # the widths as they are (the optimizer's path depends
    # on the parameter count), 64 rows (the count does not depend on the batch)
    X = xp.asarray(rng.standard_normal((64, sizes[0])).astype(np.float32))
    y = xp.asarray(rng.integers(0, sizes[-1], X.shape[0]))
    model = MLP(sizes, batchnorm=batchnorm, xp=xp)
    loss, opt = CrossEntropyLoss(), SGD(model, lr=0.01, momentum=0.9)

    def step():
        phase["name"] = "forward"
        out = model.forward(X)
        phase["name"] = "loss"
        loss.forward_unchecked(out, y, xp)
        grad = loss.backward()
        phase["name"] = "backward"
        model.backward(grad, input_grad=False)
        phase["name"] = "optimizer"
        opt.step()

    step()  # the optimizer's first step sets up its buffers
    counts.clear()
    with Count():
        step()
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel count (torch)")
    args = parser.parse_args(argv)
    print("per float32 training step (SGD with momentum, cross-entropy)")
    head = (
        f"{'size':<12} {'params':>9} {'GEMM GFLOP':>10} {'fused MB':>9} {'FLOP/byte':>9} "
        f"{'kernels: fwd loss bwd opt = all':>32}"
    )
    print(head)
    rows = []
    for name, (sizes, n, batchnorm) in GPU_SIZES.items():
        flops = gemm_flops(sizes, n)
        nbytes, params = fused_bytes(sizes, n, batchnorm)
        kernels = "" if args.no_kernels else count_kernels(sizes, n, batchnorm)
        k = (
            ""
            if not kernels
            else f"{kernels['forward']:>4} {kernels['loss']:>4} {kernels['backward']:>4} "
            f"{kernels['optimizer']:>4} = {sum(kernels.values()):>3}"
        )
        print(
            f"{name:<12} {params:>9,} {flops / 1e9:>10.2f} {nbytes / 1e6:>9.1f} "
            f"{flops / nbytes:>9.0f} {k:>32}"
        )
        rows.append((name, flops, nbytes))
    print()
    print("floors in µs from datasheet peaks: compute float32 / TF32, memory (fused bytes)")
    for card, (fp32, tf32, bandwidth) in PEAKS.items():
        cells = "  ".join(
            f"{name} {1e6 * f / fp32:.0f}/{1e6 * f / tf32:.0f}, {1e6 * b / bandwidth:.0f}"
            for name, f, b in rows
        )
        print(f"{card}: {cells}")


if __name__ == "__main__":
    main()
