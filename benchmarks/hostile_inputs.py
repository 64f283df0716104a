"""Crafted and hostile input files against every reader: time, peak memory and the outcome.

Each case builds its files in a temporary folder, then runs one ``xpnet`` command on them
in a child process (limited to 4 GB of address space and 30 s, so that a reader that
would take more is stopped and shown as such). The table gives the files' size, the exit
status, the wall time, the child's peak resident memory and the first line it printed on
stderr. The input policy promises each case refused in under a second and under 200 MB
(the options that size a model: refused before it is allocated, or in one line when an
allocation fails).

    python benchmarks/hostile_inputs.py                  # this checkout
    python benchmarks/hostile_inputs.py --tree OTHER     # another checkout's xpnet, same files
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import resource
import site
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

LIMIT_BYTES = 4 << 30
LIMIT_SECONDS = 30


def _npy(shape, dtype="<f8", body=b"\0" * 16):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return out.getvalue() + body


def _idx_header(shape, code=0x08):
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def _idx_folder(folder, train_images):
    """A valid tiny IDX folder whose training images are replaced by ``train_images``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 100), ("t10k", 20)):
        images = _idx_header((n, 4, 4)) + rng.integers(0, 255, n * 16, dtype=np.uint8).tobytes()
        labels = _idx_header((n,)) + rng.integers(0, 3, n, dtype=np.uint8).tobytes()
        (folder / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (folder / f"{part}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(train_images)
    return folder


def _gzip_of_zeros(header, n_zeros):
    """A gzip stream of ``header`` and ``n_zeros`` zero bytes, compressed a block at a time."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as fh:
        fh.write(header)
        block = bytes(1 << 24)
        for start in range(0, n_zeros, len(block)):
            fh.write(block[: min(len(block), n_zeros - start)])
    return out.getvalue()


def _trained_checkpoint(tmp):
    """A checkpoint of ``xpnet train`` (digits, one epoch), recording its data."""
    subprocess.run(
        [sys.executable, "-m", "xpnet", "train", "--epochs", "1", "--hidden", "8", "--quiet",
         "--out", str(tmp / "run")],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return tmp / "run" / "model.safetensors"


def _rewritten(path, edit):
    """The checkpoint with its metadata edited and both its hashes recomputed (as anyone
    can: a hash is not a signature)."""
    from xpnet._safetensors import assemble, decode, pack
    from xpnet.checkpoint import _header_sha256

    tensors, header, _ = decode(path.read_bytes())
    meta = json.loads(header["xpnet"])
    edit(meta)
    entries, data = pack(tensors)
    document = json.dumps(meta)
    path.write_bytes(
        assemble(
            entries, data, {"xpnet": document, "xpnet_sha256": _header_sha256(entries, document)}
        )
    )
    return path


def _raw_checkpoint(path, header):
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


def cases(tmp):
    """``name -> (files' bytes, xpnet arguments)``, building the files in ``tmp``."""
    out = {}

    def case(name, files, *args):
        out[name] = (sum(Path(f).stat().st_size for f in files if Path(f).is_file()), args)

    ckpt = _trained_checkpoint(tmp)

    def at_dev_zero(meta):
        meta["user"]["data"].update(name="/dev/zero", path="/dev/zero", sha256="0" * 64)

    zero = tmp / "zero.safetensors"
    zero.write_bytes(ckpt.read_bytes())
    _rewritten(zero, at_dev_zero)
    case("checkpoint records /dev/zero as its data", [zero], "evaluate", zero)

    os.mkfifo(tmp / "fifo.safetensors")
    case("FIFO as the checkpoint", [], "evaluate", tmp / "fifo.safetensors")
    case("/dev/zero as the checkpoint", [], "evaluate", "/dev/zero")
    os.mkfifo(tmp / "fifo.csv")
    case("FIFO as --dataset", [], "train", "--dataset", tmp / "fifo.csv", "--out", tmp / "r1")

    fifo_y = tmp / "fifo_y"
    fifo_y.mkdir()
    np.save(fifo_y / "X.npy", np.zeros((4, 2)))
    os.mkfifo(fifo_y / "y.npy")
    case("FIFO as y.npy", [fifo_y / "X.npy"], "train", "--dataset", fifo_y, "--out", tmp / "r2")

    big_y = tmp / "big_y"
    big_y.mkdir()
    np.save(big_y / "X.npy", np.zeros((4, 2)))
    (big_y / "y.npy").write_bytes(_npy((10**10,)))
    case(
        "y.npy claiming 10^10 values",
        [big_y / "y.npy"],
        "train",
        "--dataset",
        big_y,
        "--out",
        tmp / "r3",
    )

    (tmp / "x.npy").write_bytes(_npy((10**6, 64)))
    case("predict .npy claiming 512 MB", [tmp / "x.npy"], "predict", ckpt, tmp / "x.npy")

    with zipfile.ZipFile(tmp / "claim.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("X.npy", _npy((10**5, 10**5)))
        archive.writestr("y.npy", _npy((2,)))
    case(
        ".npz member claiming 80 GB",
        [tmp / "claim.npz"],
        "train",
        "--dataset",
        tmp / "claim.npz",
        "--out",
        tmp / "r4",
    )

    with zipfile.ZipFile(tmp / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(np.lib.format.magic(1, 0))
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                head, {"descr": "<f8", "fortran_order": False, "shape": (375_000, 1000)}
            )
            member.write(head.getvalue()[8:])
            block = bytes(1 << 24)
            for start in range(0, 3_000_000_000, len(block)):
                member.write(block[: min(len(block), 3_000_000_000 - start)])
        archive.writestr("y.npy", _npy((375_000,), "<i8", bytes(3_000_000)))
    case(
        ".npz zip bomb (3 GB of zeros)",
        [tmp / "bomb.npz"],
        "train",
        "--dataset",
        tmp / "bomb.npz",
        "--out",
        tmp / "r5",
    )

    bomb = _idx_folder(
        tmp / "idx_bomb", _gzip_of_zeros(_idx_header((1_900_000, 28, 28)), 1_900_000 * 784)
    )
    case(
        "gzipped IDX bomb (1.5 GB of zeros)",
        list(bomb.iterdir()),
        "train",
        "--dataset",
        bomb,
        "--out",
        tmp / "r6",
    )

    claim = _idx_folder(tmp / "idx_claim", gzip.compress(_idx_header((60000, 60000, 60000))))
    case(
        "gzipped IDX claiming 216 TB",
        list(claim.iterdir()),
        "train",
        "--dataset",
        claim,
        "--out",
        tmp / "r7",
    )

    raw = _idx_folder(tmp / "idx_raw", b"")
    (raw / "train-images-idx3-ubyte.gz").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes(_idx_header((60000, 60000)))
    case(
        "IDX claiming 3.6 GB in 12 bytes",
        list(raw.iterdir()),
        "train",
        "--dataset",
        raw,
        "--out",
        tmp / "r8",
    )

    rng = np.random.default_rng(0)
    with open(tmp / "lastbad.csv", "w") as fh:  # 50 MB of good rows, then one bad cell
        for _ in range(30):
            block = np.column_stack([rng.standard_normal((2000, 100)), rng.integers(0, 2, 2000)])
            np.savetxt(fh, block, delimiter=",", fmt=["%.5f"] * 100 + ["%d"])
        fh.write(",".join(["x"] * 100) + ",1\n")
    case(
        "CSV of 50 MB whose last row is bad",
        [tmp / "lastbad.csv"],
        "train",
        "--dataset",
        tmp / "lastbad.csv",
        "--out",
        tmp / "r9",
    )
    with open(tmp / "longline.csv", "w") as fh:  # one line of 100 MB: 25 million cells
        fh.write("1,2,0\n" + "1," * 50_000_000 + "0\n")
    case(
        "CSV with a 100 MB line",
        [tmp / "longline.csv"],
        "train",
        "--dataset",
        tmp / "longline.csv",
        "--out",
        tmp / "r10",
    )

    long = _raw_checkpoint(tmp / "long.safetensors", b"[" + b"[]," * 33_000_000 + b"[]]")
    case("checkpoint: 99 MB header of []", [long], "evaluate", long)
    many = _raw_checkpoint(tmp / "many.safetensors", b"[" + b"0," * 7_000_000 + b"0]")
    case("checkpoint: 14 MB header of numbers", [many], "evaluate", many)
    # options that size the model: one far beyond any machine, one that passes the memory
    # check (it needs at least 2.7 GB of the 4 GB) and then fails to allocate
    case("option: --hidden 10000000000", [], "train", "--hidden", 10**10, "--out", tmp / "r11")
    case("option: --hidden 3000000", [], "train", "--hidden", 3_000_000, "--out", tmp / "r12")
    return out


def run(args, env, flags=()):
    """``(exit status, seconds, peak MB, last stderr line)`` of one limited child process;
    the peak is that child's own (``os.wait4``)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))

    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, *flags, "-m", "xpnet", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=limit,
            env=env,
        )
        status = None
        while time.perf_counter() - start < LIMIT_SECONDS:
            pid, code, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(code)
                break
            time.sleep(0.01)
        if status is None:
            child.kill()
            _, _, usage = os.wait4(child.pid, 0)
            status = "killed"
        child.returncode = status  # reaped here, not by Popen
        seconds = time.perf_counter() - start
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return status, seconds, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=None, help="run another checkout's xpnet")
    args = parser.parse_args()
    env, flags = dict(os.environ), ()
    if args.tree is not None:  # without site (-S), an editable install cannot take precedence
        env["PYTHONPATH"] = os.pathsep.join([str(args.tree.resolve()), *site.getsitepackages()])
        flags = ("-S",)
    with tempfile.TemporaryDirectory() as tmp:
        table = cases(Path(tmp))
        os.chdir(tmp)  # `python -m` puts the working folder first on the path
        print(f"{'case':<40}{'bytes':>12}{'exit':>7}{'s':>7}{'peak MB':>9}  message")
        for name, (size, argv) in table.items():
            status, seconds, peak, message = run(argv, env, flags)
            print(
                f"{name:<40}{size:>12}{status!s:>7}{seconds:>7.2f}{peak:>9.0f}  {message[:110]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
