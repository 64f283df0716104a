"""Shared test helpers: array construction on the backend under test and one
``assert_close`` that checks namespace, dtype and shape before values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from xpnet import backend

# dtype name -> (rtol, atol)
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (2e-5, 1e-6)}


def asarray(xp, device, value, dtype="float64"):
    """``value`` (anything NumPy accepts) as an ``xp`` array on ``device``."""
    host = np.asarray(value)
    if dtype is not None:
        host = host.astype(dtype)
    return xp.asarray(host, device=device)


def to_numpy(x):
    return backend.to_numpy(x)


def assert_close(actual, expected, *, xp=None, dtype=None, rtol=None, atol=None):
    """Assert ``actual`` is an ``xp`` array of ``dtype`` shaped like ``expected``, with
    values within dtype-aware tolerances of ``expected`` (any array, compared on the host).
    """
    if xp is not None:
        got = backend.library_name(backend.namespace(actual))
        want = backend.library_name(xp)
        assert got == want, f"namespace: got a {got} array, expected {want}"
    expected = np.asarray(
        to_numpy(expected) if not isinstance(expected, (list, float, int)) else expected
    )
    name = backend.dtype_name(actual.dtype)
    if dtype is not None:
        assert name == backend.dtype_name(dtype), f"dtype: got {name}, expected {dtype}"
    assert tuple(actual.shape) == expected.shape, (
        f"shape: got {tuple(actual.shape)}, expected {expected.shape}"
    )
    default_rtol, default_atol = TOLERANCES.get(name, TOLERANCES["float32"])
    np.testing.assert_allclose(
        to_numpy(actual),
        expected,
        rtol=default_rtol if rtol is None else rtol,
        atol=default_atol if atol is None else atol,
    )


def run_cli(*args, cwd=None):
    """``python -m xpnet ARGS`` in a subprocess; the CompletedProcess with text output."""
    return subprocess.run(
        [sys.executable, "-m", "xpnet", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
