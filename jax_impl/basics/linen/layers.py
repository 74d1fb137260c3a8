"""Tutorial chapter "Build the neural network" in Flax Linen, next to the NNX twin ``jax_impl/basics/layers.py``.

Linen modules hold no parameters: ``init`` returns them, ``apply`` takes them. Flatten, ReLU and
Softmax are plain functions. The quickstart program (``jax_impl/model.py``) is written this way.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from jax_impl.model import torch_linear_init

__all__ = ["make_layers", "minibatch", "named_parameters", "walk_through"]


def minibatch(seed: int = 0) -> np.ndarray:
    return np.asarray(jax.random.uniform(jax.random.key(seed), (3, 28, 28)))


class _Stack(nn.Module):
    """The tutorial's ``Sequential(Flatten, Linear(784, 20), ReLU, Linear(20, 10))`` as a Flax module."""

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(20, kernel_init=torch_linear_init(784), bias_init=torch_linear_init(784), name="layer1")(x)
        x = nn.relu(x)
        return nn.Dense(10, kernel_init=torch_linear_init(20), bias_init=torch_linear_init(20), name="layer2")(x)


def make_layers(seed: int = 0) -> dict:
    """Parameters of both Dense layers, from an explicit key (``{"layer1": {"kernel", "bias"}, ...}``)."""
    return _Stack().init(jax.random.key(seed), jnp.zeros((1, 28, 28)))["params"]


def walk_through(images: np.ndarray, layers: dict) -> dict:
    flat_image = images.reshape(images.shape[0], -1)  # (3, 784)
    hidden1 = nn.Dense(20).apply({"params": layers["layer1"]}, flat_image)  # (3, 20)
    relu = jax.nn.relu(hidden1)
    logits = _Stack().apply({"params": layers}, images)  # (3, 10)
    pred_probab = jax.nn.softmax(logits, axis=1)
    return {"flat": np.asarray(flat_image), "hidden1": np.asarray(hidden1), "relu": np.asarray(relu),
            "logits": np.asarray(logits), "probabilities": np.asarray(pred_probab),
            "predicted": np.asarray(pred_probab.argmax(1))}


def named_parameters(params) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter paths (``linear_relu_stack_0/kernel``, by ``keystr``) and shapes, in ``jax.tree`` order."""
    flat, _ = jax.tree.flatten_with_path(params)
    return [(keystr(path, simple=True, separator="/"), tuple(leaf.shape)) for path, leaf in flat]
