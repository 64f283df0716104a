"""Sphinx configuration of the xpnet documentation (``nox -s docs`` builds it)."""

import xpnet

project = "xpnet"
author = "the xpnet developers"
copyright = "2026, the xpnet developers"
release = xpnet.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinxarg.ext",  # the command-line reference, generated from xpnet's own parser
]
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc sections say the types in words
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()  # numpydoc lint checks them in the lint session
exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"xpnet {release}"


def _executor_table():
    """docs/generated/executors.rst: the table of xpnet.executors.EXECUTORS, for executors.rst."""
    from pathlib import Path

    from xpnet.executors import EXECUTORS

    rows = [("executor", "module", "runs a step on", "refuses")]
    rows += [(e.name, f"``{e.module}``", e.runs, e.refuses) for e in EXECUTORS]
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 14 24 31 31", ""]
    for first, *rest in rows:
        lines += [f"   * - {first}", *(f"     - {cell}" for cell in rest)]
    out = Path(__file__).parent / "generated" / "executors.rst"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


_executor_table()
