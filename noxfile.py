"""Sessions: ``nox`` runs lint, the test suite on every CPU backend, the data-parallel
tests under mpiexec, and the docs build.

``nox -s "tests(backend='cupy')"`` runs the suite on a CUDA GPU machine; ``nox -s mutants``
(not in the default run) runs mutation testing.
"""

from pathlib import Path

import nox

BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "cupy"]
CPU_BACKENDS = [b for b in BACKENDS if b != "cupy"]

nox.options.sessions = [
    "lint",
    *[f"tests(backend='{b}')" for b in CPU_BACKENDS],
    "mpi",
    "docs",
]
nox.options.error_on_missing_interpreters = True


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The test suite on one array library (torch==2.13.0 is installed as the reference)."""
    extras = "test,plot,cuda13" if backend == "cupy" else "test,plot"
    session.install(f".[{extras}]")
    # scikit-learn's estimator checks include the Array API one only with this set
    session.env["SCIPY_ARRAY_API"] = "1"
    # the CPU sessions spread the tests over every core (pytest-xdist; "-- -n 0" for one
    # process); the GPU session runs in one process, which owns the device
    workers = [] if backend == "cupy" else ["-n", "auto"]
    session.run("pytest", f"--backend={backend}", *workers, *session.posargs)


@nox.session
def mpi(session):
    """The data-parallel tests: xpnet train under mpiexec with 2 and 3 processes (MPICH),
    and one process through the sum path of its arrays (tests/test_nccl.py)."""
    session.install(".[test,mpi]")
    session.env["XPNET_MPI_TESTS"] = "1"
    session.run("pytest", "tests/mpi", "tests/test_nccl.py", *session.posargs)


@nox.session
def lint(session):
    """ruff (lint and format), numpydoc's docstring checks and mypy on the package."""
    session.install(".", "ruff==0.17.6", "numpydoc==1.11.0", "mypy==2.4.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    sources = sorted(str(p) for p in Path("xpnet").rglob("*.py"))
    session.run("python", "-m", "numpydoc", "lint", *sources)
    session.run("mypy")


@nox.session
def docs(session):
    """The documentation site, with every warning an error."""
    session.install(".[docs,onnx,sklearn]")  # the API reference imports every module
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def mutants(session):
    """Mutation testing of the library's core with mutmut (configured in pyproject.toml).

    Each mutant runs the tests that call the mutated function; results are kept in
    ``mutants/`` so that a run continues where the last one stopped. Name a part to run
    only its mutants: ``nox -s mutants -- "xpnet.nn.*"``. The survivors are listed at the
    end; ``mutmut show NAME`` prints one.
    """
    session.install(".[test,plot,sklearn,onnx]", "mutmut==3.8.1")
    session.env["SCIPY_ARRAY_API"] = "1"
    session.run("mutmut", "run", "--max-children", "2", *session.posargs)
    session.run("mutmut", "results")
