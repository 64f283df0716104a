"""Checkpoints that run anywhere: safetensors arrays plus JSON metadata, no pickle.

A checkpoint holds the model's ``state_dict`` (float32/float64 arrays by key) and, in the
header's metadata, a JSON document with the architecture, dtype, xpnet version, the
backend and device it was trained on, library versions, a SHA-256 of the array bytes and
a *probe*: a few inputs with the outputs the model gave for them when it was saved.
:func:`load` rebuilds the model on any backend, checks the hash, re-runs the probe and
refuses the file when the outputs differ beyond a dtype-aware tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from . import backend
from ._safetensors import FormatError, assemble, decode, pack
from .models import MLP, MLP0, MLP1, MLP4

__all__ = ["PROBE_TOLERANCE", "CheckpointError", "load", "load_all", "read_metadata", "save"]

FORMAT = "xpnet-checkpoint/1"
_CLASSES = {cls.__name__: cls for cls in (MLP, MLP0, MLP1, MLP4)}
#: dtype -> (rtol, atol) for the probe: float32 leaves room for another BLAS's rounding.
PROBE_TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-9, 1e-12)}


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used; the message says why."""


def _versions(lib):
    names = ["numpy", "array-api-compat"] + ([lib.replace("_", "-")] if lib != "numpy" else [])
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = None
    if lib == "cupy":
        import cupy

        found["cupy"] = cupy.__version__
    return found


def _probe_inputs(model, probe):
    if probe is None:
        rng = np.random.default_rng(0)
        probe = rng.standard_normal((4, model.sizes[0]))
    return backend.to_numpy(probe).astype(backend.dtype_name(model.dtype))


def _run_probe(model, inputs):
    was_training = model.training
    model.eval()
    try:
        xp = model.xp
        out = model.forward(xp.asarray(inputs, device=model.device))
    finally:
        model.train(was_training)
    return backend.to_numpy(out).astype(np.float64)


def save(model, path, *, metadata=None, probe=None, extra_tensors=None):
    """Write ``model`` to ``path`` (a ``.safetensors`` file), atomically.

    Parameters
    ----------
    model : MLP
        Any :class:`~xpnet.models.MLP` (or MLP0/MLP1/MLP4) on any backend.
    path : str or Path
        Destination; its folder must exist. The file is written to a temporary file in
        the same folder and renamed over ``path`` only when complete, so a failed save
        leaves a previous checkpoint intact.
    metadata : dict, optional
        JSON-serialisable information stored under ``"user"`` (dataset, classes, ...).
    probe : array, optional
        ``(n, sizes[0])`` inputs for the probe; default 4 seeded standard-normal rows.
    extra_tensors : dict, optional
        More float arrays to store (e.g. optimizer buffers, keys ``"optimizer.*"``).
    """
    path = Path(path)
    tensors = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        tensors[key] = backend.to_numpy(value)
    inputs = _probe_inputs(model, probe)
    outputs = _run_probe(model, inputs)
    lib, dev = backend.placement(model.layers[0].W)
    entries, data = pack(tensors)  # the data section exactly as written, for its hash
    from . import __version__

    info = {
        "format": FORMAT,
        "architecture": model.config(),
        "dtype": backend.dtype_name(model.dtype),
        "xpnet_version": __version__,
        "trained_on": {"backend": lib, "device": str(dev)},
        "versions": _versions(lib),
        "probe": {"inputs": inputs.tolist(), "outputs": outputs.tolist()},
        "sha256": hashlib.sha256(data).hexdigest(),
        "user": metadata if metadata is not None else {},
    }
    _atomic_write(path, assemble(entries, data, {"xpnet": json.dumps(info)}))
    return path


def _atomic_write(path, blob):
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read(path):
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    try:
        tensors, header_meta, data = decode(blob)
    except FormatError as err:
        raise CheckpointError(f"{path}: not a valid checkpoint: {err}") from None
    if "xpnet" not in header_meta:
        raise CheckpointError(f"{path}: a safetensors file without xpnet metadata")
    try:
        info = json.loads(header_meta["xpnet"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: xpnet metadata is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {found!r}, expected {FORMAT!r}"
        )
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(
            f"{path}: array data do not match the checksum recorded at save time; the file "
            f"is corrupted or was modified"
        )
    return tensors, info


def read_metadata(path) -> dict:
    """The checkpoint's metadata (architecture, dtype, versions, probe, user data)."""
    return _read(path)[1]


def load(path, *, xp="numpy", device=None):
    """Rebuild the model saved at ``path`` on backend ``xp`` and ``device``, in eval mode.

    The arrays keep their saved dtype. After loading, the probe inputs are run and the
    outputs compared with the saved ones (tolerances :data:`PROBE_TOLERANCE`).

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupted, wrong-format, wrong-architecture or tampered file,
        or outputs that differ from the probe.
    """
    return load_all(path, xp=xp, device=device)[0]


def load_all(path, *, xp="numpy", device=None):
    """``(model, extra tensors, metadata)``: :func:`load` plus the arrays stored with
    ``extra_tensors`` (host NumPy arrays by key) and the metadata."""
    tensors, info = _read(path)
    arch = info.get("architecture") or {}
    cls = _CLASSES.get(arch.get("class"))
    dtype = info.get("dtype")
    if cls is None or dtype not in PROBE_TOLERANCE:
        raise CheckpointError(f"{path}: unknown architecture {arch!r} or dtype {dtype!r}")
    kwargs = {"activation": arch.get("activation", "relu"), "batchnorm": arch.get("batchnorm")}
    try:
        if cls is MLP:
            model = cls(arch["sizes"], xp=xp, device=device, dtype=dtype, **kwargs)
        else:
            model = cls(xp=xp, device=device, dtype=dtype, **kwargs)
        keys = set(model.state_dict())
        model.load_state_dict({k: v for k, v in tensors.items() if k in keys}, strict=False)
        missing = sorted(keys - set(tensors))
        if missing:
            raise ValueError(f"missing arrays {missing}")
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: arrays do not fit the recorded architecture: {err}"
        ) from None
    model.eval()
    probe = info.get("probe") or {}
    try:
        inputs = np.asarray(probe["inputs"], dtype=dtype)
        expected = np.asarray(probe["outputs"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: the probe batch is missing or malformed") from None
    if inputs.ndim != 2 or inputs.shape[1] != model.sizes[0]:
        raise CheckpointError(f"{path}: probe inputs have shape {inputs.shape}")
    got = _run_probe(model, inputs)
    rtol, atol = PROBE_TOLERANCE[dtype]
    if got.shape != expected.shape or not np.all(
        np.abs(got - expected) <= atol + rtol * np.abs(expected)
    ):
        diff = np.max(np.abs(got - expected)) if got.shape == expected.shape else float("nan")
        raise CheckpointError(
            f"{path}: the model's outputs on the saved probe batch differ from the recorded "
            f"ones (max difference {diff:.3g}, tolerance {rtol:g} relative + {atol:g}); "
            f"the file was modified or the backend computes differently"
        )
    extras = {k: v for k, v in tensors.items() if k not in keys}
    return model, extras, info
