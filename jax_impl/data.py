"""FashionMNIST with numpy only: the same files, the same checks and the same pixels as torchvision."""
from __future__ import annotations

import os

import jax
import numpy as np

from quickstart_parity_common.checkpoint import check_limit
from quickstart_parity_common.data import CLASSES, DEBIAN_DIR, DataError, find_files, read_split, to_float

__all__ = ["CLASSES", "DataError", "device_dataset", "load_fashion_mnist", "to_float"]


def load_fashion_mnist(root: str | os.PathLike = "data", train: bool = True,
                       debian_dir: str | os.PathLike | None = DEBIAN_DIR, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int32 (N,) of one split, in file order; with ``limit``
    its first ``limit`` images.

    Looks in ``<root>/FashionMNIST/raw/`` (plain or .gz), then Debian's folder. A missing set or a
    corrupt file is a DataError naming the file.
    """
    images, labels = read_split(find_files(root, debian_dir), train)
    if limit:
        check_limit(limit, len(images))
        images, labels = images[:limit], labels[:limit]
    return images, labels


def device_dataset(images: np.ndarray, labels: np.ndarray, device: jax.Device | None = None) -> tuple[jax.Array, jax.Array]:
    """The whole split on the device once: float32 (N, 784) pixels scaled as ToTensor does, int32 labels."""
    x = to_float(images).reshape(images.shape[0], -1)  # (N, 784), scaled on the host: bit-equal to ToTensor
    return jax.device_put(x, device), jax.device_put(labels, device)
