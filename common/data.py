"""FashionMNIST on disk: where the IDX files are, and reading them without trusting them.

Both sides resolve the data the same way (DESIGN.md, data rules):
1. ``<data-dir>/FashionMNIST/raw/`` (torchvision's layout), plain or ``.gz`` files;
2. Debian's ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``);
3. the torch side only: torchvision's download.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

# Debian's package installs here; QSP_DEBIAN_DIR moves it (the tests point it at an empty folder).
DEBIAN_DIR = Path(os.environ.get("QSP_DEBIAN_DIR", "/usr/share/datasets/fashion-mnist"))

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


class DataError(Exception):
    """The data set cannot be found or a file in it is not a valid IDX file."""


def missing_data_message(data_dir: str | os.PathLike) -> str:
    """The one line that names every way to get the data set."""
    raw = Path(data_dir) / "FashionMNIST" / "raw"
    return (
        f"FashionMNIST not found: put the four IDX files (plain or .gz) in {raw}/, "
        f"or install Debian's copy with 'apt-get install dataset-fashion-mnist' (goes to {DEBIAN_DIR}/), "
        "or run 'python -m reference_torch' on a machine with internet so torchvision downloads it"
    )


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """torchvision's raw folder under ``data_dir``."""
    return Path(data_dir) / "FashionMNIST" / "raw"


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_files(data_dir: str | os.PathLike, debian_dir: str | os.PathLike | None = DEBIAN_DIR) -> dict[str, Path]:
    """Map each of the four IDX names to a file, from the first folder that has all four.

    Raises DataError (with ``missing_data_message``) if no folder has them all.
    """
    folders = [raw_dir(data_dir)] + ([Path(debian_dir)] if debian_dir is not None else [])
    for folder in folders:
        found = {name: _find(folder, name) for name in ALL_FILES}
        if all(found.values()):
            return found  # type: ignore[return-value]
    raise DataError(missing_data_message(data_dir))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def parse_idx(data: bytes, ndim: int, path: str | os.PathLike) -> np.ndarray:
    """Parse an unsigned-byte IDX payload of ``ndim`` dimensions; every check names ``path``."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {header})")
    magic = data[:4]
    if magic != _MAGIC[ndim]:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic.hex()} (expected 0x{_MAGIC[ndim].hex()}, "
            f"unsigned bytes in {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path}: wrong length {len(data)} bytes for dimensions {dims} "
            f"(expected {expected}); the file is truncated or corrupt"
        )
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read and validate one IDX file (plain or .gz)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), ndim, path)


def read_split(files: dict[str, Path], train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int32 (N,) of one split, cross-checked."""
    image_name, label_name = FILES[train]
    images = read_idx(files[image_name], 3)
    labels = read_idx(files[label_name], 1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{files[image_name]}: {images.shape[0]} images but {files[label_name]} has "
            f"{labels.shape[0]} labels"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{files[label_name]}: label {labels.max()} is outside 0..{len(CLASSES) - 1}")
    return images, labels.astype(np.int32)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], the same arithmetic as torchvision's ToTensor (x / 255)."""
    return images.astype(np.float32) / np.float32(255)


def materialize_raw(data_dir: str | os.PathLike, debian_dir: str | os.PathLike | None = DEBIAN_DIR) -> Path:
    """Make ``<data_dir>/FashionMNIST/raw/`` hold the four plain, validated IDX files.

    torchvision's FashionMNIST reads the plain files only; this decompresses ``.gz`` copies from
    the raw folder or from Debian's folder next to them (never overwriting a plain file), the way
    torchvision's own download leaves the folder. Every file is validated before it is used.
    Returns the raw folder.
    """
    target = raw_dir(data_dir)
    files = find_files(data_dir, debian_dir)
    for name, src in files.items():
        dest = target / name
        if src == dest:
            continue
        target.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        data = _read_bytes(src)
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    for train in (True, False):
        read_split({n: target / n for n in ALL_FILES}, train)
    return target



def main(argv=None) -> int:
    """``python -m common.data --data-dir data``: put the validated plain IDX files in place."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m common.data", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder that gets FashionMNIST/raw/")
    args = p.parse_args(argv)
    try:
        folder = materialize_raw(args.data_dir)
    except DataError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"FashionMNIST ready in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
