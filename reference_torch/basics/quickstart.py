"""The quickstart's model, initialiser, loss and train step in torch, shown beside Flax Linen
(``jax_impl/basics/quickstart.py``) and Flax NNX (``jax_impl/nnx_model.py``)."""
from __future__ import annotations

import torch
from torch import nn

from reference_torch.model import NeuralNetwork

__all__ = ["MLP", "loss_fn", "torch_linear_init", "train_step"]

MLP = NeuralNetwork  # the tutorial's class
torch_linear_init = nn.Linear.reset_parameters  # what every nn.Linear draws at construction


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch (``nn.CrossEntropyLoss()``)."""
    return nn.functional.cross_entropy(model(x), y)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch) -> dict:
    """One step of the tutorial's loop: the model and optimizer change in place."""
    x, y = batch
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return {"loss": loss.detach()}
