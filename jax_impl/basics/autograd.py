"""The tutorial's autograd chapter in JAX, mirroring ``reference_torch/basics/autograd.py``.

Gradients are values returned by ``jax.grad`` / ``jax.vjp``, not state stored on arrays: nothing
accumulates unless the code adds it up, and "frozen" means "not differentiated".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["detach_grad", "frozen_bias", "graph", "jacobian_products", "loss_and_logits", "single_layer", "tracking",
           "tutorial_inputs"]


def tutorial_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """``x = ones(5)``, ``y = zeros(3)``, ``w``, ``b`` normal from an explicit PRNG key."""
    kw, kb = jax.random.split(jax.random.key(seed))
    return {"x": np.ones(5, np.float32), "y": np.zeros(3, np.float32),
            "w": np.asarray(jax.random.normal(kw, (5, 3))), "b": np.asarray(jax.random.normal(kb, (3,)))}


def loss_and_logits(w, b, x, y):
    """The function ``jax.grad`` differentiates: (loss, z). Gradients are taken w.r.t. the arguments
    ``argnums`` names; ``has_aux=True`` says the second output ``z`` is carried along, not differentiated."""
    z = jnp.matmul(x, w) + b
    return optax.sigmoid_binary_cross_entropy(z, y).mean(), z  # binary_cross_entropy_with_logits


def single_layer(x, y, w, b) -> dict[str, np.ndarray]:
    """``jax.value_and_grad`` w.r.t. ``(w, b)`` (argnums 0 and 1): the gradients are returned."""
    (loss, z), (grad_w, grad_b) = jax.value_and_grad(loss_and_logits, argnums=(0, 1), has_aux=True)(w, b, x, y)
    return {"z": np.asarray(z), "loss": np.asarray(loss), "grad_w": np.asarray(grad_w), "grad_b": np.asarray(grad_b)}


def frozen_bias(x, y, w, b) -> dict[str, np.ndarray]:
    """``b`` frozen: it enters the loss through ``jax.lax.stop_gradient``, and the gradient of both
    arguments is asked for (``argnums=(0, 1)``): ``b``'s is computed, and it is zero. (Not asking,
    ``argnums=0``, is the other way to freeze: then no gradient of ``b`` exists at all.)"""
    def loss(w, b):
        return loss_and_logits(w, jax.lax.stop_gradient(b), x, y)[0]

    grad_w, grad_b = jax.grad(loss, argnums=(0, 1))(w, b)
    return {"grad_w": np.asarray(grad_w), "grad_b": np.asarray(grad_b)}


def tracking(x, w, b) -> dict[str, bool]:
    """Does a gradient flow from ``z`` back to ``w``? JAX has no ``requires_grad`` flag; it depends
    on whether ``z`` is computed inside the differentiated function and not under ``stop_gradient``."""
    def flows(fn) -> bool:
        return bool(jnp.any(jax.grad(fn)(w) != 0))

    z_outside = jnp.matmul(x, w) + b  # computed outside the function jax.grad sees: like torch.no_grad()
    return {
        "tracked": flows(lambda w: (jnp.matmul(x, w) + b).sum()),
        "no_grad": flows(lambda w: z_outside.sum()),
        "detach": flows(lambda w: jax.lax.stop_gradient(jnp.matmul(x, w) + b).sum()),
    }


def detach_grad(x, w, b) -> np.ndarray:
    """Gradient of ``sum(stop_gradient(z) ** 2 + z)`` w.r.t. ``w``: ``stop_gradient`` is ``detach()``."""
    def f(w):
        z = jnp.matmul(x, w) + b
        return (jax.lax.stop_gradient(z) ** 2 + z).sum()

    return np.asarray(jax.grad(f)(w))


def jacobian_products(n: int = 5) -> dict[str, np.ndarray]:
    """``jax.vjp`` of ``(inp + 1) ** 2`` at ``eye(n)`` with a cotangent of ones.

    Each call returns the product afresh (4s and 2s); torch's second ``backward`` (8s and 4s) is an
    explicit sum here, and "zeroing" is simply not adding.
    """
    out, vjp_fn = jax.vjp(lambda inp: (inp + 1) ** 2, jnp.eye(n))
    ones = jnp.ones_like(out)
    (first,) = vjp_fn(ones)
    second = first + vjp_fn(ones)[0]  # what torch's accumulation does implicitly
    (after_zero,) = vjp_fn(ones)
    return {"first": np.asarray(first), "second": np.asarray(second), "after_zero": np.asarray(after_zero)}


def graph(x, y, w, b) -> str:
    """``jax.make_jaxpr``: the program ``jax.grad`` builds, traced once with abstract values and printed
    as equations; its primitives are what torch's ``grad_fn`` nodes record (the forward here, then the
    backward written out, where torch keeps the backward inside each node)."""
    jaxpr = jax.make_jaxpr(jax.grad(lambda w, b: loss_and_logits(w, b, x, y)[0], argnums=(0, 1)))(w, b)
    return f"{len(jaxpr.eqns)} equations: " + " ".join(dict.fromkeys(e.primitive.name for e in jaxpr.eqns))
