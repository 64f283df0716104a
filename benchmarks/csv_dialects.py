"""What each CSV reader makes of the dialects users' files come in.

xpnet's reader, ``pandas.read_csv`` and ``pyarrow.csv.read_csv`` (each with its defaults and
the header given as the file has it) on small files of four rows: the rows and the labels
each returns, or its error. The point: where a well-kept library already reads a case
right, xpnet could use it; where none does, xpnet must refuse by name.

    python benchmarks/csv_dialects.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROWS = "1.5,2,0\n3,4.5,1\n5,6,0\n7,8.5,1\n"
CASES = {
    "byte-order mark, no header": ("\ufeff" + ROWS, False),
    "numeric header (0,1,label)": ("0,1,label\n" + ROWS, True),
    "blank label": ("1,2,0\n3,4,\n5,6,1\n7,8,1\n", False),
    "a row one cell longer": ("1,2,0\n3,4,1,7\n5,6,0\n7,8,1\n", False),
    "a row one cell shorter": ("1,2,0\n3,4\n5,6,0\n7,8,1\n", False),
    "label name twice": ("a,label,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n", True),
}


def _xpnet(path, header):
    from xpnet.data import read_arrays

    X, y = read_arrays(path)
    return len(X), list(y)


def _pandas(path, header):
    import pandas as pd

    frame = pd.read_csv(path, header=0 if header else None)
    return len(frame), frame.iloc[:, -1].tolist()


def _pyarrow(path, header):
    from pyarrow import csv

    options = csv.ReadOptions(autogenerate_column_names=not header)
    table = csv.read_csv(path, read_options=options)
    return table.num_rows, table.columns[-1].to_pylist()


def main():
    readers = {"xpnet": _xpnet, "pandas": _pandas, "pyarrow": _pyarrow}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (text, header) in CASES.items():
            path = Path(tmp) / "d.csv"
            path.write_bytes(text.encode())
            print(case)
            for name, read in readers.items():
                try:
                    rows, labels = read(path, header)
                    outcome = f"{rows} rows, labels {labels}"
                except Exception as err:  # each reader's own refusal, shown as it words it
                    outcome = f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"
                print(f"    {name:<8} {outcome}")


if __name__ == "__main__":
    main()
