"""Test accuracy of ``xpnet train`` with each optimizer, with and without dropout and a
cosine schedule, on the bundled digits and on MNIST-1D; prints a Markdown table.

    pip install '.[datasets]'       # MNIST-1D
    python benchmarks/optimizers.py [--datasets digits,mnist1d] [--epochs 40]

Every run is the command line's own (``xpnet train ... --json``), seed 0, NumPy, float32.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time

RUNS = {
    "SGD (momentum 0.9, lr 0.05)": [],
    "SGD + dropout 0.2": ["--dropout", "0.2"],
    "SGD + cosine": ["--schedule", "cosine"],
    "Adam (lr 1e-3)": ["--optimizer", "adam"],
    "Adam + dropout 0.2": ["--optimizer", "adam", "--dropout", "0.2"],
    "AdamW (wd 0.01)": ["--optimizer", "adamw"],
    "AdamW + dropout 0.2 + warm-up 3 + cosine": [
        "--optimizer", "adamw", "--dropout", "0.2", "--warmup-epochs", "3",
        "--schedule", "cosine",
    ],
}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,mnist1d")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    print(f"| run | {' | '.join(f'{d}: accuracy, epochs, seconds' for d in datasets)} |")
    print("|---|" + "---|" * len(datasets))
    for label, options in RUNS.items():
        cells = []
        for dataset in datasets:
            with tempfile.TemporaryDirectory() as out:
                command = [
                    sys.executable, "-m", "xpnet", "train", "--dataset", dataset,
                    "--epochs", str(args.epochs), "--backend", "numpy", "--quiet", "--json",
                    "--out", f"{out}/run", *options,
                ]  # fmt: skip
                start = time.perf_counter()
                result = subprocess.run(command, capture_output=True, text=True, check=True)
                wall = time.perf_counter() - start
            metrics = json.loads(result.stdout)
            cells.append(f"{metrics['test_accuracy']:.4f}, {metrics['epochs_run']}, {wall:.1f}")
        print(f"| {label} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
