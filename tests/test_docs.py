"""The README's Python code, the tutorials' and the example script run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import rst_python_blocks

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(section):
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_quickstart_runs(capsys):
    pytest.importorskip("torch")
    (code,) = _python_blocks("In Python")
    exec(compile(code, "README.md quickstart", "exec"), {})
    loss, accuracy = capsys.readouterr().out.splitlines()[0].split()
    assert float(loss) < 0.1 and float(accuracy) > 0.95


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


def test_example_script_runs_on_the_base_install():
    """With none of the optional array libraries importable, as after ``pip install .``."""
    hide = (
        "import sys\n"
        "for name in ('torch', 'array_api_strict', 'cupy'):\n"
        "    sys.modules[name] = None\n"
    )
    run = (
        "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide + run, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "numpy: accuracy" in result.stdout.splitlines()[-1]


TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.rst"))


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_code_runs(page, tmp_path, monkeypatch, capsys):
    """Every Python block of a tutorial runs, in order, in one namespace (as a reader
    pasting them would); the blocks assert what they claim."""
    blocks = rst_python_blocks(page)
    assert blocks, f"{page.name} has no Python code"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for k, code in enumerate(blocks):
        exec(compile(code, f"{page.name} block {k + 1}", "exec"), namespace)
    assert capsys.readouterr().out


def test_docs_point_nowhere_outside_the_repository():
    outside = "/".join(("..", "shared"))  # spelled so that this file does not contain it
    for path in [ROOT / "README.md", *ROOT.glob("docs/**/*.rst"), *ROOT.glob("**/*.py")]:
        if ".venv" in path.parts or ".nox" in path.parts:
            continue
        assert outside not in path.read_text(), path


def test_the_command_line_reference_is_generated_from_the_parser():
    """docs/cli.rst renders xpnet's own parser (sphinx-argparse), so no option can go
    undocumented; the README's short table names every command and links there."""
    from xpnet.app.cli import build_parser

    page = (ROOT / "docs" / "cli.rst").read_text()
    assert ".. argparse::\n   :module: xpnet.app.cli\n   :func: build_parser" in page
    readme = (ROOT / "README.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"| `xpnet {name}" in readme, name
    assert "[docs/cli.rst](docs/cli.rst)" in readme


def test_the_readme_is_a_front_page():
    """At most 150 lines: what xpnet is, install, the main job, where the docs are. The
    guarantees and their tests live in docs/contract.rst, where they are kept whole."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "## Guarantees" not in readme
    contract = (ROOT / "docs" / "contract.rst").read_text()
    assert "Guarantees and the tests that check them" in contract
    linked = re.findall(r"\]\(([^)#]+)", readme)
    assert linked and all((ROOT / path).exists() for path in linked if "://" not in path)


def test_the_executor_table_names_what_exists():
    """Every row of xpnet.executors.EXECUTORS names a module or object that exists, and the docs
    page shows the generated table and says how each executor is proven equal."""
    import importlib

    from xpnet.executors import EXECUTORS

    page = (ROOT / "docs" / "executors.rst").read_text()
    assert ".. include:: generated/executors.rst" in page
    for executor in EXECUTORS:
        try:
            importlib.import_module(executor.module)
        except ModuleNotFoundError:
            module, _, name = executor.module.rpartition(".")
            assert hasattr(importlib.import_module(module), name), executor.module
        assert f"\n{executor.name}\n   " in page, f"no proof of {executor.name} on the page"
