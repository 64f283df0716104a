"""``xpnet predict`` on inputs larger than memory: Dask's peak memory against the rows.

Writes ``.npy`` inputs of 784 float32 features (the first rows the same in every file),
an mnist-sized model (784-256-128-10), and runs ``xpnet predict --backend dask`` on each
input and ``--backend numpy`` on the smallest, each in a process of its own, printing a
table of rows, seconds, rows per second and the process's peak resident memory
(``ru_maxrss``). Then checks that every Dask run's predictions equal NumPy's on the rows
NumPy scored, and deletes the inputs unless ``--keep``::

    python benchmarks/dask_predict.py --folder /tmp/big --rows 1000000,5000000

5 million rows take 15.7 GB of disk.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xpnet import save
from xpnet.models import MLP

FEATURES = 784
WRITE_ROWS = 1 << 16


def _write_input(path, rows):
    """``rows`` rows of features, block ``k`` drawn from seed ``k`` (so files share rows)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, FEATURES))
    for k, start in enumerate(range(0, rows, WRITE_ROWS)):
        stop = min(start + WRITE_ROWS, rows)
        rng = np.random.default_rng(k)
        out[start:stop] = rng.uniform(0, 255, (stop - start, FEATURES)).astype(np.float32)
        out.flush()
    del out


#: Runs a command and prints its peak resident memory in kB. A small process of its own
#: starts it, because a child forked from this one would count this one's pages (the
#: inputs just written) as its own until it execs.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _run(checkpoint, data, out, backend):
    """``xpnet predict`` in a fresh process: (seconds, peak resident MB)."""
    command = [sys.executable, "-m", "xpnet", "predict", str(checkpoint), str(data)]
    command += ["--backend", backend, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds, int(done.stdout.split()[-1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the inputs")
    args = parser.parse_args()
    sizes = sorted(int(r) for r in args.rows.split(","))
    args.folder.mkdir(parents=True, exist_ok=True)
    model = MLP([FEATURES, 256, 128, 10], standardize=True, seed=0).eval()
    model.standardize_layers[0].scale = model.standardize_layers[0].scale * 255.0
    checkpoint = save(model, args.folder / "model.safetensors")
    inputs = {}
    for rows in sizes:
        inputs[rows] = args.folder / f"X{rows}.npy"
        start = time.perf_counter()
        _write_input(inputs[rows], rows)
        print(
            f"wrote {inputs[rows]} ({inputs[rows].stat().st_size / 1e9:.1f} GB) in "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
    runs = [(sizes[0], "numpy")] + [(rows, "dask") for rows in sizes]
    print(f"{'rows':>9} {'backend':<7} {'seconds':>8} {'rows/s':>9} {'peak MB':>8}")
    for rows, backend in runs:
        out = args.folder / f"p{rows}-{backend}.npy"
        seconds, peak = _run(checkpoint, inputs[rows], out, backend)
        print(f"{rows:>9} {backend:<7} {seconds:>8.1f} {rows / seconds:>9.0f} {peak:>8.0f}")
    reference = np.load(args.folder / f"p{sizes[0]}-numpy.npy")
    for rows in sizes:
        got = np.load(args.folder / f"p{rows}-dask.npy", mmap_mode="r")
        assert got.shape == (rows,), got.shape
        same = np.array_equal(got[: len(reference)], reference)
        print(f"dask on {rows} rows equals numpy on the first {len(reference)}: {same}")
    if not args.keep:
        shutil.rmtree(args.folder)


if __name__ == "__main__":
    main()
