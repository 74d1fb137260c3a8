"""Tutorial chapter "Optimizing model parameters" in JAX, mirroring ``reference_torch/basics/optimization.py``.

Flax NNX throughout: ``nnx.Optimizer`` holds the model's reference, an optax transform (a pair of
pure functions, ``init`` and ``update``) and its state, a pytree like the params. Gradients are
return values, so there is nothing to zero. The train loop is written out (``train_epoch``: one
compiled step per batch, as the tutorial's loop); the quickstart program's own epoch,
``jax_impl.train.train_epoch``, compiles the whole loop as one ``lax.scan`` of Linen steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_impl import nnx_model
from quickstart_parity_common.convert import hidden_of

__all__ = ["evaluate", "forgotten_zero_grad", "sgd_steps", "train_epoch"]

evaluate = nnx_model.evaluate  # the tutorial's test loop, NNX


@nnx.jit(donate_argnames=("model", "optimizer"))  # XLA may write the new params over the old ones
def _train_step(model: nnx.Module, optimizer: nnx.Optimizer, X: jax.Array, Y: jax.Array) -> jax.Array:
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(X), Y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)  # loss.backward(), but returned: nothing to zero
    optimizer.update(model, grads)  # optimizer.step(): params and optax state updated in place
    return loss


def train_epoch(x: np.ndarray, y: np.ndarray, model: nnx.Module, optimizer: nnx.Optimizer, batch_size: int = 64,
                log=print) -> np.ndarray:
    """The tutorial's ``train_loop`` in Flax NNX: the same loop, one compiled step per batch.

    ``optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)`` is the train state: it keeps
    a reference to the model, the optax transform and its state (``opt_state``), as torch's optimizer
    keeps the parameters and their buffers. ``nnx.jit`` splits both objects into pytrees around the
    compiled step and writes the results back, so the loop reads like torch's.
    """
    losses = []
    for batch, i in enumerate(range(0, len(y), batch_size)):
        loss = _train_step(model, optimizer, jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size]))
        losses.append(loss)
        if log is not None and batch % 100 == 0:
            log(f"loss: {float(loss):>7f}  [{min(i + batch_size, len(y)):>5d}/{len(y):>5d}]")
    return np.asarray(jnp.stack(losses))


def sgd_steps(params: dict, x: np.ndarray, y: np.ndarray, steps: int, batch_size: int = 64,
              lr: float = 1e-3, momentum: float = 0.9) -> dict:
    """``steps`` batches of the NNX step (``nnx.value_and_grad``, then ``optimizer.update``) with
    ``optax.sgd(momentum=...)``, from ``params`` (Flax layout: NNX's paths are Linen's); returns the
    losses, the final params and the momentum trace (``optax.tree_utils.tree_get(opt_state, "trace")``)."""
    model = nnx_model.load_params(nnx_model.NeuralNetwork(hidden_of(params), rngs=nnx.Rngs(0)), params)
    optimizer = nnx.Optimizer(model, optax.sgd(lr, momentum=momentum), wrt=nnx.Param)  # trace starts at zeros
    losses = []
    for i in range(steps):
        batch = slice(i * batch_size, (i + 1) * batch_size)
        losses.append(float(_train_step(model, optimizer, jnp.asarray(x[batch]), jnp.asarray(y[batch]))))
    return {"losses": np.array(losses), "params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
            "momentum": nnx.to_pure_dict(optax.tree_utils.tree_get(optimizer.opt_state, "trace"))}


def forgotten_zero_grad(params: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """``nnx.grad`` on two batches: each call returns that batch's gradient alone (the last
    layer's bias here); accumulating would be an explicit ``+``."""
    model = nnx_model.load_params(nnx_model.NeuralNetwork(hidden_of(params), rngs=nnx.Rngs(0)), params)
    grads = [nnx.to_pure_dict(nnx.grad(nnx_model.loss_fn)(model, jnp.asarray(X), jnp.asarray(Y)))
             ["linear_relu_stack_4"]["bias"] for X, Y in ((x[:64], y[:64]), (x[64:128], y[64:128]))]
    return {"after_first": np.asarray(grads[0]), "after_second": np.asarray(grads[1])}
