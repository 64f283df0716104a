"""Cross-backend parity: the same seeded model and batches on every backend.

Each backend's outputs, gradients, parameters and losses are compared with NumPy's after
forward, backward and a number of SGD steps.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .errors import XpnetValueError
from .executors import make_step
from .models import MLP
from .nn import CrossEntropyLoss
from .optim import SGD

__all__ = ["TOLERANCE", "format_table", "run_parity"]

#: dtype -> largest accepted relative difference from NumPy.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
SIZES = [20, 32, 16, 5]
BATCH = 64


def _relative(arrays, references):
    """max |a - b| / max |b| over a group of arrays (0 when all are zero).

    Normwise over the whole group: a bias followed by BatchNorm has a gradient that is
    zero up to rounding, and its own relative difference would measure only noise.
    """
    diff = scale = 0.0
    for a, b in zip(arrays, references, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if b.size:
            diff = max(diff, float(np.max(np.abs(a - b))))
            scale = max(scale, float(np.max(np.abs(b))))
    return diff / scale if scale > 0 else diff


def _trace(name, device, dtype, steps, seed):
    """Everything parity compares, as host arrays, for one backend."""
    xp = backend.get(name)
    device = backend.resolve_device(xp, device)
    model = MLP(SIZES, batchnorm=True, xp=xp, device=device, dtype=dtype, seed=seed)
    loss = CrossEntropyLoss()
    step = make_step(model, loss, SGD(model, lr=0.05, momentum=0.9))
    rng = np.random.default_rng(seed)
    out = {"outputs": [], "gradients": [], "losses": []}
    for k in range(steps):
        X = xp.asarray(rng.standard_normal((BATCH, SIZES[0])).astype(dtype), device=device)
        y = xp.asarray(rng.integers(0, SIZES[-1], BATCH), device=device)
        logits, L = step.forward(X, y)
        dX = step.backward(input_grad=True)
        if k == 0:
            out["outputs"] = [backend.to_numpy(logits)]
            out["gradients"] = [backend.to_numpy(dX)] + [
                backend.to_numpy(param.grad) for _, param in model.named_parameters()
            ]
        step.update()
        out["losses"].append(float(L))
    out["parameters"] = [backend.to_numpy(v) for v in model.state_dict().values()]
    return out, backend.device_name(model.device)


def run_parity(
    backends: list[str] | None = None, *, steps: int = 20, dtype: str = "float64", seed: int = 0
) -> list[dict]:
    """Compare every backend with NumPy.

    Parameters
    ----------
    backends : list of str, optional
        Library names (default: every backend usable here); NumPy is always first.
    steps : int
        SGD steps of the comparison.
    dtype : str
        ``"float64"`` or ``"float32"``.
    seed : int
        Seeds the model and the batches.

    Returns
    -------
    list of dict
        One result per backend: ``backend``, ``device``, the relative differences
        ``outputs``, ``gradients``, ``parameters`` and ``losses`` (each normwise over its
        group of arrays: ``max |a - b| / max |b|``), ``tolerance`` and ``ok``; a backend that
        cannot run has ``error`` instead.

    Raises
    ------
    XpnetValueError
        An unknown dtype.
    """
    if dtype not in TOLERANCE:
        raise XpnetValueError(f"dtype must be one of {', '.join(TOLERANCE)}, got {dtype!r}")
    if backends is None:
        backends = backend.available()
    names = ["numpy"] + [b for b in backends if b != "numpy"]
    reference, _ = _trace("numpy", None, dtype, steps, seed)
    tol = TOLERANCE[dtype]
    results = []
    for name in names:
        try:
            trace, device = _trace(name, None, dtype, steps, seed)
        except (ImportError, RuntimeError, XpnetValueError) as err:  # e.g. JAX without float64
            results.append({"backend": name, "error": str(err), "ok": False, "tolerance": tol})
            continue
        row = {"backend": name, "device": device}
        for key in ("outputs", "gradients", "parameters"):
            row[key] = _relative(trace[key], reference[key])
        row["losses"] = _relative([trace["losses"]], [reference["losses"]])
        row["tolerance"] = tol
        row["ok"] = all(row[k] <= tol for k in ("outputs", "gradients", "parameters", "losses"))
        results.append(row)
    return results


def format_table(results: list[dict], *, steps: int, dtype: str) -> str:
    """The results of :func:`run_parity` as a text table.

    Parameters
    ----------
    results : list of dict
        As :func:`run_parity` returns them.
    steps : int
        The steps they were run for.
    dtype : str
        Their dtype.

    Returns
    -------
    str
        A heading and one line per backend.
    """
    head = (
        f"parity with numpy: MLP {SIZES} with BatchNorm, batch {BATCH}, {steps} SGD steps, "
        f"{dtype}\nmax |x - x_numpy| / max |x_numpy| per group; tolerance {TOLERANCE[dtype]:g}"
    )
    cols = ("backend", "device", "outputs", "gradients", "parameters", "losses", "status")
    lines = [head, f"{cols[0]:<18}{cols[1]:<14}" + "".join(f"{c:>12}" for c in cols[2:])]
    for r in results:
        if "error" in r:
            lines.append(f"{r['backend']:<18}{'-':<14}  unavailable: {r['error']}")
            continue
        cells = "".join(f"{r[k]:>12.2e}" for k in ("outputs", "gradients", "parameters", "losses"))
        status = "ok" if r["ok"] else "FAIL"
        lines.append(f"{r['backend']:<18}{r['device']:<14}{cells}{status:>12}")
    return "\n".join(lines)
