"""Data-parallel training under ``mpiexec`` (run by ``nox -s mpi``): N processes compute
what one process computes, resume, and a failing process ends the whole job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import saved_arrays
from xpnet.checkpoint import read_metadata

MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found")


def _run(*args, n=None, cwd=None, timeout=300):
    command = [sys.executable, "-m", "xpnet", *map(str, args)]
    if n is not None:
        command = [MPIEXEC, "-n", str(n), *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _arrays(folder):
    return saved_arrays(Path(folder) / "model.safetensors")


def _worst(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(a[k])), 1e-300)) for k in a)


TRAIN = ["train", "--dtype", "float64", "--epochs", 3, "--hidden", "32,16", "--quiet"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    result = _run(*TRAIN, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_n_processes_compute_what_one_computes(tmp_path, single, n):
    out = tmp_path / "run"
    loud = [arg for arg in TRAIN if arg != "--quiet"]  # the summary lines say the processes
    result = _run(*loud, "--out", out, n=n)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("test accuracy:") == 1  # the first process alone prints
    assert f"on numpy (cpu, {n} processes), float64" in result.stdout
    assert _worst(_arrays(single), _arrays(out)) <= 1e-10
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == n
    assert read_metadata(out / "model.safetensors")["user"]["config"]["world_size"] == n
    reference = json.loads((single / "metrics.json").read_text())
    assert [r["loss"] for r in metrics["history"]] == pytest.approx(
        [r["loss"] for r in reference["history"]], rel=1e-12
    )


def test_dropout_masks_are_those_of_the_global_batch(tmp_path):
    args = [*TRAIN, "--dropout", "0.3", "--batch-size", "50"]  # 50 rows: 3 processes differ
    alone = _run(*args, "--out", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    for n in (2, 3):
        out = tmp_path / f"n{n}"
        result = _run(*args, "--out", out, n=n)
        assert result.returncode == 0, result.stderr
        assert _worst(_arrays(tmp_path / "alone"), _arrays(out)) <= 1e-10


def test_resume_under_mpi(tmp_path, single):
    out = tmp_path / "run"
    first = _run(*[a if a != 3 else 2 for a in TRAIN], "--out", out, n=2)
    assert first.returncode == 0, first.stderr
    resumed = _run("train", "--resume", out, "--epochs", 3, "--quiet", n=2)
    assert resumed.returncode == 0, resumed.stderr
    assert _worst(_arrays(single), _arrays(out)) <= 1e-10


_WRAPPER = """
import os, sys
from mpi4py import MPI
rank = MPI.COMM_WORLD.Get_rank()
out = sys.argv[1]
open(os.path.join(os.path.dirname(out), f"pid-{rank}"), "w").write(str(os.getpid()))
import xpnet.app.runs
if rank == 1 and sys.argv[2] == "raise":
    real = xpnet.app.runs.fit
    from xpnet.callbacks import LambdaCallback
    def fail_after_epoch_2(model, state, record):
        if state.epoch == 2:
            raise RuntimeError("rank 1 fails after epoch 2")
    def failing(*args, callbacks=(), **kwargs):
        hook = LambdaCallback(on_epoch_end=fail_after_epoch_2)
        return real(*args, callbacks=[*callbacks, hook], **kwargs)
    xpnet.app.runs.fit = failing
from xpnet.app.cli import main
sys.exit(main(["train", "--epochs", sys.argv[3], "--hidden", "16", "--out", out, "--quiet"]))
"""


def test_an_exception_on_one_process_ends_the_job(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    result = subprocess.run(
        [MPIEXEC, "-n", "2", sys.executable, "-c", _WRAPPER, str(out), "raise", "40"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # the job ends with a failure status (the failing rank's traceback may be cut short:
    # MPI_Abort ends the processes while mpiexec still forwards their output)
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert time.perf_counter() - start < 60
    # whole, not half-written: epoch 1's, or epoch 2's if the first process saved it in time
    # (a process killed in the middle of a save leaves only its temporary file)
    saved = read_metadata(out / "resume.safetensors")
    assert saved["user"]["resume"]["epoch"] >= 1 and not (out / "model.safetensors").exists()
    resumed = _run("train", "--resume", out, "--epochs", 3, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".*.tmp")) and (out / "model.safetensors").is_file()


def test_a_killed_process_ends_the_job(tmp_path):
    out = tmp_path / "run"
    job = subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable, "-c", _WRAPPER, str(out), "kill", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (out / "resume.safetensors").exists() and (tmp_path / "pid-1").exists():
                if read_metadata(out / "resume.safetensors")["user"]["resume"]["epoch"] >= 1:
                    break
            time.sleep(0.2)
        os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGKILL)
        job.wait(timeout=60)  # every process ends: no hang in an all-reduce
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert read_metadata(out / "resume.safetensors")["user"]["resume"]["epoch"] >= 1


# The device path's bootstrap, with a stand-in for NCCL (the real one needs GPUs, and is
# run on one by tests/test_nccl.py): every process takes the same path, the id process 0
# makes reaches all, and arrays that are not NumPy's go through it.
_BOOTSTRAP = """
import json, sys
import array_api_strict as xps
import numpy as np
from mpi4py import MPI
import xpnet.backend
from xpnet.distributed import MPICommunicator

world = MPI.COMM_WORLD
rank = world.Get_rank()
usable = sys.argv[1] == "all" or rank == 0
made = []

class StandIn:
    def __init__(self, unique_id, rank, size, like):
        made.append(unique_id)
    def supports(self, x):
        return True
    def __call__(self, x):
        return xps.asarray(world.allreduce(np.asarray(x), op=MPI.SUM) + 0.5)

xpnet.backend.nccl_usable = lambda x: usable
xpnet.backend.nccl_unique_id = lambda: ("id made by", rank)
xpnet.backend.NCCLSum = StandIn
comm = MPICommunicator(world)
report = {}
for _ in range(2):
    total = comm.allreduce_sum(xps.asarray([1.0, float(rank)]))
    report.setdefault("sums", []).append([float(v) for v in total])
report.update(transport=comm.transport, made=made, host=comm.allreduce_sum(np.ones(2)).tolist(),
              host_transport=comm.transport, local_rank=comm.local_rank)
with open(f"{sys.argv[2]}/report-{rank}.json", "w") as f:  # one file each: no mixed lines
    json.dump(report, f)
"""


@pytest.mark.parametrize("usable", ["all", "first"])
def test_device_sums_bootstrap_once_and_agree(tmp_path, usable):
    result = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, "-c", _BOOTSTRAP, usable, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reports = [json.loads((tmp_path / f"report-{r}.json").read_text()) for r in range(3)]
    assert len(reports) == 3 and sorted(r["local_rank"] for r in reports) == [0, 1, 2]
    for r in reports:
        assert r["host"] == [3.0, 3.0] and r["host_transport"] == "mpi"
        if usable == "all":  # one bootstrap per device, with process 0's id everywhere
            assert r["made"] == [["id made by", 0]] and r["transport"] == "nccl"
            assert r["sums"] == [[3.5, 3.5]] * 2
        else:  # one process cannot: all stage through the host
            assert r["made"] == [] and r["transport"] == "mpi, staged through the host"
            assert r["sums"] == [[3.0, 3.0]] * 2
