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
