"""Functional autodiff in torch (``torch.func``), the counterpart of ``jax.grad``/``vmap``/``jvp``;
``jax_impl/basics/functional.py`` has the same functions. All take and return numpy."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap
from torch.utils.checkpoint import checkpoint

from reference_torch.model import NeuralNetwork

__all__ = [
    "checkpointed",
    "custom_grad",
    "higher_order",
    "hvp",
    "jacobians",
    "log1pexp",
    "model_grad",
    "per_sample_grads",
]


def _tensors(tree: dict) -> dict:
    return {k: torch.as_tensor(v) for k, v in tree.items()}


def model_grad(state_dict: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """``torch.func.grad`` of the loss as a function of a params dict, through ``functional_call``:
    no ``.grad`` attribute, no ``backward()``; the model object only supplies the code."""
    model = NeuralNetwork()

    def loss_fn(params, X, Y):
        return F.cross_entropy(functional_call(model, params, (X,)), Y)

    grads = grad(loss_fn)(_tensors(state_dict), torch.as_tensor(x), torch.as_tensor(y).long())
    return {k: g.numpy() for k, g in grads.items()}


def per_sample_grads(state_dict: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """``vmap(grad(loss), in_dims=(None, 0, 0))``: one gradient per example, (B, *param.shape),
    in one batched computation."""
    model = NeuralNetwork()

    def loss_one(params, X, Y):  # one example: add the batch axis the model expects
        return F.cross_entropy(functional_call(model, params, (X[None],)), Y[None])

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(_tensors(state_dict), torch.as_tensor(x), torch.as_tensor(y).long())
    return {k: g.numpy() for k, g in grads.items()}


def _layer(w, b, x):
    return torch.sigmoid(x @ w + b)  # the autograd chapter's layer, with its sigmoid


def jacobians(x, w, b) -> dict:
    """d sigmoid(x @ w + b) / dx by reverse mode (``jacrev``, one VJP per output) and forward mode
    (``jacfwd``, one JVP per input), and the Hessian of the summed BCE loss w.r.t. ``b``."""
    x, w, b = map(torch.as_tensor, (x, w, b))
    loss = lambda b: F.binary_cross_entropy_with_logits(x @ w + b, torch.zeros(3))
    return {"jacrev": jacrev(_layer, argnums=2)(w, b, x).numpy(), "jacfwd": jacfwd(_layer, argnums=2)(w, b, x).numpy(),
            "hessian": hessian(loss)(b).numpy()}


def hvp(x, w, b, v) -> np.ndarray:
    """Hessian-vector product of the BCE loss w.r.t. ``w``: forward-over-reverse, ``jvp`` of
    ``grad``; never builds the (15, 15) Hessian."""
    x, w, b, v = map(torch.as_tensor, (x, w, b, v))
    loss = lambda w: F.binary_cross_entropy_with_logits(x @ w + b, torch.zeros(3))
    return jvp(grad(loss), (w,), (v,))[1].numpy()


def log1pexp(x):
    """``log(1 + exp(x))`` as written: its autograd derivative ``exp(x) / (1 + exp(x))`` is
    ``inf / inf = nan`` for large ``x`` in float32."""
    return torch.log(1 + torch.exp(x))


class _Log1pexp(torch.autograd.Function):
    """The same value with a hand-written backward: ``sigmoid(x)``, finite everywhere."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.log(1 + torch.exp(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


def custom_grad(x: np.ndarray) -> dict:
    """Value and gradient of ``log1pexp`` at ``x``, by autograd and by the custom backward."""
    out = {}
    for name, fn in (("autograd", log1pexp), ("custom", _Log1pexp.apply)):
        t = torch.tensor(x, requires_grad=True)
        y = fn(t)
        y.sum().backward()
        out[name] = {"value": y.detach().numpy(), "grad": t.grad.numpy()}
    return out


def _segment(h, w1, w2):
    return torch.tanh(torch.tanh(h @ w1) @ w2)


def checkpointed(ws: list, h: np.ndarray) -> dict:
    """Gradients of ``sum(h)`` through 4 two-layer tanh segments, plain and with every segment under
    ``torch.utils.checkpoint`` (recomputed in backward). What backward keeps is *measured* by counting
    the tensors autograd saves (``saved_tensors_hooks``) and their bytes."""
    out = {}
    for mode in ("plain", "checkpoint"):
        weights = [torch.tensor(w, requires_grad=True) for w in ws]
        saved = []

        def pack(t, saved=saved):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = torch.as_tensor(h)
            for i in range(0, len(weights), 2):
                args = (x, weights[i], weights[i + 1])
                x = checkpoint(_segment, *args, use_reentrant=False) if mode == "checkpoint" else _segment(*args)
            x.sum().backward()
        out[mode] = {"grads": [w.grad.numpy() for w in weights], "saved": len(saved), "saved_bytes": sum(saved)}
    return out


def higher_order(x: float) -> dict:
    """First and second derivative of ``x ** 3 * sin(x)``: ``create_graph=True`` keeps the first
    gradient differentiable, then ``autograd.grad`` of it."""
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    y = t ** 3 * torch.sin(t)
    (d1,) = torch.autograd.grad(y, t, create_graph=True)
    (d2,) = torch.autograd.grad(d1, t)
    return {"first": float(d1.detach()), "second": float(d2)}
