"""The matrix products of one mnist training step alone, NumPy (OpenBLAS) against PyTorch.

    python benchmarks/gemm_floor.py

Forward ``A @ W.T`` for three layers, backward ``dZ.T @ A`` for three and ``dZ @ W`` for
two (the input gradient is not needed in training). This is the part of the step that no
NumPy code can make faster: it is the BLAS library's.
"""

import itertools

import numpy as np

from xpnet.app.bench import time_step


def products(lib, sizes=(784, 256, 128, 10), batch=128, seed=0):
    rng = np.random.default_rng(seed)
    acts = [rng.standard_normal((batch, n)).astype(np.float32) for n in sizes]
    Ws = [rng.standard_normal((o, i)).astype(np.float32) for i, o in itertools.pairwise(sizes)]
    if lib == "torch":
        import torch

        acts = [torch.from_numpy(a) for a in acts]
        Ws = [torch.from_numpy(w) for w in Ws]

    def step():
        for A, W in zip(acts, Ws[: len(acts)], strict=False):
            A @ W.T
        for i, W in enumerate(Ws):
            dZ = acts[i + 1]
            dZ.T @ acts[i]
            if i > 0:
                dZ @ W

    return step


if __name__ == "__main__":
    for lib in ("numpy", "torch"):
        print(
            f"{lib:<6} matrix products of an mnist step: "
            f"{time_step(products(lib), seconds=2) * 1e6:8.1f} us"
        )
