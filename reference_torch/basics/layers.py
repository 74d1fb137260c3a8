"""Tutorial chapter "Build the neural network" in torch; ``jax_impl/basics/layers.py`` mirrors it.

A minibatch of 3 images walks through Flatten, Linear(784, 20), ReLU, a Sequential and Softmax.
Layers own their parameters (created from torch's global RNG).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["make_layers", "minibatch", "named_parameters", "walk_through"]


def minibatch(seed: int = 0) -> np.ndarray:
    """``torch.rand(3, 28, 28)``: three random "images"."""
    torch.manual_seed(seed)
    return torch.rand(3, 28, 28).numpy()


def make_layers(seed: int = 0) -> dict:
    """``Linear(784, 20)`` and ``Linear(20, 10)`` as the tutorial builds them, with their state_dicts."""
    torch.manual_seed(seed)
    layer1 = nn.Linear(in_features=28 * 28, out_features=20)
    layer2 = nn.Linear(20, 10)
    return {"layer1": layer1, "layer2": layer2}


def walk_through(images: np.ndarray, layers: dict) -> dict:
    """Each stage's output: flatten -> Linear -> ReLU; then Sequential -> logits -> Softmax(dim=1)."""
    input_image = torch.from_numpy(images)
    flatten = nn.Flatten()
    flat_image = flatten(input_image)  # (3, 784)
    hidden1 = layers["layer1"](flat_image)  # (3, 20)
    relu = nn.ReLU()(hidden1)
    seq_modules = nn.Sequential(flatten, layers["layer1"], nn.ReLU(), layers["layer2"])
    logits = seq_modules(input_image)  # (3, 10)
    pred_probab = nn.Softmax(dim=1)(logits)
    # hidden1, relu, logits and the probabilities require grad (the layers' weights do): detach()
    # before .numpy(), which refuses tensors that are part of a graph.
    return {"flat": flat_image.numpy(), "hidden1": hidden1.detach().numpy(), "relu": relu.detach().numpy(),
            "logits": logits.detach().numpy(), "probabilities": pred_probab.detach().numpy(),
            "predicted": pred_probab.argmax(1).numpy()}


def named_parameters(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``model.named_parameters()``: names and shapes (the tutorial prints the first values too)."""
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]
