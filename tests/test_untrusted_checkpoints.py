"""Untrusted checkpoints: every malformed field is refused, naming it, before anything sized
by the metadata is allocated; mutated bytes give a model or a CheckpointError, nothing
else; a missing file is a FileNotFoundError."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import mutated_bytes
from tests.test_checkpoint import _rewrite, _trained
from xpnet.checkpoint import load, save
from xpnet.errors import CheckpointError, CheckpointNotFoundError, XpnetError
from xpnet.models import MLP


@pytest.fixture
def saved(tmp_path):
    return save(_trained(np, None, "float32"), tmp_path / "m.safetensors")


def _set(path, value):
    """An edit that sets the metadata field at dotted ``path`` (list indices as ints)."""

    def edit(meta):
        *parents, last = path.split(".")
        node = meta
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        (
            "architecture.sizes",
            [60000, 60000, 10],
            "'architecture' expects 'layers.0.W' of shape (60000, 60000), the file stores (10, 6)",
        ),
        (
            "architecture.sizes",
            [6] + [3000] * 2000 + [4],
            "'architecture.sizes' describes 2001 layers but the file stores only 8 arrays",
        ),
        (
            "architecture.sizes",
            [6, -10, 4],
            "'architecture.sizes' must be a list of at least two positive ints, got [6, -10, 4]",
        ),
        (
            "architecture.sizes",
            [6, 10.5, 4],
            "'architecture.sizes' must be a list of at least two positive ints, got [6, 10.5, 4]",
        ),
        (
            "architecture.sizes",
            [6, True, 4],
            "'architecture.sizes' must be a list of at least two positive ints, got [6, True, 4]",
        ),
        (
            "architecture.sizes",
            [6],
            "'architecture.sizes' must be a list of at least two positive ints, got [6]",
        ),
        (
            "architecture.sizes",
            "6,10,4",
            "'architecture.sizes' must be a list of at least two positive ints, got 6,10,4",
        ),
        (
            "architecture.activation",
            "swish",
            "'architecture.activation' must be one of ['relu', 'sigmoid', 'tanh', 'gelu', "
            "'identity'], got 'swish'",
        ),
        (
            "architecture.activation",
            ["relu"],
            "'architecture.activation' must be one of ['relu', 'sigmoid', 'tanh', 'gelu', "
            "'identity'], got ['relu']",
        ),
        (
            "architecture.batchnorm",
            "yes",
            "'architecture.batchnorm' must be true or false, got 'yes'",
        ),
        ("architecture.batchnorm", 1, "'architecture.batchnorm' must be true or false, got 1"),
        (
            "architecture.standardize",
            "no",
            "'architecture.standardize' must be true or false, got 'no'",
        ),
        ("architecture.standardize", 0, "'architecture.standardize' must be true or false, got 0"),
        (
            "architecture.dropout",
            -0.1,
            "'architecture.dropout' must be a number in [0, 1), got -0.1",
        ),
        (
            "architecture.dropout",
            "0.5",
            "'architecture.dropout' must be a number in [0, 1), got '0.5'",
        ),
        ("dtype", 32, "'dtype' must be one of ['float32', 'float64'], got 32"),
        (
            "architecture.class",
            "Transformer",
            "'architecture.class' must be one of ['MLP', 'MLP0', 'MLP1', 'MLP4'], "
            "got 'Transformer'",
        ),
        (
            "architecture.init",
            "he",
            "'architecture.init' must be default or one of ['kaiming_uniform', 'kaiming_normal', "
            "'xavier_uniform', 'xavier_normal'], got 'he'",
        ),
        ("architecture.dropout", 1.5, "'architecture.dropout' must be a number in [0, 1), got 1.5"),
        (
            "architecture.dropout",
            True,
            "'architecture.dropout' must be a number in [0, 1), got True",
        ),
        (
            "architecture.class",
            None,
            "'architecture.class' must be one of ['MLP', 'MLP0', 'MLP1', 'MLP4'], got None",
        ),
        ("architecture", [1, 2], "'architecture' must be a JSON object, got list"),
        ("dtype", "float16", "'dtype' must be one of ['float32', 'float64'], got 'float16'"),
        (
            "dtype",
            "float64",
            "'dtype' is float64 but 'layers.0.W' is stored as float32",
        ),  # the arrays are float32
        (
            "probe.inputs",
            [[0.0] * 5] * 4,
            "'probe.inputs' must have shape (n, 6) with 1 <= n <= 64, got (4, 5)",
        ),
        (
            "probe.inputs",
            [[float("nan")] * 6] * 4,
            "'probe.inputs' holds NaN, infinity or a value beyond float32",
        ),
        (
            "probe.inputs",
            [[0.0] * 6, [0.0] * 5],
            "'probe.inputs' must be a list of rows of numbers",
        ),
        ("probe.inputs", "zeros", "'probe.inputs' must be a list of rows of numbers"),
        (
            "probe.inputs",
            [[0.0] * 6] * 5000,
            "'probe.inputs' must have shape (n, 6) with 1 <= n <= 64, got (5000, 6)",
        ),
        ("probe.outputs", [[0.0] * 4] * 3, "'probe.outputs' has 3 rows, 'probe.inputs' 4"),
        (
            "probe.outputs",
            [[float("inf")] * 4] * 4,
            "'probe.outputs' holds NaN, infinity or a value beyond float32",
        ),
        ("probe", None, "'probe' is missing or not an object"),
        ("architecture.dropout", 1.0, "'architecture.dropout' must be a number in [0, 1), got 1.0"),
        (
            "architecture.sizes",
            [6, 0, 4],
            "'architecture.sizes' must be a list of at least two positive ints, got [6, 0, 4]",
        ),
        (  # eight entries are shown, more are counted
            "architecture.sizes",
            [6, 1, 1, 1, 1, 1, 0, 4],
            "'architecture.sizes' must be a list of at least two positive ints, "
            "got [6, 1, 1, 1, 1, 1, 0, 4]",
        ),
        (
            "architecture.sizes",
            [6, 1, 1, 1, 1, 1, 1, 0, 4],
            "'architecture.sizes' must be a list of at least two positive ints, got 9 entries",
        ),
        (  # more layers than the file has arrays (8): refused before any shape is built
            "architecture.sizes",
            [6, *[10] * 8, 4],
            "'architecture.sizes' describes 9 layers but the file stores only 8 arrays",
        ),
        (  # as many layers as arrays: the shapes are compared
            "architecture.sizes",
            [6, *[10] * 7, 4],
            "'architecture' expects 'layers.1.W' of shape (10, 10), the file stores (4, 10)",
        ),
        ("user", [], "'user' must be a JSON object"),
    ],
)
def test_malformed_metadata_names_the_field(saved, field, value, says):
    """Each refusal names the field, what it must be and what came (the whole message)."""
    _rewrite(saved, info=_set(field, value))
    with pytest.raises(CheckpointError, match=re.escape(f"metadata field {says}") + "$"):
        load(saved)


def test_non_finite_parameters_are_refused(saved):
    def poison(tensors):
        tensors["layers.1.b"][0, 0] = np.nan
        return tensors

    _rewrite(saved, tensors=poison)
    with pytest.raises(CheckpointError) as info:
        load(saved)
    assert str(info.value) == f"{saved}: array 'layers.1.b' holds NaN or infinite values"


def test_missing_array_is_refused(saved):
    _rewrite(saved, tensors=lambda t: {k: v for k, v in t.items() if k != "bn_layers.0.BW"})
    with pytest.raises(CheckpointError) as info:
        load(saved)
    assert str(info.value) == (
        f"{saved}: metadata field 'architecture' describes array 'bn_layers.0.BW', which the "
        "file does not store"
    )


_PROBE_MEMORY = textwrap.dedent(
    """
    import json, re, sys, time
    from xpnet.checkpoint import load
    from xpnet.errors import CheckpointError

    start = time.perf_counter()
    try:
        load(sys.argv[1])
        outcome = "loaded"
    except CheckpointError as err:
        outcome = str(err)
    seconds = time.perf_counter() - start
    # VmHWM: this process's own peak resident memory (ru_maxrss would include the
    # parent's, which it inherits across exec)
    status = open("/proc/self/status").read()
    peak_mb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
    print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mb": peak_mb}))
    """
)


@pytest.mark.parametrize(
    "sizes", [[60000, 60000, 10], [6] + [3000] * 2000 + [4]], ids=["huge", "2000-layers"]
)
def test_crafted_sizes_are_refused_cheaply(saved, sizes):
    """Before the fix, [30000, 30000, 10] allocated 10.6 GB and 2,000 layers ran for
    minutes. Peak memory of the whole process (Python, NumPy and xpnet included) stays
    under 200 MB; the subprocess time-out is only a guard against a hang."""
    _rewrite(saved, info=_set("architecture.sizes", sizes))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_MEMORY, str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "field 'architecture" in report["outcome"]
    assert report["peak_mb"] < 200, report
    assert report["seconds"] < 1.0, report


def test_missing_checkpoint_is_a_file_not_found_error(tmp_path):
    path = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        load(path)
    err = info.value
    assert isinstance(err, CheckpointNotFoundError) and isinstance(err, CheckpointError)
    assert isinstance(err, XpnetError) and err.filename == str(path)
    assert str(err) == f"{path}: no such checkpoint"


def _attempt(path):
    """Load ``path``: True when it loaded, False when refused with a CheckpointError that
    begins with the file's name. Anything else (another exception, a hang) fails the test."""
    try:
        load(path)
    except CheckpointError as err:
        assert str(err).startswith(f"{path}: "), str(err)
        return False
    return True


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "m.safetensors"
    save(_trained(np, None, "float32"), path)
    return path.read_bytes()


_FUZZ = settings(
    max_examples=2000,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path, pristine, data):
    """Byte flips, truncation, insertion and deletion anywhere in the file (the header
    length, the JSON header and the array data alike)."""
    # favour the first bytes: the length prefix and the JSON header
    blob = mutated_bytes(
        data, pristine, heads=(16, 600), alphabet=b'0123456789{}[]",:-.eE \x00\xff'
    )
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(blob)
    _attempt(path)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = [
    "format",
    "dtype",
    "architecture",
    "architecture.class",
    "architecture.sizes",
    "architecture.sizes.1",
    "architecture.activation",
    "architecture.batchnorm",
    "architecture.init",
    "architecture.dropout",
    "probe",
    "probe.inputs",
    "probe.inputs.0",
    "probe.inputs.0.0",
    "probe.outputs",
    "probe.outputs.2.1",
    "user",
]


@settings(_FUZZ, max_examples=500)
@given(edits=st.lists(st.tuples(st.sampled_from(_FIELDS), _JSON), min_size=1, max_size=3))
def test_fuzz_metadata_values(tmp_path, pristine, edits):
    """Any JSON value in any metadata field of a file whose checksum still matches."""
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(pristine)

    def edit(meta):
        for field, value in edits:
            try:
                _set(field, value)(meta)
            except (KeyError, IndexError, TypeError, ValueError):
                pass  # an earlier edit removed the parent: nothing to set

    _rewrite(path, info=edit)
    _attempt(path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_recorded_data_path_that_never_ends_is_refused(tmp_path):
    """A checkpoint that names ``/dev/zero`` as its training file (its header's checksum
    recomputed, as anyone can) is refused in one line, not hashed forever."""
    from tests.helpers import run_cli

    trained = run_cli("train", "--epochs", 1, "--hidden", 8, "--out", tmp_path / "r", "--quiet")
    assert trained.returncode == 0, trained.stderr
    path = tmp_path / "r" / "model.safetensors"

    def edit(meta):
        meta["user"]["data"].update(name="/dev/zero", path="/dev/zero", sha256="0" * 64)

    _rewrite(path, info=edit)
    result = run_cli("evaluate", path)
    assert result.returncode == 2
    assert result.stderr == "xpnet evaluate: error: /dev/zero: not a regular file\n"


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"[]" * 9_000_000, "more than the 16777216 read"),  # 18 MB
        (
            b"[" + b"[]," * 2_000_000 + b"[]]",
            "about 4000002 JSON values, more than the 1048576 read",
        ),  # 6 MB
    ],
    ids=["long", "many values"],
)
def test_a_header_too_costly_to_parse_is_refused_unparsed(tmp_path, header, match):
    """A header of millions of empty lists would take gigabytes as Python objects: its
    length and its count of values are checked before it is parsed."""
    path = tmp_path / "m.safetensors"
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match=match):
        load(path)


_RESUME_FIELDS = [
    *(f"user.config.{k}" for k in ("dataset", "label_column", "scale", "hidden", "activation",
      "batchnorm", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
      "warmup_epochs", "dropout", "early_stopping", "backend", "device", "dtype", "seed",
      "tf32", "cuda_graph", "jit", "epochs", "data_path", "data_sha256")),
    *(f"user.resume.{k}" for k in ("epoch", "history", "rng_state", "best", "best_epoch",
      "waited", "stopped_early", "scheduler", "dropout_rng")),
    "user.resume.rng_state.state",
    "user.resume.history.0",
    "user.config",
    "user.resume",
    "user.data",
    "user.classes",
]  # fmt: skip


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory):
    """A run folder after 1 of its epochs: what ``--resume`` reads."""
    from xpnet.app.cli import main

    folder = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--epochs", "1", "--hidden", "8", "--out", str(folder), "--quiet"]) == 0
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _run_folder(tmp_path, files):
    """``tmp_path / "run"`` holding ``files`` (name -> bytes), written over any earlier."""
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


@settings(_FUZZ, max_examples=120)
@given(edits=st.lists(st.tuples(st.sampled_from(_RESUME_FIELDS), _JSON), min_size=1, max_size=2))
def test_fuzz_resume_files(tmp_path, unfinished_run, capsys, edits):
    """Any JSON value in any field of a resume file whose hashes were recomputed:
    ``--resume`` continues the run or stops with one ``xpnet train: error:`` line, never
    another exception."""
    from xpnet.app.cli import main

    folder = _run_folder(tmp_path, unfinished_run)

    def edit(meta):
        for field, value in edits:
            try:
                _set(field, value)(meta)
            except (KeyError, IndexError, TypeError, ValueError):
                pass  # the path does not exist in this file: nothing to edit

    _rewrite(folder / "resume.safetensors", info=edit)
    capsys.readouterr()
    status = main(["train", "--resume", str(folder), "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert status in (0, 1, 2), status
    if status:
        assert err.startswith("xpnet train: error: ") and err.count("\n") == 1, err
        assert str(folder) in err, err


_ONE_EPOCH = {"epoch": 1, "loss": 1.3, "accuracy": 0.6, "lr": 0.05, "seconds": 0.01}


_RECORDS = "this run records ['accuracy', 'epoch', 'loss', 'lr', 'seconds']"


@pytest.mark.parametrize(
    ("history", "epoch", "says"),
    [
        ([{}], 1, f"'user.resume.history.0' holds []; {_RECORDS}"),  # the curves read "epoch"
        ([{**_ONE_EPOCH, "loss": "1.3"}], 1,
         "'user.resume.history.0' holds a value that is not a number"),
        ([{**_ONE_EPOCH, "epoch": 2}], 1, "'user.resume.history.0' is numbered 2, not 1"),
        ([{**_ONE_EPOCH, "epoch": True}], 1, "'user.resume.history.0' is numbered True, not 1"),
        ([_ONE_EPOCH, {**_ONE_EPOCH, "epoch": 3}], 2,
         "'user.resume.history.1' is numbered 3, not 2"),
        (  # validation numbers in a run without early stopping
            [{**_ONE_EPOCH, "val_loss": 0.4, "val_accuracy": 0.5}],
            1,
            "'user.resume.history.0' holds ['accuracy', 'epoch', 'loss', 'lr', 'seconds', "
            f"'val_accuracy', 'val_loss']; {_RECORDS}",
        ),
        ([{k: v for k, v in _ONE_EPOCH.items() if k != "lr"}], 1,
         f"'user.resume.history.0' holds ['accuracy', 'epoch', 'loss', 'seconds']; {_RECORDS}"),
        ([_ONE_EPOCH, {**_ONE_EPOCH, "epoch": 2}], 1,
         "'user.resume.history' holds 2 epochs, 'user.resume.epoch' says 1"),
        ([], 1, "'user.resume.history' holds 0 epochs, 'user.resume.epoch' says 1"),
    ],
    ids=["empty", "text-loss", "numbered-2", "bool-epoch", "second-numbered-3", "validation",
         "no-lr", "two-for-one", "none-for-one"],
)  # fmt: skip
def test_a_malformed_history_is_refused_by_name(
    tmp_path, unfinished_run, capsys, history, epoch, says
):
    """Every entry of the history is checked before the run goes on: one object per epoch,
    numbered 1, 2, ..., with the numbers this run records, as many as the epochs run
    (the run's folder is left as it was). Found by the
    fuzz above, once it asked for the folder's name: an entry ``{}`` ended the run after
    its epochs in a ``KeyError`` from the curves."""
    from xpnet.app.cli import main

    folder = _run_folder(tmp_path, unfinished_run)

    def edit(meta):
        meta["user"]["resume"].update(history=history, epoch=epoch)

    _rewrite(folder / "resume.safetensors", info=edit)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(folder), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    path = folder / "resume.safetensors"
    assert err == f"xpnet train: error: {path}: metadata field {says}\n"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_well_formed_history_resumes(tmp_path, unfinished_run, capsys):
    """The check's other side: a history of this run's numbers, an integer among them,
    continues."""
    from xpnet.app.cli import main

    folder = _run_folder(tmp_path, unfinished_run)
    first = {**_ONE_EPOCH, "loss": 1}
    _rewrite(folder / "resume.safetensors", info=lambda meta: meta["user"]["resume"].update(
        history=[first]))  # fmt: skip
    assert main(["train", "--resume", str(folder), "--epochs", "2", "--quiet"]) == 0
    history = json.loads((folder / "metrics.json").read_text())["history"]
    assert history[0] == first and history[1]["epoch"] == 2


def test_what_the_architecture_may_leave_out_or_hold_at_its_edge(tmp_path):
    """A hidden width of 1 and a probe of one row load; an architecture without
    ``activation`` or ``batchnorm`` (a 0.1 file) is ReLU without BatchNorm; ``init``
    and ``dropout`` come back as saved."""
    model = MLP([6, 1, 4], init="kaiming_uniform", dropout=0.25, seed=0)
    path = save(model, tmp_path / "edge.safetensors")

    def older(meta):
        del meta["architecture"]["activation"], meta["architecture"]["batchnorm"]
        meta["probe"] = {k: v[:1] for k, v in meta["probe"].items()}

    _rewrite(path, info=older)
    again = load(path)
    assert (again.sizes, again.activation, again.batchnorm) == ([6, 1, 4], "relu", False)
    assert (again.init, again.dropout) == ("kaiming_uniform", 0.25)


def test_a_bad_header_length_is_refused_from_the_first_8_bytes(tmp_path, monkeypatch):
    """A file whose first 8 bytes claim more header than it holds is refused having read
    those 8 bytes only, not the megabytes after them."""
    import xpnet.checkpoint as checkpoint

    path = tmp_path / "m.safetensors"
    path.write_bytes((2**60).to_bytes(8, "little") + bytes(2**20))
    reads = []
    opened = checkpoint.open_regular

    def counting(name):
        fh = opened(name)
        real = fh.read

        def read(size=-1):
            data = real(size)
            reads.append(len(data))
            return data

        fh.read = read
        return fh

    monkeypatch.setattr(checkpoint, "open_regular", counting)
    with pytest.raises(CheckpointError, match="header"):
        load(path)
    assert reads == [8]


def _safetensors(tmp_path, header):
    """A safetensors file of one small array and ``header`` as its metadata."""
    from xpnet._safetensors import assemble, pack

    entries, data = pack({"w": np.zeros((2, 2), dtype=np.float32)})
    path = tmp_path / "m.safetensors"
    path.write_bytes(assemble(entries, data, header))
    return path


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ({}, "a safetensors file without xpnet metadata"),
        ({"xpnet": json.dumps({"format": "other/9"})},
         "unsupported checkpoint format 'other/9', expected 'xpnet-checkpoint/2'"),
        ({"xpnet": "[1]"}, "unsupported checkpoint format None, expected 'xpnet-checkpoint/2'"),
        ({"xpnet": "{not json"}, "xpnet metadata is not valid JSON (Expecting property name "
         "enclosed in double quotes: line 1 column 2 (char 1))"),
    ],
    ids=["no-metadata", "other-format", "not-an-object", "not-json"],
)  # fmt: skip
def test_a_safetensors_file_that_is_no_checkpoint_is_refused_by_name(tmp_path, header, says):
    path = _safetensors(tmp_path, header)
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(info.value) == f"{path}: {says}"


def test_a_folder_or_an_unreadable_file_is_refused_by_name(tmp_path, monkeypatch):
    import xpnet.checkpoint as checkpoint

    with pytest.raises(CheckpointError) as info:
        load(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a checkpoint file"

    def denied(name):
        raise PermissionError(13, "Permission denied", str(name))

    monkeypatch.setattr(checkpoint, "open_regular", denied)
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read (Permission denied)"
