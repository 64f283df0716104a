"""IDX folders (MNIST's format): the official split from small files the tests write,
gzipped or not; malformed files refused before anything sized by them is allocated."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from tests.helpers import run_cli, traced_peak
from xpnet.data import load_dataset
from xpnet.data.idx import IDX_FILES, read_idx, stores_bytes
from xpnet.errors import DataError


def _idx(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_folder(folder, *, gz, n_train=120, n_test=40, seed=0):
    """Tiny 4x4 'images' whose class is the brightest quadrant (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 4, 4)).astype(np.uint8)
        for k, label in enumerate(y):
            r, c = divmod(int(label), 2)
            images[k, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] += 180
        for kind, array, dims in (("images", images, 3), ("labels", y, 1)):
            name = f"{part}-{kind}-idx{dims}-ubyte"
            blob = _idx(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (folder / name).write_bytes(blob)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_official_split(tmp_path, gz):
    folder = _write_folder(tmp_path / "mnist", gz=gz)
    data = load_dataset(str(folder))
    assert data.X_train.shape == (120, 16) and data.X_test.shape == (40, 16)
    # the pixels as stored; the model divides by the recorded range
    assert data.X_train.max() > 1.0 and data.X_train.min() >= 0.0
    assert data.input_scale == 255.0
    assert data.classes == [0, 1, 2, 3] and data.split == {"official": True}
    assert data.path == str(folder.resolve()) and len(data.sha256) == 64


def test_read_idx_types_and_refusals(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    (tmp_path / "f").write_bytes(_idx(values, code=0x0D))
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), values)
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad")
    # a header that promises 60000x60000 values: refused from the file's size
    (tmp_path / "huge").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 60000, 60000))
    with pytest.raises(
        DataError, match=r"shape \(60000, 60000\), uint8\): the header claims 3600000000 bytes"
    ):
        read_idx(tmp_path / "huge")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"x")
    with pytest.raises(DataError, match="unknown IDX type code 0x42"):
        read_idx(tmp_path / "code")


def test_missing_file_names_the_four(tmp_path):
    folder = _write_folder(tmp_path / "m", gz=False)
    (folder / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="no t10k-labels-idx1-ubyte"):
        load_dataset(str(folder))


def test_train_and_evaluate_on_an_idx_folder(tmp_path):
    folder = _write_folder(tmp_path / "mnist", gz=True, n_train=400, n_test=100)
    result = run_cli(
        "train", "--dataset", folder, "--epochs", 15, "--hidden", 16, "--out", tmp_path / "r",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["data"]["n_test"] == 100 and metrics["test_accuracy"] > 0.9
    report = run_cli("evaluate", tmp_path / "r" / "model.safetensors", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    evaluated = json.loads(report.stdout)
    assert evaluated["accuracy"] == metrics["test_accuracy"]
    assert "official test split (100 of 500 rows)" in evaluated["dataset"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (np.array([0.25, 0.75] * 60, dtype=np.float32), "non-integer values"),
        (np.array([0.0, np.nan] * 60, dtype=np.float32), "NaN or infinite label"),
    ],
    ids=["fractional", "nan"],
)
def test_idx_labels_get_the_checks_of_every_format(tmp_path, labels, expected):
    """Labels stored as IDX floats are checked as CSV and .npy labels are, not truncated."""
    folder = _write_folder(tmp_path / "f", gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(labels, code=0x0D))
    with pytest.raises(DataError, match=f"training labels\\): y .*{expected}"):
        load_dataset(folder)


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """A 100 KB gzip whose header claims 100 MB of zeros (a thousandfold expansion): refused
    from the header, having inflated a few bytes, not 100 MB."""
    folder = _write_folder(tmp_path / "f", gz=True)
    bomb = _idx(np.zeros((100_000, 1000), dtype=np.uint8))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bomb))
    with pytest.raises(DataError, match="refused as a decompression bomb"):
        read_idx(folder / "train-images-idx3-ubyte.gz")


def _images_as(folder, array, code, *, gz):
    name = IDX_FILES["train_images"] + (".gz" if gz else "")
    blob = _idx(array, code)
    (folder / name).write_bytes(gzip.compress(blob) if gz else blob)


@pytest.mark.parametrize("gz", [False, True])
def test_stores_bytes_reads_the_type_code_of_the_training_images(tmp_path, gz):
    """8-bit images (type 0x08) are what a checkpoint of the old format divided by 255;
    other types, a missing file and an unreadable one are not."""
    folder = _write_folder(tmp_path / "idx", gz=gz)
    assert stores_bytes(folder) and stores_bytes(str(folder))
    _images_as(folder, np.zeros((120, 4, 4), np.int8), 0x09, gz=gz)
    assert not stores_bytes(folder)
    _images_as(folder, np.zeros((120, 4, 4), np.float32), 0x0D, gz=gz)
    assert not stores_bytes(folder)
    name = folder / (IDX_FILES["train_images"] + (".gz" if gz else ""))
    name.write_bytes(gzip.compress(b"\x00\x00")[:-3] if gz else b"\x00\x00")  # cut short
    assert not stores_bytes(folder)
    if gz:
        name.write_bytes(b"\x00\x00\x08\x03 not gzip")
        assert not stores_bytes(folder)
    name.unlink()
    assert not stores_bytes(folder) and not stores_bytes(tmp_path / "nowhere")


@pytest.mark.parametrize("gz", [False, True])
def test_a_legacy_checkpoint_of_8_bit_idx_images_expects_them_divided_by_255(tmp_path, gz):
    from xpnet.app.evaluation import legacy_input_scale
    from xpnet.checkpoint import FORMAT, LEGACY_FORMATS

    folder = _write_folder(tmp_path / "idx", gz=gz)
    record = {"name": str(folder), "path": str(folder), "split": {"official": True}}
    for fmt in LEGACY_FORMATS:
        assert legacy_input_scale({"format": fmt, "user": {"data": record}}) == 255.0
    assert legacy_input_scale({"format": FORMAT, "user": {"data": record}}) is None
    _images_as(folder, np.zeros((120, 4, 4), np.float32), 0x0D, gz=gz)
    assert legacy_input_scale({"format": LEGACY_FORMATS[0], "user": {"data": record}}) is None


def test_a_gzip_stream_is_not_inflated_past_its_claim_to_find_a_tail(tmp_path):
    """Data after the claimed values are refused after reading one byte of them: a small
    gzip file whose tail inflates to 256 MiB is not inflated to find out."""
    path = tmp_path / IDX_FILES["train_labels"]
    path = path.with_name(path.name + ".gz")
    with gzip.open(path, "wb") as fh:
        fh.write(_idx(np.zeros(40, np.uint8)))
        block = bytes(1 << 20)
        for _ in range(256):
            fh.write(block)
    assert path.stat().st_size < 1 << 20
    with traced_peak() as peak, pytest.raises(DataError, match=r"the stream holds more$"):
        read_idx(path)
    assert peak.bytes < 8 << 20, peak.bytes
