"""The safetensors reader on its own: every refusal of a malformed header or data section
as its whole message (the checkpoint tests reach it through ``xpnet.load`` only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xpnet._safetensors import (
    MAX_HEADER,
    MAX_HEADER_VALUES,
    FormatError,
    assemble,
    decode,
    pack,
)


def _blob(header, data=b""):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(text).to_bytes(8, "little") + text + data


_F32 = {"dtype": "F32", "shape": [1]}


@pytest.mark.parametrize(
    ("header", "data", "says"),
    [
        (b"{not json", b"", "header is not valid JSON (Expecting property name enclosed in "
         "double quotes: line 1 column 2 (char 1))"),
        ([1], b"", "header is not a JSON object"),
        ({"__metadata__": {"a": 1}}, b"", "__metadata__ must map strings to strings"),
        ({"__metadata__": [["a", "b"]]}, b"", "__metadata__ must map strings to strings"),
        ({"w": [0, 4]}, bytes(4), "tensor 'w': bad data_offsets None"),
        ({"w": {**_F32}}, bytes(4), "tensor 'w': bad data_offsets None"),
        ({"w": {**_F32, "data_offsets": [0, 4, 8]}}, bytes(4),
         "tensor 'w': bad data_offsets [0, 4, 8]"),
        ({"w": {**_F32, "data_offsets": [0, "4"]}}, bytes(4),
         "tensor 'w': bad data_offsets [0, '4']"),
        ({"w": {**_F32, "data_offsets": [4, 0]}}, bytes(4), "tensor 'w': bad data_offsets [4, 0]"),
        ({"w": {**_F32, "data_offsets": [-1, 4]}}, bytes(4),
         "tensor 'w': bad data_offsets [-1, 4]"),
        ({"w": {**_F32, "dtype": "I32", "data_offsets": [0, 4]}}, bytes(4),
         "tensor 'w': unsupported dtype 'I32'"),
        ({"w": {**_F32, "shape": [-1], "data_offsets": [0, 4]}}, bytes(4),
         "tensor 'w': bad shape [-1]"),
        ({"w": {**_F32, "shape": [True], "data_offsets": [0, 4]}}, bytes(4),
         "tensor 'w': bad shape [True]"),
        ({"w": {**_F32, "shape": "1", "data_offsets": [0, 4]}}, bytes(4),
         "tensor 'w': bad shape '1'"),
        ({"w": {**_F32, "data_offsets": [0, 8]}}, bytes(8),
         "tensor 'w': offsets [0, 8] do not match its shape [1] or the data section (8 bytes)"),
        ({"w": {**_F32, "data_offsets": [0, 4]}}, bytes(2),
         "tensor 'w': offsets [0, 4] do not match its shape [1] or the data section (2 bytes)"),
        ({"a": {**_F32, "data_offsets": [0, 4]}, "b": {**_F32, "data_offsets": [8, 12]}},
         bytes(12),
         "tensor 'b': offsets [8, 12] do not match its shape [1] or the data section (12 bytes)"),
        ({"w": {**_F32, "data_offsets": [0, 4]}}, bytes(8), "data section has 4 trailing bytes"),
    ],
)  # fmt: skip
def test_each_malformed_part_is_refused_by_name(header, data, says):
    with pytest.raises(FormatError) as info:
        decode(_blob(header, data))
    assert str(info.value) == says


def test_a_well_formed_file_decodes_in_offset_order():
    """Tensors listed out of order in the header are read by their offsets; the metadata
    and the data section come back as written."""
    a, b = np.arange(3, dtype=np.float32), np.arange(4, dtype=np.float64).reshape(2, 2)
    data = a.tobytes() + b.tobytes()
    header = {
        "b": {"dtype": "F64", "shape": [2, 2], "data_offsets": [12, 44]},
        "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
        "__metadata__": {"k": "v"},
    }
    tensors, metadata, section = decode(_blob(header, data))
    assert metadata == {"k": "v"} and section == data
    np.testing.assert_array_equal(tensors["a"], a)
    np.testing.assert_array_equal(tensors["b"], b)
    assert tensors["a"].dtype == np.float32 and tensors["b"].dtype == np.float64


def test_an_empty_tensor_has_equal_offsets():
    """A tensor with no elements (shape [0]) takes no bytes: its offsets are equal, and it
    may be listed before or after the tensor that starts where it does."""
    empty = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
    one = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    for header in ({"e": empty, "a": one}, {"a": one, "e": empty}):
        tensors, _, _ = decode(_blob(header, np.ones(1, dtype=np.float32).tobytes()))
        assert tensors["e"].shape == (0,) and tensors["a"].tolist() == [1.0]


def test_a_header_of_the_most_bytes_is_read_and_no_byte_after_it():
    """A header of exactly MAX_HEADER bytes is parsed, and its checks look at the header
    alone: a data byte after it that looks like JSON is not counted with it."""
    header = b"{" + b" " * (MAX_HEADER - 2) + b"}"
    with pytest.raises(FormatError) as info:
        decode(_blob(header, b"["))
    assert str(info.value) == "data section has 1 trailing bytes"


def test_a_header_of_the_most_bytes_is_written_and_not_one_more():
    """The writer's header is compact JSON: metadata that makes it exactly MAX_HEADER
    bytes is written and read back; one character more is refused before writing."""
    room = MAX_HEADER - len(b'{"__metadata__":{"k":""}}')
    blob = assemble({}, b"", {"k": "x" * room})
    assert int.from_bytes(blob[:8], "little") == MAX_HEADER
    assert decode(blob)[1] == {"k": "x" * room}
    with pytest.raises(FormatError) as info:
        assemble({}, b"", {"k": "x" * (room + 1)})
    assert str(info.value) == f"a header of {MAX_HEADER + 1} bytes, more than the {MAX_HEADER} read"


def test_every_key_and_every_value_counts_toward_the_most_values():
    """The count of JSON values adds the colons (one per key) to the commas and brackets:
    600,000 one-key entries are 1,199,999 values, refused unparsed, though they hold
    fewer commas than the limit."""
    n = 600_000
    assert n - 1 < MAX_HEADER_VALUES < 2 * n - 1
    with pytest.raises(FormatError) as info:
        decode(_blob(b"{" + b'"a":0,' * (n - 1) + b'"a":0}'))
    assert str(info.value) == (
        f"a header of about {2 * n - 1} JSON values, more than the {MAX_HEADER_VALUES} read"
    )


def test_a_header_of_the_most_values_is_parsed_and_not_one_more():
    """A list of MAX_HEADER_VALUES numbers (one bracket and a comma before each number
    after the first) is parsed, and refused for what it is; one number more is refused
    unparsed."""

    def listed(count):
        return _blob(b"[" + b"0," * (count - 1) + b"0]")

    with pytest.raises(FormatError) as info:
        decode(listed(MAX_HEADER_VALUES))
    assert str(info.value) == "header is not a JSON object"
    with pytest.raises(FormatError) as info:
        decode(listed(MAX_HEADER_VALUES + 1))
    assert str(info.value) == (
        f"a header of about {MAX_HEADER_VALUES + 1} JSON values, more than the "
        f"{MAX_HEADER_VALUES} read"
    )


def test_the_header_length_is_read_unsigned():
    """A length with its top bit set is a huge length, not a negative one."""
    with pytest.raises(FormatError) as info:
        decode((2**63 + 2).to_bytes(8, "little") + b"{}" + bytes(6))
    assert str(info.value) == "header length 9223372036854775810 does not fit a file of 16 bytes"


def test_arrays_of_any_layout_and_byte_order_are_written_as_safetensors_reads_them():
    """A transposed (Fortran-order) array, a big-endian one and a 0-d one are written in
    C order, little-endian, with their shapes: the safetensors library reads them back
    equal, and so does :func:`decode`."""
    st = pytest.importorskip("safetensors.numpy")
    tensors = {
        "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T,
        "big_endian": np.arange(4, dtype=">f8").reshape(2, 2),
        "scalar": np.array(2.5),
    }
    blob = assemble(*pack(tensors), {})
    theirs, (ours, _, _) = st.load(blob), decode(blob)
    for key, value in tensors.items():
        assert theirs[key].shape == ours[key].shape == value.shape, key
        np.testing.assert_array_equal(theirs[key], value)
        np.testing.assert_array_equal(ours[key], value)


@pytest.mark.parametrize("extra", range(8))
def test_the_data_section_starts_at_a_multiple_of_8_bytes(extra):
    """Whatever the header's length, it is padded with spaces so that the data section
    starts 8-byte aligned, as the safetensors format asks."""
    tensors = {"w": np.arange(3, dtype=np.float64)}
    blob = assemble(*pack(tensors), {"k": "x" * extra})
    n = int.from_bytes(blob[:8], "little")
    assert n % 8 == 0 and blob[8 + n - 1 : 8 + n] in (b" ", b"}")
    np.testing.assert_array_equal(decode(blob)[0]["w"], tensors["w"])


@pytest.mark.parametrize("dtype", ["int64", "float16", "bool"])
def test_an_array_neither_float32_nor_float64_is_refused_by_name(tmp_path, dtype):
    """Only float32 and float64 are written: another array, such as an integer one among
    a checkpoint's extra arrays, is refused by its name before a file is written."""
    from xpnet.checkpoint import save
    from xpnet.models import MLP

    path = tmp_path / "m.safetensors"
    with pytest.raises(TypeError) as info:
        save(MLP([3, 2]), path, extra_tensors={"optimizer.step": np.zeros(3, dtype=dtype)})
    assert str(info.value) == f"tensor 'optimizer.step': dtype {dtype} is not float32/float64"
    assert not path.exists()
