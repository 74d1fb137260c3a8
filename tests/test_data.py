"""The IDX layer both sides share, and each side's handling of missing or corrupt data."""
import gzip

import numpy as np
import pytest

from common.data import DataError, find_files, materialize_raw, parse_idx, read_idx
from jax_impl.data import load_fashion_mnist
from tests.helpers import idx_bytes, run_module, write_tiny_dataset


def test_reads_plain_and_gz_identically(tmp_path):
    plain = write_tiny_dataset(tmp_path / "a", gz=False)
    write_tiny_dataset(tmp_path / "b", gz=True)
    x1, y1 = load_fashion_mnist(tmp_path / "a", train=True, debian_dir=None)
    x2, y2 = load_fashion_mnist(tmp_path / "b", train=True, debian_dir=None)
    assert x1.dtype == np.uint8 and x1.shape == (200, 28, 28)
    assert y1.dtype == np.int32 and y1.shape == (200,)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert plain.is_dir()


def test_data_folder_wins_over_debian(tmp_path):
    raw = write_tiny_dataset(tmp_path)
    files = find_files(tmp_path)  # Debian's folder may exist; the data folder comes first
    assert all(p.parent == raw for p in files.values())


def test_missing_everywhere_names_all_three_ways(tmp_path):
    with pytest.raises(DataError) as e:
        find_files(tmp_path / "nothing", debian_dir=tmp_path / "no-debian")
    msg = str(e.value)
    assert "FashionMNIST/raw" in msg and "apt-get install dataset-fashion-mnist" in msg and "torchvision" in msg
    assert "\n" not in msg


def test_truncated_file_is_named(tmp_path):
    raw = write_tiny_dataset(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: wrong length .*truncated"):
        load_fashion_mnist(tmp_path, train=True, debian_dir=None)


def test_truncated_gz_is_named(tmp_path):
    raw = write_tiny_dataset(tmp_path, gz=True)
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: cannot read"):
        load_fashion_mnist(tmp_path, train=False, debian_dir=None)


def test_bad_magic_is_named(tmp_path):
    raw = write_tiny_dataset(tmp_path)
    path = raw / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float32 type code instead of unsigned byte
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: bad IDX magic number 0x00000d01"):
        load_fashion_mnist(tmp_path, train=True, debian_dir=None)


def test_count_mismatch_is_named(tmp_path):
    raw = write_tiny_dataset(tmp_path)
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(199, np.uint8)))
    with pytest.raises(DataError, match=r"200 images but .*train-labels-idx1-ubyte has 199 labels"):
        load_fashion_mnist(tmp_path, train=True, debian_dir=None)


def test_wrong_image_size_and_label_range(tmp_path):
    with pytest.raises(DataError, match="images are 14x14"):
        parse_idx(idx_bytes(np.zeros((3, 14, 14), np.uint8)), 3, "f")
    raw = write_tiny_dataset(tmp_path)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(50, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12 is outside"):
        load_fashion_mnist(tmp_path, train=False, debian_dir=None)


def test_materialize_decompresses_and_never_overwrites(tmp_path):
    raw = write_tiny_dataset(tmp_path, gz=True)
    materialize_raw(tmp_path, debian_dir=None)
    for gz_path in raw.glob("*.gz"):
        with gzip.open(gz_path) as f:
            assert (raw / gz_path.stem).read_bytes() == f.read()
    np.testing.assert_array_equal(read_idx(raw / "t10k-labels-idx1-ubyte", 1), read_idx(raw / "t10k-labels-idx1-ubyte.gz", 1))


@pytest.mark.parametrize("module,extra", [("reference_torch", ["--no-download"]), ("jax_impl", [])])
def test_cli_missing_data_exit_2(tmp_path, module, extra, monkeypatch):
    # Debian's folder is not hidden from a subprocess; point both sides at a data dir and a fake
    # Debian dir that hold nothing.
    proc = run_module(module, "--epochs", "1", "--data-dir", str(tmp_path / "none"), *extra,
                      env={"QSP_DEBIAN_DIR": str(tmp_path / "no-debian")})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "FashionMNIST not found" in err[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("module,extra", [("reference_torch", ["--no-download"]), ("jax_impl", [])])
def test_cli_corrupt_file_exit_2(tmp_path, module, extra):
    raw = write_tiny_dataset(tmp_path)
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    proc = run_module(module, "--epochs", "1", "--data-dir", str(tmp_path), "--save", "", *extra)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "t10k-images-idx3-ubyte: wrong length" in err[0]
