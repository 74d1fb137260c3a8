"""The JAX side of every model pair, by the ``--model`` names of ``quickstart_parity_common.models``;
mirrors ``reference_torch/registry.py``.

``module(hidden)`` builds the Flax module and ``run`` is the quickstart around it
(``python -m jax_impl --model NAME``). What torch's loop does for any module needs a hook per model here:
``create_state(converted, lr, hidden, device, momentum, weight_decay)`` builds the train state from what
``quickstart_parity_common.models.MODELS[name].to_flax`` makes of a torch state_dict, ``train_step`` is the
jitted pure step and ``scan_epoch`` the epoch as one compiled ``lax.scan``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn

from . import cnn_train, train
from .cnn import CNN
from .model import NeuralNetwork

__all__ = ["MODELS", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """One model on the JAX side: its constructor, its quickstart, and its train state, step and epoch."""

    module: Callable[[tuple[int, ...]], nn.Module]
    run: Callable
    create_state: Callable
    train_step: Callable
    scan_epoch: Callable


def _mlp_state(params, lr: float, hidden: tuple[int, ...], device, momentum: float = 0.0, weight_decay: float = 0.0):
    return train.create_train_state(params, lr, hidden, device=device, momentum=momentum, weight_decay=weight_decay)


def _cnn_state(variables, lr: float, hidden: tuple[int, ...], device, momentum: float = 0.0, weight_decay: float = 0.0):
    return cnn_train.create_train_state(variables, train.Config(lr=lr, momentum=momentum, weight_decay=weight_decay),
                                        device)


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(NeuralNetwork, train.run, _mlp_state, train.train_step, train.train_epoch),
    "cnn": ModelEntry(lambda hidden: CNN(), cnn_train.run, _cnn_state, cnn_train.train_step, cnn_train.scan_epoch),
}
