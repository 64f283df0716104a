"""The README's Python code and the example script run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(section):
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_quickstart_runs(capsys):
    pytest.importorskip("torch")
    (code,) = _python_blocks("Quickstart in Python")
    exec(compile(code, "README.md quickstart", "exec"), {})
    loss, accuracy = capsys.readouterr().out.splitlines()[0].split()
    assert float(loss) < 0.1 and float(accuracy) > 0.95


def test_readme_checkpoint_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (code,) = _python_blocks("The main job: train on a GPU, run anywhere")
    from xpnet.models import MLP

    exec(compile(code, "README.md checkpoints", "exec"), {"model": MLP([3, 4, 2])})
    assert (tmp_path / "model.safetensors").is_file()


def test_example_script_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "array_api_strict"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "not usable here" in result.stderr:
        pytest.skip(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "array_api_strict: accuracy" in result.stdout
