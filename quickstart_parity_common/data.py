"""FashionMNIST on disk: where the IDX files are, getting them, and reading them without trusting them.

Both sides resolve the data the same way (docs/design.md, data rules):

1. ``<data-dir>/FashionMNIST/raw/`` (torchvision's layout), plain or ``.gz`` files;
2. Debian's ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``),
   used only when the data folder holds none of the four files;
3. the torch side and the data step: torchvision's download, with a short socket timeout;
4. the data step only (``python -m quickstart_parity_common.data``, run by ``make``), as root with apt-get:
   ``apt-get install -y dataset-fashion-mnist``.

Rules that keep a user's data theirs:

- A folder holding some but not all of the four files is an error naming what is missing; it is
  never silently completed or replaced by another copy.
- A plain file is the user's unless we wrote it: every plain file this module writes (decompressed
  from a ``.gz``) gets a ``NAME.source`` record next to it holding its source path and both files'
  sha256. A recorded plain file that is still as we wrote it gives way to its source once the
  source changed (a fixed ``.gz`` replaces a stale plain file); any other plain file is never
  overwritten. Nothing is written before all four files validate, so a corrupt ``.gz`` never leaves
  a plain file behind.
- Every file is written under a unique temporary name, fsynced, renamed, and the temporary file
  removed on failure.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# Debian's package installs here; QSP_DEBIAN_DIR moves it (the tests point it at an empty folder).
DEBIAN_DIR = Path(os.environ.get("QSP_DEBIAN_DIR", "/usr/share/datasets/fashion-mnist"))
APT_PACKAGE = "dataset-fashion-mnist"
# Short: offline, a download must fail in seconds, not hang the first `make`.
DOWNLOAD_TIMEOUT_S = 10
# An IDX file larger than this is refused before it is read whole (FashionMNIST's largest is 47 MB):
# a gzip bomb or a wrong file must not exhaust memory.
MAX_IDX_BYTES = 1 << 30

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# (images file, labels file) per split, torchvision's names.
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = FILES[True] + FILES[False]

# IDX magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
_MAGIC = {3: b"\x00\x00\x08\x03", 1: b"\x00\x00\x08\x01"}
_RECORD_SUFFIX = ".source"


class DataError(Exception):
    """The data set cannot be found or a file in it is not a valid IDX file."""


class DataMissing(DataError):
    """No copy of the data set where we looked: the next way to get it may still work."""


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """torchvision's raw folder under ``data_dir``."""
    return Path(data_dir) / "FashionMNIST" / "raw"


def missing_data_message(data_dir: str | os.PathLike) -> str:
    """The one line that names every way to get the data set."""
    return (
        f"FashionMNIST not found: put the four IDX files (plain or .gz) in {raw_dir(data_dir)}/, "
        f"or install Debian's copy with 'apt-get install {APT_PACKAGE}' (goes to {DEBIAN_DIR}/), "
        "or run 'make data' (or 'python -m reference_torch') on a machine with internet so torchvision downloads it"
    )


# ---------------------------------------------------------------------------------------------
# Which file holds each of the four


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(plain: Path) -> Path:
    return plain.with_name(plain.name + _RECORD_SUFFIX)


def _read_record(plain: Path) -> dict | None:
    """The ``.source`` record we wrote next to ``plain``, or None (then ``plain`` is the user's)."""
    try:
        record = json.loads(_record_path(plain).read_text())
        if isinstance(record, dict) and {"source", "source_sha256", "sha256"} <= record.keys():
            return record
    except (OSError, ValueError):
        pass
    return None


def _resolve(folder: Path, name: str) -> Path | None:
    """The file that holds ``name`` in ``folder``: a plain file wins, unless we decompressed it
    from a source that has changed since (and it is still as we wrote it); else the ``.gz``."""
    plain, gz = folder / name, folder / f"{name}.gz"
    if plain.is_file():
        record = _read_record(plain)
        if record is not None:
            source = Path(record["source"])
            if (source.is_file() and _sha256(plain) == record["sha256"]
                    and _sha256(source) != record["source_sha256"]):
                return source  # ours, and stale: its source was replaced (e.g. a fixed .gz)
        return plain
    if gz.is_file():
        return gz
    return None


def _complete(folder: Path, hint: str) -> dict[str, Path] | None:
    """The four files of ``folder``; None if it holds none; DataError naming the missing ones if
    it holds some but not all (a partial set is never mixed with or replaced by another copy)."""
    found = {name: _resolve(folder, name) for name in ALL_FILES}
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return found  # type: ignore[return-value]
    if len(missing) < len(ALL_FILES):
        raise DataError(
            f"{folder}/ holds {len(ALL_FILES) - len(missing)} of the 4 FashionMNIST files; missing: "
            f"{', '.join(missing)} (plain or .gz). {hint}"
        )
    return None


def find_files(data_dir: str | os.PathLike, debian_dir: str | os.PathLike | None = DEBIAN_DIR) -> dict[str, Path]:
    """Map each of the four IDX names to a file: the data folder's if it holds any, else Debian's.

    Raises DataMissing (with ``missing_data_message``) if neither holds any, and DataError naming
    the missing files if one holds some but not all.
    """
    found = _complete(raw_dir(data_dir), "Add them, or empty the folder to use another copy.")
    if found is None and debian_dir is not None:
        found = _complete(Path(debian_dir), f"Reinstall it: apt-get install --reinstall {APT_PACKAGE}.")
    if found is None:
        raise DataMissing(missing_data_message(data_dir))
    return found


# ---------------------------------------------------------------------------------------------
# Reading and validating


def _read_bytes(path: Path) -> bytes:
    """The file's IDX bytes (decompressed if ``.gz``); gzip's CRC and length checks catch corruption."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_IDX_BYTES + 1)
        else:
            if path.stat().st_size > MAX_IDX_BYTES:
                raise DataError(f"{path}: larger than {MAX_IDX_BYTES} bytes; not a FashionMNIST IDX file")
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{path}: decompresses to more than {MAX_IDX_BYTES} bytes; not a FashionMNIST IDX file")
    return data


def parse_idx(data: bytes, ndim: int, path: str | os.PathLike) -> np.ndarray:
    """Parse an unsigned-byte IDX payload of ``ndim`` dimensions; every check names ``path``.

    Zero items is a valid IDX file (``read_split`` refuses an empty split).
    """
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {header})")
    magic = bytes(data[:4])
    if magic != _MAGIC[ndim]:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic.hex()} (expected 0x{_MAGIC[ndim].hex()}, "
            f"unsigned bytes in {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = header + math.prod(dims)  # exact: numpy's int64 product could wrap
    if len(data) != expected:
        raise DataError(
            f"{path}: wrong length {len(data)} bytes for dimensions {dims} "
            f"(expected {expected}); the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read and validate one IDX file (plain or .gz)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), ndim, path)


def check_split(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Cross-check one split's parsed files: as many labels as images, labels in 0..9, not empty."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{image_path}: {images.shape[0]} images but {label_path} has {labels.shape[0]} labels")
    if images.shape[0] == 0:
        # Training on nothing, or a test score of 0/0: refused on both sides, here.
        raise DataError(f"{image_path}: 0 images; each split needs at least one")
    if labels.max() >= len(CLASSES):
        raise DataError(f"{label_path}: label {labels.max()} is outside 0..{len(CLASSES) - 1}")
    return images, labels.astype(np.int32)


def read_split(files: dict[str, Path], train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int32 (N,) of one split, cross-checked."""
    image_name, label_name = FILES[train]
    return check_split(read_idx(files[image_name], 3), read_idx(files[label_name], 1),
                       files[image_name], files[label_name])


def data_identity(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> str:
    """sha256 of both whole splits as parsed: each array's shape and values (labels as uint8).

    Over the decoded pixels and labels rather than the files' bytes, so a ``.gz`` and its decompressed
    copy, or Debian's folder and torchvision's, are one data set; any changed image or label is another.
    """
    h = hashlib.sha256()
    for images, labels in (train, test):
        for array in (np.asarray(images, dtype=np.uint8), np.asarray(labels).astype(np.uint8)):
            h.update(f"{array.shape}".encode() + b"\0")
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], the same arithmetic as torchvision's ToTensor (x / 255)."""
    return images.astype(np.float32) / np.float32(255)


# ---------------------------------------------------------------------------------------------
# Writing: plain files in the raw folder, for torchvision (it reads plain files only)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened and synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(dest: Path, data: bytes) -> None:
    """Write ``dest`` whole or not at all: a unique temporary name in its folder, fsync, rename,
    the temporary file removed on any failure. An OSError becomes DataError naming ``dest``."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the data from other users
        os.replace(tmp, dest)
        tmp = None
        _fsync_dir(dest.parent)
    except OSError as e:
        raise DataError(f"{dest}: cannot write ({type(e).__name__}: {e})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def materialize_raw(data_dir: str | os.PathLike, debian_dir: str | os.PathLike | None = DEBIAN_DIR) -> Path:
    """Make ``<data_dir>/FashionMNIST/raw/`` hold the four plain, validated IDX files.

    torchvision's FashionMNIST reads the plain files only; this decompresses ``.gz`` copies from
    the raw folder, or from Debian's folder when the raw folder holds none, the way torchvision's
    own download leaves the folder. All four files are validated before anything is written; a
    user's plain file is never overwritten (module docstring). Returns the raw folder.
    """
    target = raw_dir(data_dir)
    files = find_files(data_dir, debian_dir)
    derived: dict[str, tuple[Path, bytes]] = {}
    parsed: dict[str, np.ndarray] = {}
    for name, src in files.items():
        data = _read_bytes(src)
        parsed[name] = parse_idx(data, 3 if "images" in name else 1, src)
        if src != target / name:
            derived[name] = (src, data)
    for train in (True, False):
        image_name, label_name = FILES[train]
        check_split(parsed[image_name], parsed[label_name], files[image_name], files[label_name])
    if derived:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{target}: cannot create ({type(e).__name__}: {e})") from None
    for name, (src, data) in derived.items():
        # find_files returns a source other than target/name only where that plain file is absent
        # or ours and stale, so this never replaces a user's file.
        dest = target / name
        atomic_write(dest, data)
        record = {"source": str(src.resolve()), "source_sha256": _sha256(src),
                  "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write(_record_path(dest), (json.dumps(record, indent=1) + "\n").encode())
    return target


# ---------------------------------------------------------------------------------------------
# Getting the data: the ways tried after the data folder and Debian's folder

Log = Callable[[str], object]
Way = Callable[[Path, Log], None]  # puts the files where find_files looks, or raises DataMissing(why not)


def download_torchvision(data_dir: Path, log: Log = print, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """torchvision's download into ``<data_dir>/FashionMNIST/raw/``; any failure is DataMissing,
    and the files a failed download left are removed (torchvision writes them in place)."""
    try:
        # Imported here, not at the top: common is numpy-only (jax_impl imports it and never torch);
        # only the torch side and the data step download.
        from torchvision import datasets  # noqa: PLC0415 -- see the comment above
    except ImportError as e:
        raise DataMissing(f"torchvision's download: torchvision is not importable ({e})") from None
    raw = raw_dir(data_dir)
    before = set(raw.iterdir()) if raw.is_dir() else set()
    log(f"downloading FashionMNIST with torchvision into {raw}/ (socket timeout {timeout:g} s)")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # a closed network must fail, not hang
    try:
        # torchvision reports its progress on stdout; keep stdout for the tutorial's lines.
        with contextlib.redirect_stdout(sys.stderr):
            for train in (True, False):
                datasets.FashionMNIST(root=str(data_dir), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - every failure of the download means the same to the user
        for path in (set(raw.iterdir()) if raw.is_dir() else set()) - before:
            with contextlib.suppress(OSError):
                path.unlink()
        reason = " ".join(str(e).split())[:200]
        raise DataMissing(f"torchvision's download: failed ({type(e).__name__}: {reason})") from None
    finally:
        socket.setdefaulttimeout(old)


def apt_install(data_dir: Path, log: Log = print, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    """``apt-get install -y dataset-fashion-mnist`` where we are root and apt-get exists (then
    ``apt-get update`` and again if the package list lacks it); failure is DataMissing."""
    what = f"apt-get install -y {APT_PACKAGE}"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise DataMissing(f"{what}: not tried (needs root; run it with sudo)")
    if shutil.which("apt-get") is None:
        raise DataMissing(f"{what}: not tried (no apt-get on this system)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def apt(*args: str) -> subprocess.CompletedProcess:
        log(f"running: apt-get {' '.join(args)}")
        return run(["apt-get", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proc = apt("install", "-y", APT_PACKAGE)
    if proc.returncode != 0 and "Unable to locate package" in (proc.stdout or ""):
        apt("update")  # a fresh image has no package lists yet
        proc = apt("install", "-y", APT_PACKAGE)
    if proc.returncode != 0:
        last = ((proc.stdout or "").strip().splitlines() or ["no output"])[-1]
        raise DataMissing(f"{what}: failed (exit {proc.returncode}: {last})")


def prepare(data_dir: str | os.PathLike = "data", debian_dir: str | os.PathLike | None = DEBIAN_DIR,
            ways: Sequence[Way] = (download_torchvision, apt_install), log: Log = print) -> Path:
    """The data step: the data folder, Debian's folder, then each of ``ways`` in turn, until
    ``materialize_raw`` succeeds. Returns the raw folder.

    A corrupt or partial copy stops at once (DataError naming it); only DataMissing moves on.
    If every way fails: DataError naming each way tried and why it failed.
    """
    data_dir = Path(data_dir)
    where = f"{raw_dir(data_dir)}/" + (f" and {debian_dir}/" if debian_dir is not None else "")
    tried = [f"{where}: no FashionMNIST files"]
    for way in (None, *ways):
        if way is not None:
            try:
                way(data_dir, log)
            except DataMissing as e:
                tried.append(str(e))
                continue
        try:
            return materialize_raw(data_dir, debian_dir)
        except DataMissing:
            if way is not None:
                tried.append(f"{getattr(way, '__name__', way)}: reported success but left no files")
    raise DataError("FashionMNIST not found; tried " + "; ".join(f"({i}) {t}" for i, t in enumerate(tried, 1))
                    + f". Put the four IDX files (plain or .gz) in {raw_dir(data_dir)}/")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quickstart_parity_common.data --data-dir data``: put the validated plain IDX files in place,
    getting them if needed (the data step of ``make run`` and ``make test``)."""
    p = argparse.ArgumentParser(prog="python -m quickstart_parity_common.data", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder that gets FashionMNIST/raw/")
    p.add_argument("--no-download", dest="download", action="store_false", default=argparse.SUPPRESS,
                   help="never try torchvision's download (tried by default)")
    p.add_argument("--no-apt", dest="apt", action="store_false", default=argparse.SUPPRESS,
                   help="never run apt-get (tried by default, as root)")
    args = p.parse_args(argv)
    ways = [w for w, on in ((download_torchvision, getattr(args, "download", True)),
                            (apt_install, getattr(args, "apt", True))) if on]
    try:
        folder = prepare(args.data_dir, ways=ways)
    except DataError as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"FashionMNIST ready in {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
