"""A small torch model and its Linen port (LayerNorm: torch's epsilon 1e-5, Flax's default 1e-6), and factories as a
user's own module would have them, for the checker's tests and ``python -m parity.check`` in test_port_check_cli.py."""
from __future__ import annotations

import flax.linen as nn
import numpy as np
import torch


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.out = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.fc(x))))


class FlaxNet(nn.Module):
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm(epsilon=self.epsilon, name="norm")(nn.Dense(16, name="fc")(x))
        return nn.Dense(10, name="out")(nn.relu(x))


def make_torch():
    torch.manual_seed(0)
    return TorchNet()


def make_flax():  # a Linen module alone: the command converts torch's weights into it
    return FlaxNet()


def make_flax_default_eps():  # Flax's default LayerNorm epsilon: the classic bug
    return FlaxNet(1e-6)


def sample_inputs():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((16, 8)).astype(np.float32) * 0.05, rng.integers(0, 10, 16))


def raises():
    raise RuntimeError("the user's factory is broken")


def not_a_model():
    return "a string"
