"""A run folder has one owner: one process trains in it at a time (an OS lock, released
however that process ends), a finished run is not replaced without ``--force``, and a run
that fails before writing anything leaves no folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import run_cli
from xpnet.app.folders import LOCK_FILE, owned_folder
from xpnet.errors import RunError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="run folders lock with fcntl")

SHORT = ("--epochs", 1, "--hidden", 8, "--quiet")


def test_a_folder_in_use_is_refused_to_train_and_to_resume(tmp_path):
    folder = tmp_path / "run"
    assert run_cli("train", *SHORT, "--out", folder).returncode == 0
    (folder / "model.safetensors").unlink()  # neither finished nor new: the lock decides
    with owned_folder(folder):
        for command in (
            ("train", *SHORT, "--out", folder, "--force"),
            ("train", "--resume", folder),
        ):
            result = run_cli(*command)
            assert result.returncode == 2, result.stderr
            assert result.stderr == (
                f"xpnet train: error: {folder} is in use by another xpnet process "
                f"(pid {os.getpid()}); wait for it to end, or choose another --out\n"
            )
    resumed = run_cli("train", "--resume", folder, "--epochs", 2, "--quiet")
    assert resumed.returncode == 0, resumed.stderr  # released with the block


def test_the_lock_is_released_when_its_process_is_killed(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from xpnet.app.folders import owned_folder
            with owned_folder(Path({str(folder)!r})):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunError, match=f"pid {holder.pid}"), owned_folder(folder):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with owned_folder(folder):  # no stale lock to clean up
        assert (folder / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_finished_run_is_replaced_only_with_force(tmp_path):
    folder = tmp_path / "run"
    assert run_cli("train", *SHORT, "--out", folder).returncode == 0
    (folder / "resume.safetensors").unlink()  # a finished run, its resume state removed
    before = (folder / "model.safetensors").read_bytes()
    refused = run_cli("train", *SHORT, "--out", folder, "--seed", 1)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"xpnet train: error: {folder} holds the files of a finished run (model.safetensors, "
        f"metrics.json); choose another --out, or pass --force to replace them\n"
    )
    assert (folder / "model.safetensors").read_bytes() == before
    replaced = run_cli("train", *SHORT, "--out", folder, "--seed", 1, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert (folder / "model.safetensors").read_bytes() != before
    assert (folder / "resume.safetensors").is_file()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    result = run_cli("train", "--dataset", tmp_path / "missing.csv", "--out", tmp_path / "run")
    assert result.returncode == 2 and "no such file" in result.stderr
    assert not (tmp_path / "run").exists()
