"""Shared test helpers: array construction on the backend under test and one
``assert_close`` that checks namespace, dtype and shape before values."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tracemalloc
import types

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


def mutated_bytes(data, pristine, *, heads, alphabet):
    """``pristine`` after 1 to 4 random edits drawn from Hypothesis's ``data``: byte flips,
    bytes set from ``alphabet``, truncation, insertion and deletion, at positions drawn
    below one of ``heads`` (to favour the headers) or anywhere."""
    from hypothesis import strategies as st

    blob = bytearray(pristine)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        limit = data.draw(st.sampled_from([*heads, len(blob)]))
        at = data.draw(st.integers(0, max(0, min(limit, len(blob)) - 1)))
        if kind == "flip" and blob:
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and blob:
            blob[at] = data.draw(st.sampled_from(alphabet))
        elif kind == "truncate":
            del blob[at:]
        elif kind == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif blob:
            del blob[at : at + data.draw(st.integers(1, 8))]
    return bytes(blob)


class OneProcess:
    """A communicator of one process: every sum is the process's own value."""

    rank, size = 0, 1

    def allreduce_sum(self, x):
        return x * 1


def rst_python_blocks(path):
    """The ``.. code-block:: python`` blocks of a reStructuredText page, dedented."""
    import textwrap

    blocks, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith("   "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n") + "\n")
    return blocks


def strict_devices():
    """array-api-strict and two of its devices, ``(module, default, other)``: a device
    argument dropped or ignored shows there in every session, where the NumPy session
    has one device only. Skips when array-api-strict is not installed."""
    import pytest

    strict = pytest.importorskip("array_api_strict")
    info = strict.__array_namespace_info__()
    default = info.default_device()
    return strict, default, next(d for d in info.devices() if d != default)


def other_library(xp):
    """A second Array API library beside ``xp``'s, for the refusals of mixed libraries:
    array-api-strict beside NumPy, NumPy beside any other (skips if it is missing)."""
    import pytest

    other = "array_api_strict" if backend.library_name(xp) == "numpy" else "numpy"
    pytest.importorskip(other)
    return backend.get(other)


@contextlib.contextmanager
def traced_peak():
    """Trace the allocations of the ``with`` block (Python's and NumPy's); after it,
    ``peak.bytes`` is the most held at once."""
    peak = types.SimpleNamespace(bytes=None)
    tracemalloc.start()
    try:
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
