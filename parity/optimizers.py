"""Placeholder until the optimizers branch lands: SGD with torch.optim semantics on both sides."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from jax_impl.train import make_optimizer


@dataclass(frozen=True)
class SGD:
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def torch(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def optax(self):
        return make_optimizer(self.lr, self.momentum, self.weight_decay)


class Adam:  # placeholder
    pass


class AdamW:  # placeholder
    pass
