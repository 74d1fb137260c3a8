"""Tutorial chapter "Build the neural network" in Flax NNX, mirroring ``reference_torch/basics/layers.py``.

An ``nnx.Linear`` owns its parameters, as ``nn.Linear`` does; they are drawn from the named key
streams of an ``nnx.Rngs`` (``nnx.Rngs(0)``: the ``params`` stream seeded 0) when the layer is built.
Flatten, ReLU and Softmax are plain functions. The Linen form is ``jax_impl/basics/linen/layers.py``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.tree_util import keystr

from jax_impl.model import torch_linear_init

__all__ = ["make_layers", "minibatch", "named_parameters", "walk_through"]


def minibatch(seed: int = 0) -> np.ndarray:
    return np.asarray(jax.random.uniform(jax.random.key(seed), (3, 28, 28)))


def make_layers(seed: int = 0) -> dict[str, nnx.Linear]:
    """``nnx.Linear(784, 20)`` and ``nnx.Linear(20, 10)``, drawn as torch's ``nn.Linear`` draws (uniform
    +-1/sqrt(fan_in); Flax's default is lecun-normal kernels and zero biases)."""
    rngs = nnx.Rngs(seed)
    return {"layer1": nnx.Linear(28 * 28, 20, kernel_init=torch_linear_init(784), bias_init=torch_linear_init(784),
                                 rngs=rngs),
            "layer2": nnx.Linear(20, 10, kernel_init=torch_linear_init(20), bias_init=torch_linear_init(20), rngs=rngs)}


def walk_through(images: np.ndarray, layers: dict[str, nnx.Linear]) -> dict:
    """Each stage's output: flatten -> Linear -> ReLU; then ``nnx.Sequential`` -> logits -> softmax."""
    input_image = jnp.asarray(images)
    flat_image = input_image.reshape(input_image.shape[0], -1)  # (3, 784)
    hidden1 = layers["layer1"](flat_image)  # (3, 20)
    relu = nnx.relu(hidden1)
    seq_modules = nnx.Sequential(lambda x: x.reshape(x.shape[0], -1), layers["layer1"], nnx.relu, layers["layer2"])
    logits = seq_modules(input_image)  # (3, 10)
    pred_probab = jax.nn.softmax(logits, axis=1)
    return {"flat": np.asarray(flat_image), "hidden1": np.asarray(hidden1), "relu": np.asarray(relu),
            "logits": np.asarray(logits), "probabilities": np.asarray(pred_probab),
            "predicted": np.asarray(pred_probab.argmax(1))}


def named_parameters(model: nnx.Module) -> list[tuple[str, tuple[int, ...]]]:
    """``nnx.state(model, nnx.Param)``: the module's parameters as a pytree (``state_dict``'s counterpart;
    ``nnx.update(model, state)`` is ``load_state_dict``), its paths and shapes."""
    flat, _ = jax.tree.flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))  # plain dicts of arrays
    return [(keystr(path, simple=True, separator="/"), tuple(leaf.shape)) for path, leaf in flat]
