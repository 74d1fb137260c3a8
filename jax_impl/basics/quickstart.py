"""The quickstart's model, initialiser, loss and train step in Flax Linen (``jax_impl.model`` and
``jax_impl.train``), shown beside torch and Flax NNX (``jax_impl/nnx_model.py``)."""
from __future__ import annotations

from jax_impl import train
from jax_impl.model import NeuralNetwork, torch_linear_init

__all__ = ["NeuralNetwork", "loss_fn", "torch_linear_init", "train_step"]

loss_fn = train.loss_fn
train_step = train._train_step  # the pure step; jax_impl.train.train_step is jax.jit of it
