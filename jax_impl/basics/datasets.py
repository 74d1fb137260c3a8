"""Tutorial chapter "Datasets & DataLoaders" in JAX, mirroring ``reference_torch/basics/datasets.py``.

No Dataset/DataLoader classes are needed: the data are arrays, a batch is a slice, and shuffling
is a permutation drawn from an explicit key that the caller splits per epoch.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from quickstart_parity_common.data import CLASSES, to_float
from quickstart_parity_common.image_folder import read_annotations

__all__ = ["CustomImageDataset", "batch_iterator", "sample", "sample_grid", "shuffled_orders"]


def sample(images: np.ndarray, labels: np.ndarray, index: int) -> tuple[np.ndarray, str]:
    """``images[index]`` scaled as ToTensor scales it, and its class name."""
    return to_float(images[index]), CLASSES[int(labels[index])]


class CustomImageDataset:
    """The same folder and CSV, read with PIL and numpy: uint8 (1, H, W) like ``read_image``."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        self.img_labels = read_annotations(annotations_file)
        self.img_dir = img_dir
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.img_labels)

    def __getitem__(self, idx):
        name, label = self.img_labels[idx]
        with Image.open(os.path.join(self.img_dir, name)) as im:
            image = np.asarray(im.convert("L"))[None]  # uint8 (1, H, W)
        if self.transform:
            image = self.transform(image)
        if self.target_transform:
            label = self.target_transform(label)
        return image, label


def batch_iterator(x: np.ndarray, y: np.ndarray, batch_size: int, key: jax.Array) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Shuffled minibatches of one epoch, the order drawn from ``key`` (last partial batch kept)."""
    perm = np.asarray(jax.random.permutation(key, len(y)))
    for i in range(0, len(y), batch_size):
        idx = perm[i:i + batch_size]
        yield x[idx], y[idx]


def shuffled_orders(n: int, batch_size: int = 64, seed: int = 0, epochs: int = 2) -> list[np.ndarray]:
    """The sample order of ``epochs`` passes; the key is split explicitly, one subkey per epoch."""
    key = jax.random.key(seed)
    index = np.arange(n)
    orders = []
    for _ in range(epochs):
        key, epoch_key = jax.random.split(key)
        orders.append(np.concatenate([b for b, _ in batch_iterator(index, index, batch_size, epoch_key)]))
    return orders


def sample_grid(images: np.ndarray, labels: np.ndarray, path: str | Path, seed: int = 0) -> list[int]:
    """The 3x3 grid, indices from ``jax.random.randint`` with an explicit key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = [int(i) for i in jax.random.randint(jax.random.key(seed), (9,), 0, len(labels))]
    figure = plt.figure(figsize=(6, 6))
    for i, sample_idx in enumerate(indices, start=1):
        figure.add_subplot(3, 3, i)
        plt.title(CLASSES[int(labels[sample_idx])])
        plt.axis("off")
        plt.imshow(images[sample_idx], cmap="gray")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return indices
