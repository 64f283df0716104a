"""Load time and peak memory of ``xpnet.data.read_arrays`` against ``numpy.loadtxt``.

Numeric CSV files of 100 feature columns and an integer label (the shape of the 170 MB
file in the data issue: 200,000 rows), at several sizes. Each reader runs in a fresh
subprocess, so that its peak resident memory (VmHWM) is its own; the two alternate.

    python benchmarks/csv_read.py [--sizes-mb 10,100,170,1000] [--dir /tmp] [--libraries]
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

READERS = {
    "numpy.loadtxt": "np.loadtxt(path, delimiter=',')",
    "xpnet read_arrays": "read_arrays(path)",
    # --libraries: the well-kept readers xpnet could use instead, to a float64 array
    "pandas": "__import__('pandas').read_csv(path, header=None).to_numpy(np.float64)",
    "pyarrow": (
        "np.column_stack([c.to_numpy() for c in __import__('pyarrow.csv').csv.read_csv("
        "path, read_options=__import__('pyarrow.csv').csv.ReadOptions("
        "autogenerate_column_names=True)).columns])"
    ),
}
PROBE = textwrap.dedent(
    """
    import json, re, sys, time
    import numpy as np
    from xpnet.data import read_arrays
    path = sys.argv[1]
    start = time.perf_counter()
    result = {call}
    seconds = time.perf_counter() - start
    status = open("/proc/self/status").read()
    peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
    print(json.dumps({{"seconds": seconds, "peak_mb": peak}}))
    """
)


def write_csv(path, megabytes, seed=0):
    """About ``megabytes`` of rows: 100 features with 6 decimals, an integer label."""
    rng = np.random.default_rng(seed)
    row_bytes = 855  # measured: 100 values of '%.5f' and a label
    rows = int(megabytes * 1e6 / row_bytes)
    with open(path, "w") as fh:
        for start in range(0, rows, 20000):
            n = min(20000, rows - start)
            X = rng.standard_normal((n, 100))
            y = rng.integers(0, 10, n)
            block = np.column_stack([X, y])
            np.savetxt(fh, block, delimiter=",", fmt=["%.5f"] * 100 + ["%d"])
    return rows


def measure(reader, path):
    code = PROBE.format(call=READERS[reader])
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", default="10,100,170,1000")
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument(
        "--libraries", action="store_true", help="time pandas and pyarrow's readers too"
    )
    args = parser.parse_args(argv)
    others = ["pandas", "pyarrow"] if args.libraries else []
    print(
        f"{'file':>10} {'rows':>9} | {'loadtxt s':>9} {'MB':>7} | {'xpnet s':>8} {'MB':>7} | "
        f"{'time':>5} {'memory':>6}" + "".join(f" | {o + ' s':>10} {'MB':>7}" for o in others)
    )
    for size in (float(s) for s in args.sizes_mb.split(",")):
        path = Path(args.dir) / f"xpnet-bench-{int(size)}mb.csv"
        rows = write_csv(path, size)
        actual = os.path.getsize(path) / 1e6
        try:
            base, ours = measure("numpy.loadtxt", path), measure("xpnet read_arrays", path)
            theirs = [measure(other, path) for other in others]
        finally:
            path.unlink()
        time_ratio = ours["seconds"] / base["seconds"]
        memory_ratio = ours["peak_mb"] / base["peak_mb"]
        print(
            f"{actual:>8.0f}MB {rows:>9} | {base['seconds']:>9.2f} {base['peak_mb']:>7.0f} | "
            f"{ours['seconds']:>8.2f} {ours['peak_mb']:>7.0f} | "
            f"{time_ratio:>4.2f}x {memory_ratio:>5.2f}x"
            + "".join(f" | {t['seconds']:>10.2f} {t['peak_mb']:>7.0f}" for t in theirs),
            flush=True,
        )


if __name__ == "__main__":
    main()
