"""Checkpoints that run anywhere: safetensors arrays plus JSON metadata, no pickle.

A checkpoint holds the model's ``state_dict`` (float32/float64 arrays by key) and, in the
header's metadata, a JSON document with the architecture, dtype, xpnet version, the
backend and device it was trained on, library versions, a SHA-256 of the array bytes and
a *probe*: a few inputs with the outputs the model gave for them when it was saved. A
second SHA-256 (``xpnet_sha256`` beside the document) covers the document's exact text and
the arrays' names, dtypes, shapes and offsets, so that no byte of the file can change
unnoticed. :func:`load` checks both hashes before it reads any field, rebuilds the model
on any backend, re-runs the probe and refuses the file when the outputs differ beyond a
dtype-aware tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np

from . import backend
from ._io import NotRegularFileError, atomic_write, open_regular
from ._safetensors import FormatError, assemble, decode, header_length, layout, pack
from ._typing import Array, Device, Namespace
from .errors import CheckpointError, CheckpointNotFoundError, XpnetValueError
from .models import ACTIVATIONS, INITS, MLP, MLP0, MLP1, MLP4

__all__ = [
    "PROBE_TOLERANCE",
    "CheckpointError",
    "CheckpointNotFoundError",
    "load",
    "load_all",
    "read_metadata",
    "save",
]

#: The format :func:`save` writes. Version 2 models take raw features (a model that scales
#: its inputs carries a Standardize layer); version 1, still read, came from xpnet versions
#: whose ``xpnet train`` scaled the built-in datasets before the model saw them
#: (:data:`LEGACY_FORMATS`).
FORMAT = "xpnet-checkpoint/2"
#: Formats :func:`load` still reads. Their files have no ``xpnet_sha256``: only their arrays
#: are covered by a hash, their metadata (classes, architecture) is not.
LEGACY_FORMATS = ("xpnet-checkpoint/1",)
_CLASSES = {cls.__name__: cls for cls in (MLP, MLP0, MLP1, MLP4)}
#: dtype -> (rtol, atol) for the probe: float32 leaves room for another BLAS's rounding.
PROBE_TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-9, 1e-12)}


def _versions(lib):
    found = {"python": platform.python_version(), "array-api-compat": backend.compat_version()}
    for name in dict.fromkeys(("numpy", lib)):
        found[name.replace("_", "-")] = backend.library_version(name)
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


def save(
    model: MLP,
    path: str | os.PathLike,
    *,
    metadata: dict | None = None,
    probe: Array | None = None,
    extra_tensors: dict[str, Array] | None = None,
) -> Path:
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
        ``(n, sizes[0])`` inputs for the probe, ``n`` at most :data:`MAX_PROBE_ROWS`;
        default 4 seeded standard-normal rows.
    extra_tensors : dict, optional
        More float arrays to store (e.g. optimizer buffers, keys ``"optimizer.*"``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    XpnetValueError
        A probe of more than :data:`MAX_PROBE_ROWS` rows, or metadata too large for the
        header a checkpoint may have (16 MB, a million JSON values).
    """
    path = Path(path)
    tensors = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        tensors[key] = backend.to_numpy(value)
    inputs = _probe_inputs(model, probe)
    if inputs.ndim != 2 or not 1 <= inputs.shape[0] <= MAX_PROBE_ROWS:
        raise XpnetValueError(
            f"probe must be (n, {model.sizes[0]}) inputs with 1 <= n <= {MAX_PROBE_ROWS}, got "
            f"shape {inputs.shape}"
        )
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
    document = json.dumps(info)
    header = {"xpnet": document, "xpnet_sha256": _header_sha256(entries, document)}
    atomic_write(path, assemble(entries, data, header))
    return path


def _header_sha256(entries, document):
    """SHA-256 of the metadata document's text and the arrays' layout (names, dtypes,
    shapes, offsets in file order); the document holds the hash of the arrays' bytes."""
    text = json.dumps(entries, separators=(",", ":")) + "\n" + document
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_regular_file(path):
    """The bytes of ``path``, read only if it is a regular file (a FIFO or a device such
    as ``/dev/zero`` would never end)."""
    try:
        with open_regular(path) as fh:
            # the header's length, checked before the rest is read
            header_length(fh.read(8), os.fstat(fh.fileno()).st_size)
            fh.seek(0)
            return fh.read()
    except FormatError as err:
        raise CheckpointError(f"{path}: not a valid checkpoint: {err}") from None
    except NotRegularFileError:
        raise CheckpointError(f"{path}: not a regular file, so not a checkpoint") from None
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{path}: no such checkpoint", filename=str(path)) from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None


def _read(path):
    """``(tensors, info)`` of a checkpoint whose format, hashes and metadata are checked."""
    path = Path(path)
    blob = _read_regular_file(path)
    try:
        tensors, header_meta, data = decode(blob)
    except FormatError as err:
        raise CheckpointError(f"{path}: not a valid checkpoint: {err}") from None
    if "xpnet" not in header_meta:
        raise CheckpointError(f"{path}: a safetensors file without xpnet metadata")
    document = header_meta["xpnet"]
    recorded = header_meta.get("xpnet_sha256")
    if recorded is not None and recorded != _header_sha256(layout(tensors), document):
        raise CheckpointError(
            f"{path}: the metadata or the arrays' names, shapes or offsets do not match the "
            f"checksum recorded at save time (xpnet_sha256); the file was modified"
        )
    try:
        info = json.loads(document)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: xpnet metadata is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") not in (FORMAT, *LEGACY_FORMATS):
        found = info.get("format") if isinstance(info, dict) else None
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {found!r}, expected {FORMAT!r}"
        )
    if recorded is None and info["format"] == FORMAT:
        raise CheckpointError(
            f"{path}: the metadata's checksum (xpnet_sha256) is missing; the file was modified"
        )
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(
            f"{path}: array data do not match the checksum recorded at save time; the file "
            f"is corrupted or was modified"
        )
    if not isinstance(info.get("user", {}), dict):
        raise CheckpointError(f"{path}: metadata field 'user' must be a JSON object")
    return tensors, info


def read_metadata(path: str | os.PathLike) -> dict:
    """The checkpoint's metadata (architecture, dtype, versions, probe, user data).

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save`.

    Returns
    -------
    dict
        The JSON document stored in the file's header.

    Raises
    ------
    CheckpointNotFoundError
        The file does not exist (also a ``FileNotFoundError``).
    CheckpointError
        The file is not an xpnet checkpoint, or its arrays do not match their checksum.
    """
    return _read(path)[1]


def load(path: str | os.PathLike, *, xp: Namespace = "numpy", device: Device = None) -> MLP:
    """Rebuild the model saved at ``path`` on backend ``xp`` and ``device``, in eval mode.

    Before anything sized by the file's metadata is allocated, the recorded architecture
    is checked field by field and compared with the shapes of the stored arrays, so a
    crafted file cannot make loading allocate more than a small multiple of its own size.
    The arrays keep their saved dtype. After loading, the probe inputs are run and the
    outputs compared with the saved ones as :func:`numpy.allclose` compares them, with the
    tolerances of :data:`PROBE_TOLERANCE`.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save`.
    xp : str or namespace
        The array library to load onto (default NumPy).
    device : optional
        Its device (library default when None).

    Returns
    -------
    MLP
        The model, in evaluation mode.

    Raises
    ------
    CheckpointNotFoundError
        The file does not exist (also a ``FileNotFoundError``).
    CheckpointError
        Truncated, corrupted, wrong-format, malformed (the message names the metadata
        field), wrong-architecture or tampered file, non-finite parameters, or outputs
        that differ from the probe.
    """
    return load_all(path, xp=xp, device=device)[0]


#: The most probe rows a checkpoint may hold (``save`` writes 4, ``xpnet train`` 8).
MAX_PROBE_ROWS = 64


def _architecture(info, tensors, path):
    """``(class, constructor kwargs, dtype, state shapes, sizes)`` from checked metadata.

    Every field of the recorded architecture is checked against the stored arrays;
    nothing is allocated.
    """

    def _bad(field, problem):
        """A CheckpointError that names the metadata field."""
        return CheckpointError(f"{path}: metadata field {field!r} {problem}")

    dtype = info.get("dtype")
    if not isinstance(dtype, str) or dtype not in PROBE_TOLERANCE:
        raise _bad("dtype", f"must be one of {list(PROBE_TOLERANCE)}, got {dtype!r}")
    arch = info.get("architecture")
    if not isinstance(arch, dict):
        raise _bad("architecture", f"must be a JSON object, got {type(arch).__name__}")
    cls = _CLASSES.get(arch.get("class")) if isinstance(arch.get("class"), str) else None
    if cls is None:
        raise _bad(
            "architecture.class", f"must be one of {list(_CLASSES)}, got {arch.get('class')!r}"
        )
    activation = arch.get("activation", "relu")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise _bad(
            "architecture.activation", f"must be one of {list(ACTIVATIONS)}, got {activation!r}"
        )
    batchnorm = arch.get("batchnorm", False)
    if not isinstance(batchnorm, bool):
        raise _bad("architecture.batchnorm", f"must be true or false, got {batchnorm!r}")
    standardize = arch.get("standardize", False)
    if not isinstance(standardize, bool):
        raise _bad("architecture.standardize", f"must be true or false, got {standardize!r}")
    kwargs = {"activation": activation, "batchnorm": batchnorm, "standardize": standardize}
    init = arch.get("init", "default")
    if not isinstance(init, str) or (init != "default" and init not in INITS):
        raise _bad("architecture.init", f"must be default or one of {list(INITS)}, got {init!r}")
    dropout = arch.get("dropout", 0.0)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout < 1.0
    ):
        raise _bad("architecture.dropout", f"must be a number in [0, 1), got {dropout!r}")
    kwargs.update(init=init, dropout=float(dropout))
    if cls is MLP:
        sizes = arch.get("sizes")
        if (
            not isinstance(sizes, list)
            or len(sizes) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes)
        ):
            shown = (
                sizes if not isinstance(sizes, list) or len(sizes) <= 8 else f"{len(sizes)} entries"
            )
            raise _bad(
                "architecture.sizes", f"must be a list of at least two positive ints, got {shown}"
            )
        if len(sizes) - 1 > len(tensors):
            raise _bad(
                "architecture.sizes",
                f"describes {len(sizes) - 1} layers but the file stores only {len(tensors)} arrays",
            )
        kwargs["sizes"] = sizes
    else:
        sizes = list(cls._sizes)
    shapes = cls.state_shapes(sizes, batchnorm=batchnorm, standardize=standardize)
    for key, shape in shapes.items():
        stored = tensors.get(key)
        if stored is None:
            raise _bad("architecture", f"describes array {key!r}, which the file does not store")
        if tuple(stored.shape) != shape:
            raise _bad(
                "architecture",
                f"expects {key!r} of shape {shape}, the file stores {tuple(stored.shape)}",
            )
        if stored.dtype != np.dtype(dtype):
            raise _bad("dtype", f"is {dtype} but {key!r} is stored as {stored.dtype}")
        if not np.all(np.isfinite(stored)):
            raise CheckpointError(f"{path}: array {key!r} holds NaN or infinite values")
    return cls, kwargs, dtype, shapes, sizes


def _probe(info, sizes, dtype, path):
    """The probe's ``(inputs, expected outputs)`` after checking their shapes and values."""
    probe = info.get("probe")
    if not isinstance(probe, dict):
        raise CheckpointError(f"{path}: metadata field 'probe' is missing or not an object")
    n_in, n_out = sizes[0], sizes[-1]
    arrays = []
    for key, width in (("inputs", n_in), ("outputs", n_out)):
        value = probe.get(key)
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise CheckpointError(
                f"{path}: metadata field 'probe.{key}' must be a list of rows of numbers"
            ) from None
        rows = arrays[0].shape[0] if arrays else None
        if array.ndim != 2 or array.shape[1] != width or not 1 <= array.shape[0] <= MAX_PROBE_ROWS:
            raise CheckpointError(
                f"{path}: metadata field 'probe.{key}' must have shape (n, {width}) with "
                f"1 <= n <= {MAX_PROBE_ROWS}, got {array.shape}"
            )
        if rows is not None and array.shape[0] != rows:
            raise CheckpointError(
                f"{path}: metadata field 'probe.outputs' has {array.shape[0]} rows, "
                f"'probe.inputs' {rows}"
            )
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused
            finite = np.all(np.isfinite(array.astype(dtype)))
        if not finite:
            raise CheckpointError(
                f"{path}: metadata field 'probe.{key}' holds NaN, infinity or a value "
                f"beyond {dtype}"
            )
        arrays.append(array)
    return arrays[0].astype(dtype), arrays[1]


def load_all(
    path: str | os.PathLike, *, xp: Namespace = "numpy", device: Device = None
) -> tuple[MLP, dict[str, np.ndarray], dict]:
    """:func:`load` plus the other stored arrays and the metadata.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save`.
    xp : str or namespace
        The array library to load onto (default NumPy).
    device : optional
        Its device (library default when None).

    Returns
    -------
    model : MLP
        As :func:`load` returns it.
    extras : dict of str to numpy.ndarray
        The arrays stored with ``extra_tensors`` (host NumPy arrays by key).
    info : dict
        The metadata, as :func:`read_metadata` returns it.

    Raises
    ------
    CheckpointNotFoundError, CheckpointError
        As for :func:`load`.
    """
    tensors, info = _read(path)
    cls, kwargs, dtype, shapes, sizes = _architecture(info, tensors, path)
    inputs, expected = _probe(info, sizes, dtype, path)
    model = cls(xp=xp, device=device, dtype=dtype, **kwargs)  # an MLP's sizes are in kwargs
    model.load_state_dict({k: tensors[k] for k in shapes})
    model.eval()
    with backend.quiet_float_errors(model.xp):  # an overflowing probe fails the comparison
        got = _run_probe(model, inputs)
    rtol, atol = PROBE_TOLERANCE[dtype]
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        diff = np.max(np.abs(got - expected))
        raise CheckpointError(
            f"{path}: the model's outputs on the saved probe batch differ from the recorded "
            f"ones (max difference {diff:.3g}, tolerance {rtol:g} relative + {atol:g}); "
            f"the file was modified or the backend computes differently"
        )
    extras = {k: v for k, v in tensors.items() if k not in shapes}
    return model, extras, info
