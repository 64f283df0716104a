"""The package keeps one direction: the application on top of the library, the array
libraries named only in ``xpnet/backend``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xpnet"
APP = PACKAGE / "app"
ENTRY = PACKAGE / "__main__.py"  # ``python -m xpnet``, the command line
LIBRARY = [p for p in PACKAGE.rglob("*.py") if APP not in p.parents and p != ENTRY]


def _imports(path):
    """Every module name a file imports, resolved to absolute ``xpnet.…`` names."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_never_imports_the_application(path):
    bad = [n for n in _imports(path) if n == "xpnet.app" or n.startswith("xpnet.app.")]
    assert not bad, f"{path.name} imports {bad}"
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "print" not in calls, f"{path.name} prints"
    assert "argparse" not in {n.split(".")[0] for n in _imports(path)}


NAMING_NO_LIBRARY = [
    p for p in LIBRARY if p.parent.name in ("nn", "optim") or p.name == "models.py"
]


@pytest.mark.parametrize("path", NAMING_NO_LIBRARY, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layers_models_optimizers_name_no_array_library(path):
    roots = {n.split(".")[0] for n in _imports(path)}
    assert not roots & {"numpy", "cupy", "torch", "array_api_strict"}, path.name


def test_the_layout_is_what_this_test_expects():
    assert len(LIBRARY) > 20 and len(NAMING_NO_LIBRARY) >= 9
    assert {p.name for p in APP.glob("*.py")} >= {"cli.py", "runs.py", "bench.py", "peers.py"}


def test_the_installed_distribution():
    """The package carries its typing marker and license, and the version is one."""
    from importlib import metadata, resources

    import xpnet

    try:
        dist = metadata.distribution("xpnet")
    except metadata.PackageNotFoundError:  # run from a source tree (the GPU check does)
        pytest.skip("xpnet is imported from a source tree, not an installed distribution")
    assert dist.version == xpnet.__version__
    assert resources.files("xpnet").joinpath("py.typed").is_file()
    assert "LICENSE" in (dist.metadata.get_all("License-File") or [])
    assert dist.metadata["License-Expression"] == "MIT"


def _app_module_graph():
    """Which of the application's modules each of them imports (at the top or inside a
    function: either way the two cannot be read apart)."""
    modules = {p.stem: p for p in APP.glob("*.py") if p.stem != "__init__"}
    return {
        name: {
            other
            for imported in _imports(path)
            for other in modules
            if other != name
            and (imported == f"xpnet.app.{other}" or imported.startswith(f"xpnet.app.{other}."))
        }
        for name, path in modules.items()
    }


def test_the_application_has_no_import_cycle():
    graph = _app_module_graph()
    assert {"cli", "config", "folders", "runs", "resume", "evaluation", "bench"} <= set(graph)

    def reaches(start, goal, seen):
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in graph[start]
        )

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert not cycles, f"modules on an import cycle: {cycles}"


EQUATIONS = [*(PACKAGE / "nn").glob("*.py"), PACKAGE / "models.py"]
EQUATIONS += (PACKAGE / "optim").glob("*.py")


@pytest.mark.parametrize("path", EQUATIONS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_layers_know_nothing_of_processes(path):
    """Data-parallel training lives beneath the model (xpnet.distributed: a synchronised
    BatchNorm swapped in, sharded dropout, the gradient sum); the layers, the model and the
    optimizers do not name it, in code or in words."""
    words = r"\b(mpi\w*|nccl|communicators?|comm|allreduce\w*|all-reduce|shards?|world_size)\b"
    found = sorted(set(re.findall(words, path.read_text(), flags=re.IGNORECASE)))
    assert not found, f"{path.name} names {found}"


@pytest.mark.parametrize("path", EQUATIONS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_layers_know_nothing_of_the_fast_paths(path):
    """The fused kernels, CuPy and CUDA graphs are executors beneath the model
    (xpnet.fused, xpnet.backend); the layers, the model and the optimizers do not name
    them, in code or in words (NumPy stays: the examples and the host's random draws)."""
    words = r"\b(fused|fuse|kernels?|cupy|cuda|cublas|gpus?)\b"
    found = sorted(set(re.findall(words, path.read_text(), flags=re.IGNORECASE)))
    assert not found, f"{path.name} names {found}"
