"""Test sessions: ``nox`` runs lint and the test suite on every CPU backend.

``nox -s "tests(backend='cupy')"`` runs the suite on a CUDA GPU machine.
"""

import nox

BACKENDS = ["numpy", "array_api_strict", "torch", "cupy"]
CPU_BACKENDS = [b for b in BACKENDS if b != "cupy"]

nox.options.sessions = ["lint", *[f"tests(backend='{b}')" for b in CPU_BACKENDS]]
nox.options.error_on_missing_interpreters = True


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The test suite on one array library (torch==2.13.0 is installed as the reference)."""
    extras = "test,plot,cuda13" if backend == "cupy" else "test,plot"
    session.install(f".[{extras}]")
    session.run("pytest", f"--backend={backend}", *session.posargs)


@nox.session
def lint(session):
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
