"""The tutorial's ``NeuralNetwork`` in Flax Linen, initialised from torch's ``nn.Linear`` distributions."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IN_FEATURES = 28 * 28
NUM_CLASSES = 10


def torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), what ``nn.Linear.reset_parameters`` draws for weight and bias.

    (torch's ``kaiming_uniform_(a=sqrt(5))`` has bound ``sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in)``.)
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def layer_name(index: int) -> str:
    """Flax name of torch's ``linear_relu_stack.<index>``: ``linear_relu_stack_<index>``."""
    return f"linear_relu_stack_{index}"


class NeuralNetwork(nn.Module):
    """Flatten, then ``Dense -> relu`` per hidden width, then ``Dense(10)``.

    Parameters are named after torch's keys (``linear_relu_stack_0/kernel`` is
    ``linear_relu_stack.0.weight`` transposed). With ``capture_intermediates=True`` and
    ``mutable=["intermediates"]`` every layer's output is recorded under the torch index of its
    layer (flatten, each Dense, each relu), for layer-by-layer comparison.
    """

    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))  # (B, 784)
        self.sow("intermediates", "flatten", x)
        for i, width in enumerate(self.hidden):
            init = torch_linear_init(x.shape[-1])
            x = nn.Dense(width, kernel_init=init, bias_init=init, name=layer_name(2 * i))(x)
            x = nn.relu(x)  # (B, width)
            self.sow("intermediates", layer_name(2 * i + 1), x)
        init = torch_linear_init(x.shape[-1])
        return nn.Dense(NUM_CLASSES, kernel_init=init, bias_init=init, name=layer_name(2 * len(self.hidden)))(x)  # (B, 10)


# ``--model NAME`` -> a constructor taking ``hidden``; a new architecture is one entry here (and its
# twin in reference_torch/model.py), nothing in train.py changes.
MODELS: dict[str, Callable[[Sequence[int]], nn.Module]] = {"mlp": NeuralNetwork}


def build_model(name: str = "mlp", hidden: Sequence[int] = (512, 512)) -> nn.Module:
    """The model ``--model name --hidden ...`` asks for; its weights come from ``init_params``."""
    if name not in MODELS:
        raise ValueError(f"--model {name}: unknown model (use one of {', '.join(MODELS)})")
    return MODELS[name](tuple(hidden))


def count_params(params) -> int:
    """Number of trainable scalars."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


def init_params(key: jax.Array, hidden: Sequence[int] = (512, 512), name: str = "mlp"):
    """Fresh parameters of ``build_model(name, hidden)`` from ``key`` (torch draws them in the constructor)."""
    return build_model(name, hidden).init(key, jnp.zeros((1, IN_FEATURES), jnp.float32))["params"]
