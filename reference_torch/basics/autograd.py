"""The tutorial's autograd chapter in torch; ``jax_impl/basics/autograd.py`` has the same functions.

Every function takes and returns numpy, so the two sides can be compared number by number.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["detach_grad", "frozen_bias", "graph", "jacobian_products", "loss_and_logits", "single_layer", "tracking",
           "tutorial_inputs"]


def tutorial_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """``x = ones(5)``, ``y = zeros(3)``, ``w = randn(5, 3)``, ``b = randn(3)`` (torch's generator)."""
    torch.manual_seed(seed)
    return {"x": torch.ones(5).numpy(), "y": torch.zeros(3).numpy(),
            "w": torch.randn(5, 3).numpy(), "b": torch.randn(3).numpy()}


def loss_and_logits(w, b, x, y):
    """(loss, z): ``z = x @ w + b``, ``loss = binary_cross_entropy_with_logits(z, y)``; autograd
    records every operation on tensors that require grad as it runs."""
    z = torch.matmul(x, w) + b
    return F.binary_cross_entropy_with_logits(z, y), z


def single_layer(x, y, w, b) -> dict[str, np.ndarray]:
    """``loss.backward()`` fills ``w.grad`` and ``b.grad``: the gradients live on the leaves."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    w = torch.tensor(w, requires_grad=True)
    b = torch.tensor(b, requires_grad=True)
    loss, z = loss_and_logits(w, b, x, y)
    loss.backward()
    return {"z": z.detach().numpy(), "loss": loss.detach().numpy(), "grad_w": w.grad.numpy(), "grad_b": b.grad.numpy()}


def frozen_bias(x, y, w, b) -> dict[str, np.ndarray | None]:
    """Only ``w`` requires grad (a frozen parameter): ``b.grad`` stays None."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    w = torch.tensor(w, requires_grad=True)
    b = torch.tensor(b)  # requires_grad=False
    F.binary_cross_entropy_with_logits(torch.matmul(x, w) + b, y).backward()
    return {"grad_w": w.grad.numpy(), "grad_b": None if b.grad is None else b.grad.numpy()}


def tracking(x, w, b) -> dict[str, bool]:
    """``requires_grad`` of ``z`` normally, under ``torch.no_grad()`` and after ``detach()``: True, False, False."""
    x = torch.as_tensor(x)
    w = torch.tensor(w, requires_grad=True)
    b = torch.tensor(b, requires_grad=True)
    z = torch.matmul(x, w) + b
    with torch.no_grad():
        z_no_grad = torch.matmul(x, w) + b
    return {"tracked": z.requires_grad, "no_grad": z_no_grad.requires_grad, "detach": z.detach().requires_grad}


def detach_grad(x, w, b) -> np.ndarray:
    """Gradient of ``sum(z.detach() ** 2 + z)`` w.r.t. ``w``: the detached term contributes nothing."""
    x = torch.as_tensor(x)
    w = torch.tensor(w, requires_grad=True)
    z = torch.matmul(x, w) + torch.as_tensor(b)
    (z.detach() ** 2 + z).sum().backward()
    return w.grad.numpy()


def jacobian_products(n: int = 5) -> dict[str, np.ndarray]:
    """``inp = eye(n)``, ``out = (inp + 1) ** 2``, ``out.backward(ones)`` twice, ``grad.zero_()``, once more.

    ``backward`` *accumulates* into ``inp.grad``: 4s and 2s, then 8s and 4s, then 4s and 2s again.
    """
    inp = torch.eye(n, requires_grad=True)
    out = (inp + 1).pow(2)
    out.backward(torch.ones_like(inp), retain_graph=True)
    first = inp.grad.clone()
    out.backward(torch.ones_like(inp), retain_graph=True)
    second = inp.grad.clone()
    inp.grad.zero_()
    out.backward(torch.ones_like(inp), retain_graph=True)
    return {"first": first.numpy(), "second": second.numpy(), "after_zero": inp.grad.numpy()}


def graph(x, y, w, b) -> str:
    """What the tutorial prints: ``z.grad_fn`` and ``loss.grad_fn``, the nodes autograd recorded while
    the forward ran (each links to its inputs' nodes by ``next_functions``)."""
    w, b = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    loss, z = loss_and_logits(w, b, torch.as_tensor(x), torch.as_tensor(y))
    return f"z: {type(z.grad_fn).__name__}, loss: {type(loss.grad_fn).__name__}"
