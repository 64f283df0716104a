"""Untrusted data files: every reader under one input policy. Mutated bytes and mutated
header values of every format give a dataset or an ``XpnetError``, nothing else (no other
exception, no hang, no allocation a header alone asked for)."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import mutated_bytes
from xpnet.data import Dataset, load_dataset
from xpnet.errors import XpnetError

_FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_RNG = np.random.default_rng(0)
_X = np.round(_RNG.standard_normal((40, 3)), 3)
_Y = np.arange(40) % 2


def _npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _idx(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _csv():
    rows = [",".join(f"{v:g}" for v in x) + f",{c}" for x, c in zip(_X, _Y, strict=True)]
    return ("a,b,c,label\n" + "\n".join(rows) + "\n").encode()


def _npz():
    out = io.BytesIO()
    np.savez_compressed(out, X=_X, y=_Y)
    return out.getvalue()


def _idx_files(gz):
    images = (_RNG.integers(0, 255, (40, 2, 2))).astype(np.uint8)
    files = {}
    for part in ("train", "t10k"):
        for kind, array in (("images", images), ("labels", _Y.astype(np.uint8))):
            name = f"{part}-{kind}-idx{array.ndim}-ubyte"
            blob = _idx(array)
            files[name + (".gz" if gz else "")] = gzip.compress(blob, mtime=0) if gz else blob
    return files


#: format -> (the files of a valid dataset, the one the fuzz edits, what load_dataset takes)
FORMATS = {
    "csv": ({"d.csv": _csv()}, "d.csv", "d.csv"),
    "npz": ({"d.npz": _npz()}, "d.npz", "d.npz"),
    "npy-X": ({"X.npy": _npy(_X), "y.npy": _npy(_Y)}, "X.npy", "."),
    "npy-y": ({"X.npy": _npy(_X), "y.npy": _npy(_Y)}, "y.npy", "."),
    "idx": (_idx_files(False), "train-images-idx3-ubyte", "."),
    "idx-labels": (_idx_files(False), "train-labels-idx1-ubyte", "."),
    "idx-gz": (_idx_files(True), "train-images-idx3-ubyte.gz", "."),
}


def _attempt(folder, files, target, spec, blob):
    """Write the dataset with ``target`` replaced by ``blob`` and load it: a Dataset or an
    XpnetError; any other exception fails the test."""
    for old in folder.iterdir():  # hypothesis runs every example in the same folder
        old.unlink()
    for name, content in files.items():
        (folder / name).write_bytes(blob if name == target else content)
    try:
        data = load_dataset(folder / spec)
    except XpnetError as err:
        assert target in str(err), str(err)
        return False
    assert isinstance(data, Dataset)
    assert np.all(np.isfinite(np.asarray(data.X_train[: len(data.y_train)], dtype=np.float64)))
    return True


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_pristine_files_load(tmp_path, fmt):
    files, target, spec = FORMATS[fmt]
    assert _attempt(tmp_path, files, target, spec, files[target])


@pytest.mark.parametrize("fmt", list(FORMATS))
@_FUZZ
@given(data=st.data())
def test_fuzz_mutated_bytes(tmp_path, fmt, data):
    """Byte flips, truncation, insertion and deletion anywhere in one file of a dataset,
    its first 140 bytes (the headers) favoured."""
    files, target, spec = FORMATS[fmt]
    alphabet = b"0123456789,.-eE\"'{}()[]:\n\r\t \x00\xff\xef"
    blob = mutated_bytes(data, files[target], heads=(140,), alphabet=alphabet)
    _attempt(tmp_path, files, target, spec, blob)


_NPY_VALUES = {
    "descr": st.sampled_from(["<f8", "<f4", ">f8", "|O", "<c16", "<U3", "|b1", "<i8", "V8", "<f2"]),
    "fortran_order": st.booleans(),
    "shape": st.lists(st.integers(0, 2**62), max_size=3).map(tuple),
}


@_FUZZ
@given(
    edits=st.dictionaries(st.sampled_from(list(_NPY_VALUES)), st.just(None), min_size=1),
    data=st.data(),
)
def test_fuzz_npy_header_values(tmp_path, edits, data):
    """Any dtype, order and shape in ``X.npy``'s or ``y.npy``'s header over its real data:
    the claim is checked against the file before anything is allocated."""
    name = data.draw(st.sampled_from(["X.npy", "y.npy"]))
    array = _X if name == "X.npy" else _Y
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": array.shape}  # fmt: skip
    for key in edits:
        header[key] = data.draw(_NPY_VALUES[key], label=key)
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    files = {"X.npy": _npy(_X), "y.npy": _npy(_Y)}
    _attempt(tmp_path, files, name, ".", out.getvalue() + array.tobytes())


@_FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4),
    target=st.sampled_from(["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]),
    gz=st.booleans(),
)
def test_fuzz_idx_header_values(tmp_path, code, dims, target, gz):
    """Any type code and dimensions in an IDX header, gzipped or not, over its real data."""
    files = _idx_files(gz)
    name = target + (".gz" if gz else "")
    body = files[name]
    body = gzip.decompress(body) if gz else body
    ndim = body[3]
    blob = (
        bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body[4 + 4 * ndim :]
    )
    _attempt(tmp_path, files, name, ".", gzip.compress(blob, mtime=0) if gz else blob)


def test_each_bound_of_the_input_policy_accepts_its_edge_and_refuses_one_byte_more(
    monkeypatch,
):
    """``check_claim``, which every reader calls before allocating: a claim equal to what
    the file holds, to the memory budget, to MAX_EXPANSION times the compressed bytes and
    to BOMB_FLOOR passes; one byte more is refused with its whole message."""
    from xpnet._io import BOMB_FLOOR, MAX_EXPANSION
    from xpnet.data._files import check_claim
    from xpnet.errors import DataError

    monkeypatch.setenv("XPNET_MAX_INPUT_BYTES", str(4 * BOMB_FLOOR))
    packed = 2 * BOMB_FLOOR // MAX_EXPANSION  # expands to twice the floor at the limit
    for claim in ({"claimed": 10, "holds": 10}, {"claimed": 4 * BOMB_FLOOR},
                  {"claimed": MAX_EXPANSION * packed, "compressed": packed},
                  {"claimed": BOMB_FLOOR, "compressed": 1}):  # fmt: skip
        check_claim("f", **claim)
    refusals = [
        ({"claimed": 11, "holds": 10}, "f: the header claims 11 bytes of data, the file holds 10"),
        (
            {"claimed": 4 * BOMB_FLOOR + 1},
            f"f: {4 * BOMB_FLOOR + 1} bytes of data would not fit the memory budget of "
            f"{4 * BOMB_FLOOR} bytes (this machine's memory, or XPNET_MAX_INPUT_BYTES); for "
            "data larger than memory use a folder of X.npy and y.npy, which is memory-mapped",
        ),
        (
            {"claimed": MAX_EXPANSION * packed + 1, "compressed": packed},
            f"f: {packed} compressed bytes claim {MAX_EXPANSION * packed + 1} bytes of data, "
            f"more than {MAX_EXPANSION} times as many; refused as a decompression bomb "
            "(decompress it first if it is genuine: an uncompressed file is checked against "
            "its size instead)",
        ),
        (
            {"claimed": BOMB_FLOOR + 1, "compressed": 1},
            f"f: 1 compressed bytes claim {BOMB_FLOOR + 1} bytes of data, more than "
            f"{MAX_EXPANSION} times as many; refused as a decompression bomb (decompress it "
            "first if it is genuine: an uncompressed file is checked against its size "
            "instead)",
        ),
    ]
    for claim, message in refusals:
        with pytest.raises(DataError) as info:
            check_claim("f", **claim)
        assert str(info.value) == message
    check_claim("f", claimed=4 * BOMB_FLOOR + 1, in_memory=False)  # mapped, not held
