"""The quickstart in Flax NNX: the same NeuralNetwork, initialiser, loss and SGD step as ``jax_impl.model`` /
``jax_impl.train`` (Linen) and ``reference_torch``, written the way Flax's docs now recommend.

NNX modules are Python objects that own their parameters (as torch modules do); ``nnx.jit`` and
``nnx.value_and_grad`` split the object into a pure pytree of state and merge it back around the
traced function, so the step is still one compiled pure function underneath. Parameter paths are
the Linen ones (``linear_relu_stack_0/kernel``, ``[in, out]``), so ``nnx.state(model, nnx.Param)``
as a dict *is* a Linen params tree. ``parity/test_nnx.py`` proves it trains as torch does.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .model import IN_FEATURES, NUM_CLASSES, layer_name, torch_linear_init
from .train import make_optimizer

Batch = tuple[jax.Array, jax.Array]  # (x float32 (B, 784), y int32 (B,))


class NeuralNetwork(nnx.Module):
    """Flatten, ``Linear -> relu`` per hidden width, ``Linear(.., 10)``, each layer drawn as torch's
    ``nn.Linear`` draws it. Layers are attributes named as Linen names them."""

    def __init__(self, hidden: Sequence[int] = (512, 512), *, rngs: nnx.Rngs):
        self.hidden = tuple(int(h) for h in hidden)
        fan_in = IN_FEATURES
        for i, width in enumerate((*self.hidden, NUM_CLASSES)):
            init = torch_linear_init(fan_in)
            setattr(self, layer_name(2 * i), nnx.Linear(fan_in, width, kernel_init=init, bias_init=init, rngs=rngs))
            fan_in = width

    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))  # (B, 784)
        for i in range(len(self.hidden)):
            x = nnx.relu(getattr(self, layer_name(2 * i))(x))  # (B, width)
        return getattr(self, layer_name(2 * len(self.hidden)))(x)  # (B, 10)


def load_params(model: NeuralNetwork, params) -> NeuralNetwork:
    """Put a Linen-layout params tree (``{"linear_relu_stack_0": {"kernel", "bias"}, ...}``) into
    ``model``, checked leaf by leaf for name and shape; returns ``model``."""
    layers = {layer_name(2 * i): getattr(model, layer_name(2 * i)) for i in range(len(model.hidden) + 1)}
    for name, layer in params.items():
        if name not in layers:
            raise ValueError(f"{name}: no such layer in NeuralNetwork{model.hidden}")
        linear = layers[name]
        for part in ("kernel", "bias"):
            value = jnp.asarray(layer[part], jnp.float32)
            param = getattr(linear, part)
            if value.shape != param[...].shape:
                raise ValueError(f"{name}/{part}: shape {value.shape}, the model has {param[...].shape}")
            param[...] = value
    return model


def params_of(model: NeuralNetwork) -> dict:
    """The model's parameters as a plain Linen-layout dict of arrays (``nnx.state`` to pure dict)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def create_optimizer(model: NeuralNetwork, lr: float = 1e-3, momentum: float = 0.0,
                     weight_decay: float = 0.0) -> nnx.Optimizer:
    """``nnx.Optimizer`` over the model's ``nnx.Param`` leaves with the same optax chain as Linen's
    ``create_train_state`` (``jax_impl.train.make_optimizer``: torch's SGD semantics)."""
    return nnx.Optimizer(model, make_optimizer(lr, momentum, weight_decay), wrt=nnx.Param)


def loss_fn(model: NeuralNetwork, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch, as ``nn.CrossEntropyLoss()``."""
    logits = model(x)  # (B, 10)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit(donate_argnames=("model", "optimizer"))  # XLA may write the new params and optax state over the old
def train_step(model: NeuralNetwork, optimizer: nnx.Optimizer, batch: Batch) -> dict:
    """One SGD step, updating ``model`` and ``optimizer`` in place; returns ``{"loss": mean CE before
    the update}``. ``nnx.jit`` traces it once per input shape, like ``jax.jit``. The model's and the
    optimizer's buffers are donated: arrays read out of them before the step are deleted by it
    (copy with ``jnp.array(x, copy=True)`` to keep one)."""
    x, y = batch
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)  # grads: an nnx.State of the Params
    optimizer.update(model, grads)
    return {"loss": loss}


def train_epoch(model: NeuralNetwork, optimizer: nnx.Optimizer, data: Batch, batch_size: int = 64) -> np.ndarray:
    """One pass over ``data`` in file order (the last partial batch kept), one jitted step per
    batch; returns every step's loss (host float32, read once at the end)."""
    x, y = data
    losses = [train_step(model, optimizer, (x[i:i + batch_size], y[i:i + batch_size]))["loss"]
              for i in range(0, x.shape[0], batch_size)]
    return np.asarray(jnp.stack(losses))


@nnx.jit
def _batch_metrics(model: NeuralNetwork, x: jax.Array, y: jax.Array):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), jnp.sum(jnp.argmax(logits, 1) == y)


def evaluate(model: NeuralNetwork, data: Batch, batch_size: int = 64) -> tuple[float, float]:
    """The tutorial's test arithmetic: (correct / size, mean of the per-batch mean losses, summed
    on the host in float64 as ``test_loss += loss.item()``)."""
    x, y = data
    test_loss, correct, batches = 0.0, 0, 0
    for i in range(0, x.shape[0], batch_size):
        loss, right = _batch_metrics(model, x[i:i + batch_size], y[i:i + batch_size])
        test_loss += float(loss)
        correct += int(right)
        batches += 1
    return correct / x.shape[0], test_loss / batches
