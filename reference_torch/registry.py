"""The torch side of every model pair, by the ``--model`` names of ``quickstart_parity_common.models``;
mirrors ``jax_impl/registry.py``.

``module(hidden)`` builds the model (torch draws its weights in the constructor) and ``run`` is the
quickstart around it (``python -m reference_torch --model NAME``). The torch side needs no step or epoch
hook: the tutorial's ``train.train_epoch`` trains any module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from . import cnn_train, train
from .cnn import CNN
from .model import NeuralNetwork

__all__ = ["MODELS", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """One model on the torch side: its constructor and its quickstart."""

    module: Callable[[tuple[int, ...]], nn.Module]
    run: Callable


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(NeuralNetwork, train.run),
    "cnn": ModelEntry(lambda hidden: CNN(), cnn_train.run),
}
