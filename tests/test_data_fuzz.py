"""Property-based fuzzing of the IDX reader both sides use (quickstart_parity_common.data): every hostile input ends in
DataError naming the file, or parses to exactly the valid array. Never another exception type.

What IDX cannot detect: a flipped bit in the payload (pixels or labels) is a different valid file;
it parses to the flipped array, and only the label range check (labels 0..9) can catch it. A .gz
carries gzip's CRC-32 and length, so a flipped bit inside the compressed stream is caught; a flip
in gzip's own header fields (mtime, OS byte) changes nothing that is read and parses to the same array.
"""
import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quickstart_parity_common.data as cdata
from quickstart_parity_common.data import FILES, DataError, check_split, parse_idx, read_idx, read_split
from tests.helpers import idx_bytes

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATH = "fuzz/train-images-idx3-ubyte"


def _arrays(draw, ndim):
    n = draw(st.integers(0, 3 if ndim == 3 else 40))
    shape = (n, 28, 28) if ndim == 3 else (n,)
    hi = 255 if ndim == 3 else 9
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, hi + 1, shape).astype(np.uint8)


@st.composite
def idx_files(draw):
    """(ndim, a valid array, its IDX bytes)."""
    ndim = draw(st.sampled_from([1, 3]))
    array = _arrays(draw, ndim)
    return ndim, array, idx_bytes(array)


def _outcome(fn, path):
    """The parsed array, or None after checking the DataError names ``path``."""
    try:
        return fn()
    except DataError as e:
        assert str(path) in str(e), str(e)
        return None


@FUZZ
@given(idx_files(), st.data())
def test_truncation_is_always_refused(case, data):
    ndim, _, raw = case
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DataError, match=PATH):
        parse_idx(raw[:cut], ndim, PATH)


@FUZZ
@given(idx_files(), st.data())
def test_appended_bytes_are_refused(case, data):
    ndim, _, raw = case
    extra = data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(DataError, match=PATH):
        parse_idx(raw + extra, ndim, PATH)


@FUZZ
@given(idx_files(), st.data())
def test_header_bit_flip_is_always_refused(case, data):
    ndim, _, raw = case
    bit = data.draw(st.integers(0, 8 * (4 + 4 * ndim) - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DataError, match=PATH):
        parse_idx(bytes(flipped), ndim, PATH)


@FUZZ
@given(idx_files(), st.data())
def test_payload_bit_flip_parses_to_the_flipped_array(case, data):
    """Undetectable by IDX: the result is exactly the flipped array; labels out of 0..9 are then refused."""
    ndim, array, raw = case
    header = 4 + 4 * ndim
    if len(raw) == header:
        return  # no payload to flip
    bit = data.draw(st.integers(8 * header, 8 * len(raw) - 1))
    flipped = bytearray(raw)
    flipped[bit // 8] ^= 1 << (bit % 8)
    expected = array.reshape(-1).copy()
    expected[bit // 8 - header] ^= 1 << (bit % 8)
    parsed = parse_idx(bytes(flipped), ndim, PATH)
    np.testing.assert_array_equal(parsed, expected.reshape(array.shape))
    if ndim == 1:
        images = np.zeros((len(parsed), 28, 28), np.uint8)
        result = _outcome(lambda: check_split(images, parsed, Path("img"), Path(PATH)), PATH)
        assert (result is None) == bool((parsed >= 10).any())


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([1, 3]))
def test_random_bytes(raw, ndim):
    parsed = _outcome(lambda: parse_idx(raw, ndim, PATH), PATH)
    if parsed is not None:  # only a genuinely valid file parses, and it round-trips exactly
        assert idx_bytes(parsed) == raw


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.integers(0, 3000), st.sampled_from([1, 3]))
def test_wrong_dims_and_magic(dims, payload, ndim):
    """Any dimension count and sizes (including ones whose product overflows int64) with any payload length."""
    raw = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(payload)
    parsed = _outcome(lambda: parse_idx(raw, ndim, PATH), PATH)
    if parsed is not None:
        assert len(dims) == ndim and (ndim == 1 or tuple(dims[1:]) == (28, 28))
        assert parsed.shape == tuple(dims) and idx_bytes(parsed) == raw


def _gz(raw: bytes) -> bytes:
    with tempfile.SpooledTemporaryFile() as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(raw)
        f.seek(0)
        return f.read()


def _read_file(content: bytes, name: str, ndim: int):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(content)
        return _outcome(lambda: read_idx(path, ndim), path)


@FUZZ
@given(idx_files(), st.data())
def test_truncated_gz_is_refused(case, data):
    ndim, _, raw = case
    gz = _gz(raw)
    cut = data.draw(st.integers(0, len(gz) - 1))
    assert _read_file(gz[:cut], "x-idx.gz", ndim) is None


@FUZZ
@given(idx_files(), st.data())
def test_gz_byte_flip_is_caught_or_harmless(case, data):
    """gzip's CRC-32 catches a corrupted stream; a flip it cannot see must give the same array."""
    ndim, array, raw = case
    gz = bytearray(_gz(raw))
    i = data.draw(st.integers(0, len(gz) - 1))
    gz[i] ^= data.draw(st.integers(1, 255))
    parsed = _read_file(bytes(gz), "x-idx.gz", ndim)
    if parsed is not None:
        np.testing.assert_array_equal(parsed, array)


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([1, 3]), st.booleans())
def test_random_files_plain_or_gz(content, ndim, as_gz):
    name = "x-idx.gz" if as_gz else "x-idx"
    parsed = _read_file(content, name, ndim)
    if parsed is not None:
        assert idx_bytes(parsed) == (gzip.decompress(content) if as_gz else content)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 255))
def test_split_cross_checks(n_images, n_labels, top_label):
    """read_split: count mismatch, empty split and label range each end in DataError naming a file."""
    with tempfile.TemporaryDirectory() as d:
        images_name, labels_name = FILES[True]
        files = {images_name: Path(d) / images_name, labels_name: Path(d) / labels_name}
        files[images_name].write_bytes(idx_bytes(np.zeros((n_images, 28, 28), np.uint8)))
        files[labels_name].write_bytes(idx_bytes(np.full(n_labels, top_label, np.uint8)))
        try:
            images, labels = read_split(files, train=True)
        except DataError as e:
            assert images_name in str(e) or labels_name in str(e)
            assert n_images != n_labels or n_images == 0 or top_label >= 10
        else:
            assert n_images == n_labels > 0 and top_label < 10
            assert labels.dtype == np.int32 and images.shape == (n_images, 28, 28)


@pytest.mark.parametrize("as_gz", [True, False])
def test_oversized_file_is_refused_before_it_fills_memory(tmp_path, monkeypatch, as_gz):
    """A gzip bomb (or a huge wrong file) stops at MAX_IDX_BYTES (shrunk here so the test is cheap)."""
    monkeypatch.setattr(cdata, "MAX_IDX_BYTES", 10_000)
    raw = idx_bytes(np.zeros((20, 28, 28), np.uint8))  # 15,696 bytes, compresses to a few dozen
    path = tmp_path / ("x.gz" if as_gz else "x")
    path.write_bytes(_gz(raw) if as_gz else raw)
    with pytest.raises(DataError, match=f"{path}: (decompresses to more|larger) than 10000 bytes"):
        read_idx(path, 3)
