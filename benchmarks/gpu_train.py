"""Whole training runs on the CPU and on a CUDA GPU, side by side: ``xpnet train`` on
digits and on MNIST-1D with ``--backend numpy``, ``--backend cupy`` and ``--backend cupy
--cuda-graph`` (the default model: hidden 128,64 with BatchNorm, batch 32, 40 epochs).

The time is the training loop's (``train_seconds`` of ``--json``: no start-up, no data
loading, no final evaluation); each run is a fresh process.

    python benchmarks/gpu_train.py [--datasets digits,mnist1d] [--epochs 40] [--dtype float64]

In float32 the GPU's sums add in another order than NumPy's, and 40 epochs carry those
last-bit differences into somewhat different models (test accuracies a few tenths of a
point apart either way); in float64 the two backends agree to about 1e-16 per step
(``xpnet parity``), so their accuracies agree too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = {
    "numpy": ["--backend", "numpy"],
    "cupy": ["--backend", "cupy"],
    "cupy --cuda-graph": ["--backend", "cupy", "--cuda-graph"],
}


def train(dataset, mode, epochs, folder, dtype):
    command = [
        sys.executable, "-m", "xpnet", "train", "--dataset", dataset, "--epochs", str(epochs),
        "--out", str(folder / f"{dataset}-{mode.replace(' ', '')}"), "--quiet", "--json",
        "--dtype", dtype, *MODES[mode],
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)  # the traceback, for the log
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    print(f"xpnet train, {args.epochs} epochs, default model, {args.dtype}; training loop seconds")
    print(f"{'dataset':<10}{'run':<20}{'seconds':>9}{'test acc':>10}{'vs numpy':>10}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            base = None
            for mode in MODES:
                result = train(dataset, mode, args.epochs, Path(tmp), args.dtype)
                if "error" in result:
                    failed = True
                    print(f"{dataset:<10}{mode:<20}  failed: {result['error']}")
                    continue
                seconds, accuracy = result["train_seconds"], result["test_accuracy"]
                base = seconds if mode == "numpy" else base
                speed = f"{base / seconds:.2f}x" if base else "n/a"
                print(f"{dataset:<10}{mode:<20}{seconds:>9.2f}{accuracy:>10.4f}{speed:>10}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
