"""Test configuration: one ``--backend`` option feeds the ``xp`` and ``device`` fixtures.

``--backend numpy`` (default), ``array_api_strict`` (run on its default device and on the
non-default ``device1``, so device bugs show on CPU-only machines), ``torch`` (CPU, and
CUDA when visible), ``jax`` (immutable arrays; 64-bit mode on, as the float64 references
need), ``cupy`` (skipped cleanly without a CUDA device) or ``all``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from xpnet import backend

CHOICES = ("numpy", "array_api_strict", "torch", "jax", "cupy", "all")

# the data-parallel tests start mpiexec; the nox session "mpi" runs them
collect_ignore = [] if os.environ.get("XPNET_MPI_TESTS") else ["mpi"]


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        default="numpy",
        choices=CHOICES,
        help="array library the tests run on (default: numpy)",
    )


def _cases(name):
    """(library, device name) pairs for one backend option."""
    if name == "array_api_strict":
        return [("array_api_strict", None), ("array_api_strict", "device1")]
    if name == "torch":
        cases = [("torch", "cpu")]
        if importlib.util.find_spec("torch") is not None:
            import torch

            if torch.cuda.is_available():
                cases.append(("torch", "cuda"))
        return cases
    return [(name, None)]


def pytest_configure(config):
    if config.getoption("--backend") in ("jax", "all") and importlib.util.find_spec("jax"):
        import jax

        jax.config.update("jax_enable_x64", True)


def pytest_collection_modifyitems(config, items):
    """Under mutmut, a mutant's tests run fastest first, by the durations mutmut measured.

    Its fork server hands them over unordered; see "Mutation testing" in the contributing
    docs for why the order matters and how its run without a mutant checks it.
    """
    stats = Path("mutmut-stats.json")  # the run's working folder is mutants/
    if "MUTANT_UNDER_TEST" not in os.environ or not stats.is_file():
        return
    duration = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: duration.get(item.nodeid, 0.0))


def pytest_generate_tests(metafunc):
    if "backend_case" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--backend")
        names = [c for c in CHOICES if c != "all"] if chosen == "all" else [chosen]
        cases = [case for name in names for case in _cases(name)]
        ids = [lib if dev is None else f"{lib}-{dev}" for lib, dev in cases]
        metafunc.parametrize("backend_case", cases, ids=ids)


@pytest.fixture
def backend_case(request):
    return request.param


@pytest.fixture
def xp(backend_case):
    """The Array API namespace under test."""
    lib, _ = backend_case
    if importlib.util.find_spec(lib) is None:
        pytest.skip(f"{lib} is not installed")
    if lib == "cupy" and "cupy" not in backend.available():
        pytest.skip("cupy: no CUDA device visible")
    return backend.get(lib)


@pytest.fixture
def device(xp, backend_case):
    """The device under test (None: the library default)."""
    _, dev = backend_case
    return backend.resolve_device(xp, dev)
