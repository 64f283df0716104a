"""Checkpoints: round trips across backends, the safetensors format, and refusal of
truncated, corrupted, wrong-format, wrong-architecture and tampered files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import asarray, assert_close, strict_devices
from xpnet import backend
from xpnet._safetensors import assemble, decode, pack
from xpnet.checkpoint import (
    MAX_PROBE_ROWS,
    CheckpointError,
    _header_sha256,
    load,
    read_metadata,
    save,
)
from xpnet.models import MLP, MLP4


def _trained(xp, device, dtype="float64"):
    from xpnet.nn import CrossEntropyLoss
    from xpnet.optim import SGD

    rng = np.random.default_rng(0)
    model = MLP(
        [6, 10, 4], batchnorm=True, activation="gelu", xp=xp, device=device, dtype=dtype, seed=3
    )
    loss, opt = CrossEntropyLoss(), SGD(model, lr=0.1, momentum=0.9)
    for _ in range(3):
        X = asarray(xp, device, rng.standard_normal((16, 6)), dtype)
        y = asarray(xp, device, rng.integers(0, 4, 16), "int64")
        loss.forward(model.forward(X), y)
        model.backward(loss.backward())
        opt.step()
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("target", ["numpy", "array_api_strict", "torch"])
def test_round_trip_across_backends(tmp_path, xp, device, dtype, target):
    pytest.importorskip(target)
    model = _trained(xp, device, dtype)
    path = save(model, tmp_path / "m.safetensors", metadata={"note": "hello"})
    restored = load(path, xp=target)
    txp = backend.get(target)
    assert not restored.training and restored.config() == model.config()
    X = np.random.default_rng(1).standard_normal((5, 6))
    expected = backend.to_numpy(model.eval().forward(asarray(xp, device, X, dtype)))
    got = restored.forward(txp.asarray(X.astype(dtype)))
    assert_close(got, expected, xp=txp, dtype=dtype)
    meta = read_metadata(path)
    lib, dev = backend.placement(model.layers[0].W)
    assert meta["trained_on"] == {"backend": lib, "device": dev}
    assert meta["dtype"] == dtype and meta["user"] == {"note": "hello"}
    assert meta["architecture"] == {
        "class": "MLP",
        "sizes": [6, 10, 4],
        "activation": "gelu",
        "batchnorm": True,
    }
    assert {"python", "numpy", "array-api-compat"} <= set(meta["versions"])


@pytest.mark.parametrize("lib", ["numpy", "array_api_strict"])
def test_save_records_the_versions_it_ran_with(tmp_path, lib):
    """The versions recorded are xpnet's, and exactly Python's, array-api-compat's, NumPy's
    and the model's library's, under its distribution name (array-api-strict, with a
    hyphen)."""
    from importlib.metadata import version
    from platform import python_version

    import xpnet

    pytest.importorskip(lib)
    meta = read_metadata(save(MLP([3, 2], xp=lib), tmp_path / "m.safetensors"))
    assert meta["xpnet_version"] == xpnet.__version__
    expected = {
        "python": python_version(),
        "array-api-compat": version("array-api-compat"),
        "numpy": version("numpy"),
    }
    expected[lib.replace("_", "-")] = version(lib.replace("_", "-"))
    assert meta["versions"] == expected


@pytest.mark.parametrize("training", [True, False])
def test_save_leaves_the_model_in_its_mode_and_its_statistics_alone(tmp_path, training):
    """The probe runs in eval mode; afterwards the model is back in the mode it was in,
    and BatchNorm's running statistics have not moved."""
    model = MLP([6, 10, 4], batchnorm=True, seed=1).train(training)
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    save(model, tmp_path / "m.safetensors")
    assert model.training is training
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_saving_a_model_twice_writes_the_same_bytes(tmp_path):
    """Nothing in a checkpoint varies between saves: the default probe rows are seeded."""
    model = MLP([6, 10, 4], batchnorm=True, seed=1)
    first = save(model, tmp_path / "a.safetensors").read_bytes()
    assert save(model, tmp_path / "b.safetensors").read_bytes() == first


def test_handout_model_round_trip(tmp_path):
    model = MLP4(dtype="float64", seed=5)
    restored = load(save(model, tmp_path / "m4.safetensors"))
    assert type(restored) is MLP4
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(restored.state_dict()[key]), value)


def test_readable_by_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    model = _trained(np, None)
    path = save(model, tmp_path / "m.safetensors")
    tensors = st.load_file(str(path))
    assert tensors.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(tensors[key], value)
    # and a file written by the library decodes the same way here
    st.save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"k": "v"})
    decoded, meta, _ = decode((tmp_path / "lib.safetensors").read_bytes())
    assert meta == {"k": "v"}
    for key, value in tensors.items():
        np.testing.assert_array_equal(decoded[key], value)


def _rewrite(path, *, tensors=None, info=None):
    """Rewrite a checkpoint with edited tensors or metadata (as an attacker could)."""
    old_tensors, header, _ = decode(Path(path).read_bytes())
    tensors = old_tensors if tensors is None else tensors(old_tensors)
    meta = json.loads(header["xpnet"])
    if info is not None:
        info(meta)
    entries, data = pack(tensors)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    document = json.dumps(meta)
    header = {"xpnet": document, "xpnet_sha256": _header_sha256(entries, document)}
    Path(path).write_bytes(assemble(entries, data, header))


@pytest.fixture
def saved(tmp_path):
    return save(_trained(np, None, "float32"), tmp_path / "m.safetensors")


def test_corrupted_bytes_are_refused(saved):
    blob = bytearray(saved.read_bytes())
    blob[-3] ^= 0xFF
    saved.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load(saved)


def _edit_header(path, edit):
    """Edit a checkpoint's header in place, its hashes left as they were (as a hand edit
    would): ``edit(header)`` changes the parsed header or returns a new ``xpnet`` text."""
    blob = Path(path).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    text = edit(header)
    if text is not None:
        header["__metadata__"]["xpnet"] = text
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    Path(path).write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n :])


def _reverse_classes(header):
    meta = json.loads(header["__metadata__"]["xpnet"])
    meta["user"]["classes"].reverse()
    return json.dumps(meta)


def _swap_layout(header):
    """Give two arrays of one shape each other's bytes (the data section unchanged)."""
    entries = [v for k, v in header.items() if k != "__metadata__"]
    a, b = next((a, b) for a in entries for b in entries if a is not b and a["shape"] == b["shape"])
    a["data_offsets"], b["data_offsets"] = b["data_offsets"], a["data_offsets"]


@pytest.mark.parametrize(
    "edit",
    [
        _reverse_classes,
        lambda h: h["__metadata__"]["xpnet"][:-1] + ', "dtype": "float32"}',  # a duplicate key
        lambda h: h["__metadata__"]["xpnet"] + " ",
        lambda h: h["__metadata__"]["xpnet"].replace('"user": {', '"user": {"note": 1, ', 1),
        _swap_layout,
    ],
    ids=["classes reversed", "duplicate key", "whitespace", "field added", "arrays swapped"],
)
def test_any_edit_of_the_header_is_refused(tmp_path, edit):
    """The header's checksum covers the metadata's exact text and which bytes belong to
    which array: every edit is refused before a field is read, though the arrays' own
    checksum still matches."""
    path = save(_trained(np, None, "float32"), tmp_path / "m.safetensors",
                metadata={"classes": ["cat", "dog", "emu", "fox"]})  # fmt: skip
    assert load(path) is not None
    _edit_header(path, edit)
    with pytest.raises(CheckpointError, match=r"checksum recorded at save time \(xpnet_sha256\)"):
        load(path)


def test_a_header_without_its_checksum_is_refused(saved):
    _edit_header(saved, lambda header: header["__metadata__"].pop("xpnet_sha256") and None)
    with pytest.raises(CheckpointError, match=r"checksum \(xpnet_sha256\) is missing"):
        load(saved)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_only_regular_files_are_read(tmp_path):
    """A FIFO without a writer, or a device that never ends, is refused at once."""
    os.mkfifo(tmp_path / "fifo.safetensors")
    for path in (tmp_path / "fifo.safetensors", "/dev/zero"):
        if Path(path).exists():
            with pytest.raises(CheckpointError, match="not a regular file"):
                load(path)


def test_tampered_weights_are_refused(saved):
    def shift(t):
        t = dict(t)
        t["layers.1.W"] = t["layers.1.W"] + np.float32(0.05)
        return t

    _rewrite(saved, tensors=shift)  # checksum recomputed: the probe catches it
    with pytest.raises(CheckpointError, match="outputs on the saved probe batch differ"):
        load(saved)


def test_tampered_probe_is_refused(saved):
    """The whole message, with the largest difference (the one edit, 0.25) and the
    tolerance it missed."""

    def edit(meta):
        meta["probe"]["outputs"][1][2] += 0.25

    _rewrite(saved, info=edit)
    with pytest.raises(CheckpointError) as info:
        load(saved)
    assert str(info.value) == (
        f"{saved}: the model's outputs on the saved probe batch differ from the recorded ones "
        "(max difference 0.25, tolerance 0.0001 relative + 1e-05); the file was modified or "
        "the backend computes differently"
    )


def test_a_probe_that_overflows_is_refused_without_a_warning(tmp_path):
    """A BatchNorm scale edited to 3e38 makes the float32 probe overflow: refused by the
    probe comparison, without NumPy's overflow warning escaping (an error under
    ``-W error``)."""
    import warnings

    path = save(MLP([3, 4, 2], batchnorm=True, seed=0), tmp_path / "m.safetensors")
    scale = "bn_layers.0.BW"
    _rewrite(path, tensors=lambda t: {**t, scale: np.full_like(t[scale], 3e38)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match="probe batch differ"):
            load(path)


def test_wrong_architecture_is_refused(saved):
    def edit(meta):
        meta["architecture"]["sizes"] = [6, 12, 4]

    _rewrite(saved, info=edit)
    with pytest.raises(CheckpointError, match=r"field 'architecture' expects 'layers.0.W'"):
        load(saved)


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[: len(b) // 2], "not a valid checkpoint"),
        (lambda b: b[:5], "too short"),
        (lambda b: b"\x10" + b[1:], "not a valid checkpoint"),
        (lambda b: b"PK\x03\x04 this is a zip file", "not a valid checkpoint"),
        (lambda b: b"", "too short"),
    ],
    ids=["truncated", "header-only", "bad-header-length", "other-format", "empty"],
)
def test_malformed_files_are_refused(saved, mangle, match):
    saved.write_bytes(mangle(saved.read_bytes()))
    with pytest.raises(CheckpointError, match=match):
        load(saved)


def test_foreign_format_version_is_refused(saved):
    _rewrite(saved, info=lambda meta: meta.update(format="xpnet-checkpoint/99"))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load(saved)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "absent.safetensors")


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = save(_trained(np, None), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        save(MLP([6, 10, 4], batchnorm=True, activation="gelu", seed=9), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left
    monkeypatch.undo()
    load(path)


def test_no_pickle_anywhere():
    root = Path(__file__).resolve().parents[1] / "xpnet"
    for source in root.rglob("*.py"):
        text = source.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, source


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("column", [0, 1], ids=["small value", "large value"])
@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_the_probe_tolerance_is_the_boundary(tmp_path, dtype, column, factor):
    """A recorded probe output shifted by half its tolerance (atol + rtol |v|) loads, by
    twice it is refused: at an output of 0, where atol decides, and of 1000, where rtol
    does; so relative and absolute tolerance cannot be swapped unnoticed."""
    from xpnet.checkpoint import PROBE_TOLERANCE
    from xpnet.models import MLP

    model = MLP([2, 2], dtype=dtype).eval()  # logits exactly 0 and 1000 for every input
    model.load_state_dict({"layers.0.W": np.zeros((2, 2)), "layers.0.b": np.array([[0.0], [1e3]])})
    path = save(model, tmp_path / "m.safetensors")
    rtol, atol = PROBE_TOLERANCE[dtype]
    value = [0.0, 1e3][column]
    shift = factor * (atol + rtol * value)

    def edit(meta):
        for row in meta["probe"]["outputs"]:
            assert row[column] == value
            row[column] = value + shift

    _rewrite(path, info=edit)
    if factor < 1:
        load(path)
    else:
        with pytest.raises(CheckpointError, match="probe"):
            load(path)


def test_load_puts_every_array_on_the_device_asked(xp, device, tmp_path):
    """``xpnet.load(path, xp=..., device=...)``: the device reaches every array (on
    array_api_strict's device1 session, a default-device array would be caught here)."""
    path = tmp_path / "model.safetensors"
    save(MLP([3, 5, 2], batchnorm=True, standardize=True), path)
    model = load(path, xp=xp, device=device)
    want = backend.device_name(backend.device(xp.zeros((1,), device=device)))
    for key, array in model.state_dict().items():
        assert backend.device_name(backend.device(array)) == want, key


def test_load_honours_the_device_in_every_session(tmp_path):
    """The same on array-api-strict's second device, whatever the session's backend (the
    mutation runs use NumPy's, which has one device)."""
    strict, _, other = strict_devices()
    path = save(MLP([3, 5, 2], batchnorm=True, standardize=True), tmp_path / "m.safetensors")
    model = load(path, xp=strict, device=other)
    assert {backend.device(a) for a in model.state_dict().values()} == {other}


@pytest.mark.parametrize("rows", [1, MAX_PROBE_ROWS])
def test_a_probe_of_one_to_the_most_rows_is_saved_and_checked(tmp_path, rows):
    """``save(probe=...)`` keeps the rows given, from one to :data:`MAX_PROBE_ROWS`, and
    ``load`` runs them again."""
    model = MLP([3, 4, 2], seed=0)
    probe = np.random.default_rng(0).standard_normal((rows, 3))
    path = save(model, tmp_path / "m.safetensors", probe=probe)
    kept = np.asarray(read_metadata(path)["probe"]["inputs"])
    np.testing.assert_array_equal(kept, probe.astype(np.float32))
    load(path)


@pytest.mark.parametrize("rows", [0, MAX_PROBE_ROWS + 1])
def test_a_probe_of_no_rows_or_too_many_is_refused_on_save_and_on_load(tmp_path, rows):
    model = MLP([3, 4, 2], seed=0)
    probe = np.zeros((rows, 3))
    with pytest.raises(ValueError) as info:
        save(model, tmp_path / "m.safetensors", probe=probe)
    assert str(info.value) == (
        f"probe must be (n, 3) inputs with 1 <= n <= {MAX_PROBE_ROWS}, got shape ({rows}, 3)"
    )
    path = save(model, tmp_path / "m.safetensors")

    def edit(meta):  # as a hand-edited file could hold it
        meta["probe"] = {"inputs": probe.tolist(), "outputs": np.zeros((rows, 2)).tolist()}

    _rewrite(path, info=edit)
    with pytest.raises(CheckpointError) as info:
        load(path)
    read_as = "(0,)" if rows == 0 else f"({rows}, 3)"  # [] is read as no row of no width
    assert str(info.value) == (
        f"{path}: metadata field 'probe.inputs' must have shape (n, 3) with "
        f"1 <= n <= {MAX_PROBE_ROWS}, got {read_as}"
    )


@pytest.mark.parametrize("key", ["inputs", "outputs"])
def test_a_probe_value_beyond_float32_is_refused_without_a_warning(tmp_path, key):
    """1e39 is finite in the JSON but infinite in the float32 model: refused by name, and
    the cast's overflow is not let out as a RuntimeWarning (an error under ``-W error``)."""
    import warnings

    path = save(MLP([3, 4, 2], seed=0), tmp_path / "m.safetensors")

    def edit(meta):
        meta["probe"][key][0][0] = 1e39

    _rewrite(path, info=edit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as info:
            load(path)
    assert str(info.value) == (
        f"{path}: metadata field 'probe.{key}' holds NaN, infinity or a value beyond float32"
    )


def test_load_all_gives_the_model_the_other_arrays_and_the_metadata(tmp_path):
    """``load_all(path)``: the model on NumPy by default, the arrays saved with
    ``extra_tensors`` as NumPy arrays by key, and the metadata with the user's part."""
    from xpnet.checkpoint import load_all

    model = MLP([3, 4, 2], seed=0)
    extra = {"optimizer.velocity": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = save(model, tmp_path / "m.safetensors", metadata={"run": 7}, extra_tensors=extra)
    again, extras, info = load_all(path)
    assert backend.library_name(backend.namespace(again.layers[0].W)) == "numpy"
    assert list(extras) == list(extra)
    np.testing.assert_array_equal(extras["optimizer.velocity"], extra["optimizer.velocity"])
    assert info["user"] == {"run": 7} and info["architecture"]["sizes"] == [3, 4, 2]


def test_arrays_of_no_elements_come_back_in_the_order_saved(tmp_path):
    """Arrays of no elements share one offset; they are read back in the order they were
    written, not by name, which the header's hash (of the arrays' layout) requires."""
    from xpnet.checkpoint import load_all

    extra = {"optimizer.z": np.zeros((0, 3)), "optimizer.a": np.zeros(0), "optimizer.m": np.ones(2)}
    path = save(MLP([3, 2], seed=0), tmp_path / "m.safetensors", extra_tensors=extra)
    _, extras, _ = load_all(path)
    assert list(extras) == list(extra)
    assert [v.shape for v in extras.values()] == [(0, 3), (0,), (2,)]


@pytest.mark.parametrize("name", ["MLP0", "MLP1", "MLP4"])
def test_a_handout_model_comes_back_with_its_options_and_where_asked(tmp_path, name):
    """The handout classes are saved by name: their options (activation, BatchNorm,
    scaling, initialiser, dropout) come back, on the library and device asked for."""
    from xpnet import models

    options = {"activation": "tanh", "batchnorm": True, "standardize": True,
               "init": "xavier_uniform", "dropout": 0.25}  # fmt: skip
    model = getattr(models, name)(seed=4, **options)
    path = save(model, tmp_path / "m.safetensors")
    strict, _, other = strict_devices()
    again = load(path, xp=strict, device=other)
    assert type(again) is type(model)
    assert {k: getattr(again, k) for k in options} == options
    assert {backend.device(a) for a in again.state_dict().values()} == {other}
    assert {backend.namespace(a) for a in again.state_dict().values()} == {backend.get(strict)}
