"""``CNN``: the convnet of ``reference_torch/cnn.py`` in Flax Linen, same layer names, NHWC inside.

Three places where Flax's defaults are not torch's, each matched here (``parity/test_checker.py``
shows the checker catching each default):

- torch's ``padding=1`` at stride 2 is explicit ``((1, 1), (1, 1))``, not ``'SAME'`` (which pads
  (0, 1) for a 3x3 kernel at stride 2 on an even size);
- ``BatchNorm`` below is torch's: ``momentum`` 0.1 weighs the *new* batch (Flax's 0.9 weighs the
  old average), and ``running_var`` takes the *unbiased* batch variance while the output is
  normalised with the biased one; Flax's ``nn.BatchNorm`` uses the biased one for both;
- the flatten before ``fc1`` transposes NHWC -> NCHW first, so ``fc1``'s kernel is torch's weight
  transposed, like every other Linear (the alternative, permuting fc1's rows in the conversion,
  would make the conversion depend on the model; ``quickstart_parity_common.convert`` stays per layer).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# The shapes and the dropout probability live once, below both sides (the benchmarks count the step's
# matrix products from them, parity draws the dropout masks of that shape).
from quickstart_parity_common.models import CNN_CHANNELS as CHANNELS
from quickstart_parity_common.models import CNN_DROPOUT as DROPOUT
from quickstart_parity_common.models import CNN_FLAT as FLAT
from quickstart_parity_common.models import CNN_HIDDEN as HIDDEN
from quickstart_parity_common.models import NUM_CLASSES

from .model import torch_linear_init

PAD1 = ((1, 1), (1, 1))  # torch padding=1, explicitly on both sides of H and W


class BatchNorm(nn.Module):
    """torch's ``nn.BatchNorm1d/2d`` over the last axis (channels, NHWC).

    Train: normalise with the biased batch variance; running_mean/var move by ``momentum`` (torch's
    convention) towards the batch mean and the *unbiased* batch variance; ``num_batches_tracked``
    counts, as torch's buffer does, so the conversion is lossless. Eval: the running statistics.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), x.dtype))
        var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), x.dtype))
        count = self.variable("batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32))
        if train:
            axes = tuple(range(x.ndim - 1))
            n = math.prod(x.shape[:-1])
            m = x.mean(axes)
            v = ((x - m) ** 2).mean(axes)  # biased: what the output is normalised with
            if not self.is_initializing():
                mean.value = (1 - self.momentum) * mean.value + self.momentum * m
                var.value = (1 - self.momentum) * var.value + self.momentum * self.running_var(v, n)
                count.value = count.value + 1
        else:
            m, v = mean.value, var.value
        return (x - m) * jax.lax.rsqrt(v + self.epsilon) * scale + bias

    def running_var(self, v: jax.Array, n: int) -> jax.Array:
        """What ``running_var`` moves towards: torch's *unbiased* batch variance (Flax's would be ``v``)."""
        return v * (n / (n - 1))


def conv_init(fan_in: int):
    """torch's ``nn.Conv2d`` init for weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in*kh*kw."""
    return torch_linear_init(fan_in)


class CNN(nn.Module):
    """The convnet; ``dropout`` is the Dropout probability (torch's ``p``, Flax's ``rate``)."""

    dropout: float = DROPOUT

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((-1, 28, 28, 1))  # (B, 784) or (B, 28, 28) -> NHWC (one channel: same memory order)
        x = nn.Conv(CHANNELS[0], (3, 3), padding=PAD1, kernel_init=conv_init(9), bias_init=conv_init(9),
                    name="conv1")(x)  # (B, 28, 28, 16)
        x = BatchNorm(name="bn1")(x, train)
        x = nn.relu(x)
        self.sow("intermediates", "relu1", x)
        fan_in = 9 * CHANNELS[0]
        x = nn.Conv(CHANNELS[1], (3, 3), strides=(2, 2), padding=PAD1, kernel_init=conv_init(fan_in),
                    bias_init=conv_init(fan_in), name="conv2")(x)  # (B, 14, 14, 32)
        x = BatchNorm(name="bn2")(x, train)
        x = nn.relu(x)
        self.sow("intermediates", "relu2", x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # (B, 7, 7, 32)
        self.sow("intermediates", "pool", x)
        x = x.transpose(0, 3, 1, 2).reshape((x.shape[0], -1))  # NCHW order, as torch's Flatten: (B, 1568)
        self.sow("intermediates", "flatten", x)
        x = nn.Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        x = nn.Dense(HIDDEN, kernel_init=torch_linear_init(FLAT), bias_init=torch_linear_init(FLAT), name="fc1")(x)
        x = nn.relu(x)
        self.sow("intermediates", "relu3", x)
        return nn.Dense(NUM_CLASSES, kernel_init=torch_linear_init(HIDDEN), bias_init=torch_linear_init(HIDDEN),
                        name="fc2")(x)  # (B, 10)


def init_variables(key: jax.Array, dropout: float = DROPOUT) -> dict:
    """Fresh ``{"params", "batch_stats"}`` of ``CNN`` from ``key``."""
    return dict(CNN(dropout).init(key, jnp.zeros((1, 784), jnp.float32)))
