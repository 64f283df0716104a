"""What one training step must cost, before any tuning: FLOPs, bytes and kernels per size.

For each size of ``xpnet bench --gpu`` (float32, SGD with momentum, cross-entropy), counted,
not measured:

* GEMM FLOPs: three matrix products per Linear layer (forward, ``dLdW``, ``dLdA``; the
  first layer skips ``dLdA``), ``2·N·in·out`` each.
* Bytes: the least memory traffic of a step whose elementwise work is fused as xpnet's
  CuPy kernels fuse it (bias and activation in one pass, the activation's backward with
  the bias gradient in one, BatchNorm in two forward and two backward with the
  activation's backward inside, softmax cross-entropy in one, the optimizer in one pass
  over the flat parameter, gradient and momentum buffers), plus what the GEMMs read and
  write.
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
    """Least memory traffic of one fused step, in bytes (float32; labels int64).

    Returns
    -------
    gemm, passes : int
        What the matrix products read and write, and what the passes around them do
        (bias and activation, BatchNorm, column sums, the loss, the optimizer, the batch).
    params : int
        Trainable values.
    """
    layers = list(itertools.pairwise(sizes))
    params = sum(a * b + b for a, b in layers) + (
        sum(2 * b for _, b in layers[:-1]) if batchnorm else 0
    )
    gemm, passes = 0, n * sizes[0] * F32 + n * 8  # the batch and its labels, read once
    for i, (a, b) in enumerate(layers):
        last = i == len(layers) - 1
        act = n * b * F32
        # forward: the GEMM reads its input and W, writes Z; bias and activation read Z
        # and write the layer's output; with BatchNorm, a statistics pass reads Z and the
        # normalising pass reads it and writes NZ (for backward) and the output
        gemm += n * a * F32 + a * b * F32 + act
        bn = batchnorm and not last
        passes += (act + 3 * act) if bn else 2 * act
        # backward: the activation's backward reads dA and the output and writes dZ,
        # summing dLdb on the way; with BatchNorm, two passes read dA, the output and NZ,
        # the second writes dZ and sums dLdb; the output layer's dLdb is a read of dZ.
        # The dLdW GEMM reads dZ and the input and writes dW; the dLdA GEMM (not for the
        # first layer) reads dZ and W and writes dA.
        passes += 7 * act if bn else 3 * act
        if last:
            passes += act
        gemm += act + n * a * F32 + a * b * F32
        if i > 0:
            gemm += act + a * b * F32 + n * a * F32
    passes += 2 * n * sizes[-1] * F32  # softmax cross-entropy: logits in, gradient out
    passes += 5 * params * F32  # optimizer: read parameter, gradient, momentum; write two
    return gemm, passes, params


def serial_bound(gemm_us, pass_bytes, bandwidth):
    """The least step time over the GEMMs' time when the passes run before or after the
    products rather than beside them: ``1 + (pass bytes / bandwidth) / gemm time``."""
    return 1.0 + pass_bytes / bandwidth * 1e6 / gemm_us


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
    parser.add_argument(
        "--gemm-us", default="",
        help="measured GEMM floors, e.g. wide=1655,big=3592 (µs, from xpnet bench --gpu)",
    )  # fmt: skip
    parser.add_argument(
        "--bandwidth", type=float, default=2.8e12,
        help="bytes/s the passes reach (default: SGD's pass measured on an H100)",
    )  # fmt: skip
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
        gemm, passes, params = fused_bytes(sizes, n, batchnorm)
        nbytes = gemm + passes
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
        # with bias, activation and its backward, and the bias gradient in the products'
        # epilogues (cuBLASLt), the passes left: the batch, the loss, the optimizer
        rest = n * sizes[0] * F32 + n * 8 + 2 * n * sizes[-1] * F32 + 5 * params * F32
        rows.append((name, flops, nbytes, (passes, rest)))
    print()
    print("floors in µs from datasheet peaks: compute float32 / TF32, memory (fused bytes)")
    for card, (fp32, tf32, bandwidth) in PEAKS.items():
        cells = "  ".join(
            f"{name} {1e6 * f / fp32:.0f}/{1e6 * f / tf32:.0f}, {1e6 * b / bandwidth:.0f}"
            for name, f, b, _ in rows
        )
        print(f"{card}: {cells}")
    if args.gemm_us:
        measured = dict(item.split("=") for item in args.gemm_us.split(","))
        print()
        print(
            f"measured GEMM floors and the passes at {args.bandwidth / 1e12:.2f} TB/s: the "
            "least step / GEMM floor when the passes run serially with the products"
        )
        print(
            "(epilogues: bias, activation, its backward and the bias gradient inside the "
            "products; the batch, the loss and the optimizer still apart)"
        )
        print(
            f"{'size':<12} {'passes MB':>9} {'passes µs':>9} {'GEMM µs':>8} {'bound':>6} "
            f"{'with epilogues':>14}"
        )
        for name, _, _, (passes, rest) in rows:
            if name in measured:
                gemm_us = float(measured[name])
                print(
                    f"{name:<12} {passes / 1e6:>9.1f} {passes / args.bandwidth * 1e6:>9.0f} "
                    f"{gemm_us:>8.0f} {serial_bound(gemm_us, passes, args.bandwidth):>6.2f} "
                    f"{serial_bound(gemm_us, rest, args.bandwidth):>14.2f}"
                )


if __name__ == "__main__":
    main()
