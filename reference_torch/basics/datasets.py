"""Tutorial chapter "Datasets & DataLoaders" in torch; ``jax_impl/basics/datasets.py`` mirrors it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.io import read_image

from quickstart_parity_common.data import CLASSES
from quickstart_parity_common.image_folder import read_annotations

__all__ = ["CustomImageDataset", "batch_iterator", "sample", "sample_grid", "shuffled_orders"]


def sample(dataset, index: int) -> tuple[np.ndarray, str]:
    """``training_data[index]``: the (28, 28) image (ToTensor pixels) and its class name."""
    img, label = dataset[index]
    return img.squeeze().numpy(), CLASSES[label]


class CustomImageDataset(Dataset):
    """The tutorial's dataset: an annotations CSV (file, label) and a folder read with ``read_image``."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        self.img_labels = read_annotations(annotations_file)
        self.img_dir = img_dir
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self):
        return len(self.img_labels)

    def __getitem__(self, idx):
        name, label = self.img_labels[idx]
        image = read_image(os.path.join(self.img_dir, name))  # uint8 (1, H, W)
        if self.transform:
            image = self.transform(image)
        if self.target_transform:
            label = self.target_transform(label)
        return image, label


def shuffled_orders(n: int, batch_size: int = 64, seed: int = 0, epochs: int = 2) -> list[np.ndarray]:
    """The sample order of ``epochs`` passes of ``DataLoader(shuffle=True)``: the generator's hidden
    state advances, so each epoch differs while the whole run repeats from the seed."""
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return [torch.cat(list(loader)).numpy() for _ in range(epochs)]


def sample_grid(dataset, path: str | Path, seed: int = 0) -> list[int]:
    """The tutorial's 3x3 grid of random training images with their class names, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    figure = plt.figure(figsize=(6, 6))
    indices = []
    for i in range(1, 10):
        sample_idx = torch.randint(len(dataset), size=(1,)).item()
        indices.append(sample_idx)
        img, label = dataset[sample_idx]
        figure.add_subplot(3, 3, i)
        plt.title(CLASSES[label])
        plt.axis("off")
        plt.imshow(img.squeeze().numpy(), cmap="gray")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return indices


def batch_iterator(x: np.ndarray, y: np.ndarray, batch_size: int, generator: torch.Generator):
    """Shuffled minibatches of one epoch from ``DataLoader(shuffle=True)`` over in-memory arrays;
    the order comes from ``generator``'s state, which the call advances."""
    loader = DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=batch_size,
                        shuffle=True, generator=generator)
    for xb, yb in loader:
        yield xb.numpy(), yb.numpy()
