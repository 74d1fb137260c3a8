"""Tutorial chapter "Optimizing model parameters" in torch; ``jax_impl/basics/optimization.py`` mirrors it.

The optimizer holds references to the parameters and its own state (momentum buffers); gradients
accumulate in ``.grad`` until ``zero_grad()``. The tutorial's train and test loops are
``reference_torch.train.train_epoch`` and ``evaluate``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from reference_torch import train
from reference_torch.model import NeuralNetwork

__all__ = ["evaluate", "forgotten_zero_grad", "sgd_steps", "train_epoch"]

train_epoch = train.train_epoch  # the tutorial's train loop
evaluate = train.evaluate  # the tutorial's test loop


def sgd_steps(state_dict: dict, x: np.ndarray, y: np.ndarray, steps: int, batch_size: int = 64,
              lr: float = 1e-3, momentum: float = 0.9) -> dict:
    """``steps`` batches of ``loss.backward(); optimizer.step(); optimizer.zero_grad()`` with
    ``SGD(momentum=...)``; returns the losses, the final parameters and the momentum buffers
    (``optimizer.state[p]["momentum_buffer"]``), all numpy in torch's names and layout."""
    model = NeuralNetwork()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    for i in range(steps):
        X = torch.as_tensor(x[i * batch_size:(i + 1) * batch_size])
        Y = torch.as_tensor(y[i * batch_size:(i + 1) * batch_size]).long()
        loss = loss_fn(model(X), Y)
        loss.backward()  # adds into every p.grad
        optimizer.step()  # p -= lr * buf, buf = momentum * buf + p.grad
        optimizer.zero_grad()  # p.grad = None (set_to_none=True since torch 2.0)
        losses.append(loss.item())
    names = dict(model.named_parameters())
    return {"losses": np.array(losses),
            "params": {k: p.detach().numpy().copy() for k, p in names.items()},
            "momentum": {k: optimizer.state[p]["momentum_buffer"].numpy().copy() for k, p in names.items()}}


def forgotten_zero_grad(state_dict: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """Two ``backward()`` calls on two batches without ``zero_grad()`` in between: ``.grad`` holds
    the *sum* of both batches' gradients (here: of the last layer's bias)."""
    model = NeuralNetwork()
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    loss_fn = nn.CrossEntropyLoss()
    bias = model.linear_relu_stack[4].bias
    grads = []
    for X, Y in ((x[:64], y[:64]), (x[64:128], y[64:128])):
        loss_fn(model(torch.as_tensor(X)), torch.as_tensor(Y).long()).backward()
        grads.append(bias.grad.clone().numpy())
    return {"after_first": grads[0], "after_second": grads[1]}
