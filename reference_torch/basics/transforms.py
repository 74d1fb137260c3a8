"""Tutorial chapter "Transforms" in torch; ``jax_impl/basics/transforms.py`` has the same functions."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Lambda, ToTensor

__all__ = ["one_hot", "to_tensor"]


def to_tensor(image: np.ndarray):
    """``ToTensor()`` of a uint8 (28, 28) image: float32 (1, 28, 28) in [0, 1] (the PIL path the dataset takes)."""
    return ToTensor()(Image.fromarray(image, mode="L"))


one_hot_transform = Lambda(lambda y: torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(y), value=1))


def one_hot(label: int):
    """The tutorial's ``target_transform``: ``zeros(10).scatter_(0, tensor(y), value=1)``."""
    return one_hot_transform(label)
