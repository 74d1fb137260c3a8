"""The quickstart's model, initialiser, loss and train step in torch, shown beside Flax Linen
(``jax_impl/basics/quickstart.py``) and Flax NNX (``jax_impl/nnx_model.py``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from reference_torch.model import NeuralNetwork

__all__ = ["NeuralNetwork", "loss_fn", "torch_linear_init", "train_step"]


def torch_linear_init(linear: nn.Linear) -> None:
    """What ``nn.Linear.reset_parameters`` draws at construction, spelled out: the weight by
    ``kaiming_uniform_(a=sqrt(5))``, whose bound sqrt(6 / ((1 + 5) * fan_in)) is 1/sqrt(fan_in), and
    the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)). (``quickstart_parity_guide/test_chapters.py`` checks it redraws
    a fresh layer's numbers exactly.)"""
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(linear.in_features)
    nn.init.uniform_(linear.bias, -bound, bound)


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
