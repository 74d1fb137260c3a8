"""The IDX layer both sides share, the data step (quickstart_parity_common.data.prepare), and each side's handling
of missing, partial or corrupt data."""
import gzip
import os
import subprocess

import numpy as np
import pytest

from jax_impl.data import load_fashion_mnist
from quickstart_parity_common import data as cdata
from quickstart_parity_common.data import (
    ALL_FILES,
    DataError,
    DataMissing,
    apt_install,
    atomic_write,
    find_files,
    materialize_raw,
    parse_idx,
    prepare,
    read_idx,
)
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
    with pytest.raises(DataMissing) as e:
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
    np.testing.assert_array_equal(read_idx(raw / "t10k-labels-idx1-ubyte", 1),
                                  read_idx(raw / "t10k-labels-idx1-ubyte.gz", 1))


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


# --- partial folders, provenance, never overwriting --------------------------------------------


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_partial_data_folder_is_an_error_naming_the_missing_file(tmp_path):
    """3 of 4 files in the data folder: an error, never Debian's copy, never a write."""
    raw = write_tiny_dataset(tmp_path / "user", n_train=30)
    write_tiny_dataset(tmp_path / "deb-root", n_train=60, gz=True)  # a complete "Debian" copy
    debian = tmp_path / "deb-root" / "FashionMNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    before = _snapshot(raw)
    for call in (lambda: find_files(tmp_path / "user", debian),
                 lambda: materialize_raw(tmp_path / "user", debian),
                 lambda: load_fashion_mnist(tmp_path / "user", train=True, debian_dir=debian)):
        with pytest.raises(DataError, match=r"holds 3 of the 4 FashionMNIST files; missing: t10k-labels-idx1-ubyte") as e:
            call()
        assert not isinstance(e.value, DataMissing)  # the data step must stop, not try the next way
    assert _snapshot(raw) == before


def test_partial_debian_folder_is_an_error(tmp_path):
    debian = write_tiny_dataset(tmp_path / "deb", gz=True)
    (debian / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="holds 3 of the 4 .*missing: train-images-idx3-ubyte.*--reinstall"):
        find_files(tmp_path / "empty", debian)


def test_debian_copy_is_decompressed_with_a_source_record(tmp_path):
    debian = write_tiny_dataset(tmp_path / "deb", gz=True)
    raw = materialize_raw(tmp_path / "data", debian)
    for name in ALL_FILES:
        with gzip.open(debian / f"{name}.gz") as f:
            assert (raw / name).read_bytes() == f.read()
        assert (raw / f"{name}.source").is_file()
    assert not [p for p in raw.iterdir() if p.name.endswith(".tmp")]
    assert all(p.parent == raw for p in find_files(tmp_path / "data", debian).values())


def test_user_plain_file_is_never_overwritten(tmp_path):
    """A plain file we did not write wins over a different .gz next to it, and is never replaced."""
    raw = write_tiny_dataset(tmp_path, gz=True, seed=0)
    mine = idx_bytes(np.full(50, 3, np.uint8))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(mine)
    materialize_raw(tmp_path, debian_dir=None)
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == mine
    assert not (raw / "t10k-labels-idx1-ubyte.source").exists()
    _, labels = load_fashion_mnist(tmp_path, train=False, debian_dir=None)
    assert (labels == 3).all()


def test_stale_plain_file_gives_way_to_a_fixed_gz(tmp_path):
    """A plain file we decompressed is re-derived once its .gz changes; once the user edits it, it is theirs."""
    raw = write_tiny_dataset(tmp_path, gz=True, seed=0)
    materialize_raw(tmp_path, debian_dir=None)
    old = (raw / "train-labels-idx1-ubyte").read_bytes()
    fixed = idx_bytes(np.arange(200) % 10)
    assert fixed != old
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(fixed)
    # the JAX side reads the fixed .gz at once; the torch side's folder is refreshed
    _, labels = load_fashion_mnist(tmp_path, train=True, debian_dir=None)
    np.testing.assert_array_equal(labels, np.arange(200) % 10)
    materialize_raw(tmp_path, debian_dir=None)
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == fixed
    # the user now edits the plain file: it is theirs, a later .gz change does not replace it
    theirs = idx_bytes(np.zeros(200, np.uint8))
    (raw / "train-labels-idx1-ubyte").write_bytes(theirs)
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(old)
    materialize_raw(tmp_path, debian_dir=None)
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == theirs


def test_corrupt_gz_leaves_no_plain_file(tmp_path):
    """Nothing is written until all four files validate: a bad .gz never becomes a stale plain file."""
    raw = write_tiny_dataset(tmp_path, gz=True)
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.zeros((50, 28, 28), np.uint8))[:-7])  # a valid gzip of a truncated IDX
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: wrong length"):
        materialize_raw(tmp_path, debian_dir=None)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in ALL_FILES)


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    dest = tmp_path / "f"
    dest.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cdata.os, "replace", boom)
    with pytest.raises(DataError, match=r"f: cannot write .*No space left"):
        atomic_write(dest, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] and dest.read_bytes() == b"old"


def test_atomic_write_uses_unique_temporary_names(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real(src, dst)

    monkeypatch.setattr(cdata.os, "replace", spy)
    atomic_write(tmp_path / "f", b"1")
    atomic_write(tmp_path / "f", b"2")
    assert len(set(seen)) == 2 and all(s.startswith(".f.") and s.endswith(".tmp") for s in seen)
    assert (tmp_path / "f").read_bytes() == b"2" and oct((tmp_path / "f").stat().st_mode & 0o777) == "0o644"


# --- the data step: ways tried in order -----------------------------------------------------------


def _way(name, calls, effect=None):
    def way(data_dir, log):
        calls.append(name)
        if effect is None:
            raise DataMissing(f"{name}: failed (offline)")
        effect(data_dir)

    way.__name__ = name
    return way


def test_prepare_uses_the_data_folder_first(tmp_path):
    write_tiny_dataset(tmp_path)
    calls = []
    prepare(tmp_path, debian_dir=None, ways=[_way("download", calls)])
    assert calls == []


def test_prepare_tries_ways_in_order_until_one_works(tmp_path):
    calls = []
    ways = [_way("download", calls), _way("apt", calls, lambda d: write_tiny_dataset(d, gz=True)),
            _way("never", calls)]
    raw = prepare(tmp_path, debian_dir=tmp_path / "no-debian", ways=ways, log=lambda m: None)
    assert calls == ["download", "apt"]
    assert all((raw / n).is_file() for n in ALL_FILES)


def test_prepare_names_every_way_tried_in_one_line(tmp_path):
    calls = []
    with pytest.raises(DataError) as e:
        prepare(tmp_path, debian_dir=tmp_path / "no-debian", ways=[_way("download", calls), _way("apt", calls)])
    msg = str(e.value)
    assert calls == ["download", "apt"]
    assert "\n" not in msg and "(1)" in msg and "no-debian" in msg
    assert "(2) download: failed (offline)" in msg and "(3) apt: failed (offline)" in msg


def test_prepare_stops_at_a_corrupt_copy(tmp_path):
    raw = write_tiny_dataset(tmp_path)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    calls = []
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        prepare(tmp_path, debian_dir=None, ways=[_way("download", calls)])
    assert calls == []  # a corrupt file is the user's problem to see, not a reason to download over it


def test_download_failure_removes_what_it_wrote(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    from torchvision import datasets  # noqa: PLC0415 -- after the importorskip

    def half_download(root, train, download):
        raw = cdata.raw_dir(root)
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise RuntimeError("Error downloading: <urlopen error timed out>")

    monkeypatch.setattr(datasets, "FashionMNIST", half_download)
    keep = cdata.raw_dir(tmp_path)
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(DataMissing, match="torchvision's download: failed .*timed out"):
        cdata.download_torchvision(tmp_path, log=lambda m: None)
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def _apt_runner(script):
    """A fake subprocess.run: pops (returncode, output) per call and records the argv."""
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[1:])
        assert kwargs["env"]["DEBIAN_FRONTEND"] == "noninteractive"
        code, out = script.pop(0)
        return subprocess.CompletedProcess(argv, code, stdout=out)

    return run, calls


def test_apt_install_needs_root(tmp_path, monkeypatch):
    monkeypatch.setattr(cdata.os, "geteuid", lambda: 1000)
    run, calls = _apt_runner([])
    with pytest.raises(DataMissing, match="needs root"):
        apt_install(tmp_path, log=lambda m: None, run=run)
    assert calls == []


def test_apt_install_needs_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(cdata.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cdata.shutil, "which", lambda name: None)
    with pytest.raises(DataMissing, match="no apt-get"):
        apt_install(tmp_path, log=lambda m: None, run=_apt_runner([])[0])


def test_apt_install_updates_the_package_list_when_it_lacks_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(cdata.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cdata.shutil, "which", lambda name: "/usr/bin/apt-get")
    run, calls = _apt_runner([(100, "E: Unable to locate package dataset-fashion-mnist"), (0, ""), (0, "done")])
    printed = []
    apt_install(tmp_path, log=printed.append, run=run)
    assert calls == [["install", "-y", "dataset-fashion-mnist"], ["update"], ["install", "-y", "dataset-fashion-mnist"]]
    assert printed == ["running: apt-get install -y dataset-fashion-mnist", "running: apt-get update",
                       "running: apt-get install -y dataset-fashion-mnist"]


def test_apt_install_failure_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(cdata.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cdata.shutil, "which", lambda name: "/usr/bin/apt-get")
    run, calls = _apt_runner([(100, "E: Could not open lock file /var/lib/dpkg/lock-frontend")])
    with pytest.raises(DataMissing,
                       match=r"apt-get install -y dataset-fashion-mnist: failed \(exit 100: E: Could not open lock"):
        apt_install(tmp_path, log=lambda m: None, run=run)
    assert len(calls) == 1  # no update for an error the package list cannot fix


def test_data_step_cli_from_a_debian_folder(tmp_path):
    """``python -m quickstart_parity_common.data`` (make's data step) with QSP_DEBIAN_DIR pointing at a temp folder."""
    debian = write_tiny_dataset(tmp_path / "deb", gz=True)
    proc = run_module("quickstart_parity_common.data", "--data-dir", str(tmp_path / "data"), "--no-download", "--no-apt",
                      env={"QSP_DEBIAN_DIR": str(debian)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "FashionMNIST ready in" in proc.stdout
    assert all((tmp_path / "data" / "FashionMNIST" / "raw" / n).is_file() for n in ALL_FILES)


def test_data_step_cli_nothing_anywhere(tmp_path):
    proc = run_module("quickstart_parity_common.data", "--data-dir", str(tmp_path / "data"), "--no-download", "--no-apt",
                      env={"QSP_DEBIAN_DIR": str(tmp_path / "no-debian")}, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("python -m quickstart_parity_common.data: error: FashionMNIST not found; tried")
    assert "Traceback" not in proc.stderr
