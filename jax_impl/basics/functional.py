"""Functional autodiff in JAX, mirroring ``reference_torch/basics/functional.py`` (``torch.func``).

In JAX these are the only autodiff there is: ``grad``, ``vmap``, ``jacrev``/``jacfwd``, ``jvp``
compose freely because each takes a function and returns a function.
"""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.ad_checkpoint import print_saved_residuals

from jax_impl.model import NeuralNetwork

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


def model_grad(params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """``jax.grad`` of the loss w.r.t. the params pytree; ``apply`` is already functional."""
    model = NeuralNetwork()

    def loss_fn(params, X, Y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, X), Y).mean()

    return jax.device_get(jax.grad(loss_fn)(params, x, y))


def per_sample_grads(params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """``vmap(grad(loss), in_axes=(None, 0, 0))``: (B, *leaf.shape) per leaf."""
    model = NeuralNetwork()

    def loss_one(params, X, Y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, X[None]), Y[None]).mean()

    return jax.device_get(jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y))


def _layer(w, b, x):
    return jax.nn.sigmoid(x @ w + b)


def jacobians(x, w, b) -> dict:
    """``jax.jacrev`` / ``jax.jacfwd`` of the layer w.r.t. ``x``; ``jax.hessian`` (jacfwd of jacrev)
    of the loss w.r.t. ``b``."""
    loss = lambda b: optax.sigmoid_binary_cross_entropy(x @ w + b, jnp.zeros(3)).mean()
    return {"jacrev": np.asarray(jax.jacrev(_layer, argnums=2)(w, b, x)),
            "jacfwd": np.asarray(jax.jacfwd(_layer, argnums=2)(w, b, x)),
            "hessian": np.asarray(jax.hessian(loss)(b))}


def hvp(x, w, b, v) -> np.ndarray:
    """``jax.jvp(jax.grad(loss), (w,), (v,))``: forward-over-reverse."""
    loss = lambda w: optax.sigmoid_binary_cross_entropy(x @ w + b, jnp.zeros(3)).mean()
    return np.asarray(jax.jvp(jax.grad(loss), (w,), (v,))[1])


def log1pexp(x):
    """``log(1 + exp(x))`` as written: its derivative is ``nan`` for large ``x``."""
    return jnp.log(1 + jnp.exp(x))


@jax.custom_vjp
def _log1pexp(x):
    return jnp.log(1 + jnp.exp(x))


def _log1pexp_fwd(x):
    return _log1pexp(x), x  # (output, residuals saved for backward)


def _log1pexp_bwd(x, g):
    return (g * jax.nn.sigmoid(x),)


_log1pexp.defvjp(_log1pexp_fwd, _log1pexp_bwd)


def custom_grad(x: np.ndarray) -> dict:
    """Value and gradient of ``log1pexp``, by ``jax.grad`` and by the ``custom_vjp``."""
    out = {}
    for name, fn in (("autograd", log1pexp), ("custom", _log1pexp)):
        value = fn(jnp.asarray(x))
        g = jax.grad(lambda x, fn=fn: fn(x).sum())(jnp.asarray(x))
        out[name] = {"value": np.asarray(value), "grad": np.asarray(g)}
    return out


def _segment(h, w1, w2):
    return jnp.tanh(jnp.tanh(h @ w1) @ w2)


def checkpointed(ws: list, h: np.ndarray) -> dict:
    """The same four segments, plain and under ``jax.checkpoint``. Measured two ways: the residuals
    ``jax.grad`` keeps (``print_saved_residuals``: count and bytes) and the compiled gradient's
    temporary buffer size (``jit(grad(f)).lower(...).compile().memory_analysis()``)."""
    ws = [jnp.asarray(w) for w in ws]
    out = {}
    for mode in ("plain", "checkpoint"):
        segment = jax.checkpoint(_segment) if mode == "checkpoint" else _segment

        def f(ws, h, segment=segment):
            for i in range(0, len(ws), 2):
                h = segment(h, ws[i], ws[i + 1])
            return h.sum()

        text = io.StringIO()
        with redirect_stdout(text):
            print_saved_residuals(f, ws, h)  # one line per residual: "f32[1024,256] output of tanh ..."
        shapes = [line.split()[0] for line in text.getvalue().strip().splitlines()]
        saved_bytes = sum(4 * int(np.prod([int(d) for d in s[4:-1].split(",") if d])) for s in shapes)  # f32[...]
        temp = jax.jit(jax.grad(f)).lower(ws, h).compile().memory_analysis().temp_size_in_bytes
        out[mode] = {"grads": [np.asarray(g) for g in jax.grad(f)(ws, h)], "saved": len(shapes),
                     "saved_bytes": saved_bytes, "compiled_temp_bytes": int(temp)}
    return out


def higher_order(x: float) -> dict:
    """``jax.grad(jax.grad(f))``: the gradient is a function, so differentiate it again."""
    f = lambda x: x ** 3 * jnp.sin(x)
    x = jnp.float32(x)
    return {"first": float(jax.grad(f)(x)), "second": float(jax.grad(jax.grad(f))(x))}
