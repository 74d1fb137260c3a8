"""The tutorial's ``NeuralNetwork``; ``hidden`` (widths and depth) is the only addition."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

IN_FEATURES = 28 * 28
NUM_CLASSES = 10


class NeuralNetwork(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then ``Linear(.., 10)``.

    With the default ``hidden=(512, 512)`` the attributes and ``state_dict`` keys are the
    tutorial's: ``linear_relu_stack.0.weight`` ... ``linear_relu_stack.4.bias``.
    """

    def __init__(self, hidden: Sequence[int] = (512, 512)):
        super().__init__()
        self.hidden = tuple(int(h) for h in hidden)
        self.flatten = nn.Flatten()
        layers: list[nn.Module] = []
        fan_in = IN_FEATURES
        for width in self.hidden:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, NUM_CLASSES))
        self.linear_relu_stack = nn.Sequential(*layers)

    def forward(self, x):
        x = self.flatten(x)  # (B, 1, 28, 28) -> (B, 784)
        logits = self.linear_relu_stack(x)  # (B, 10)
        return logits


# ``--model NAME`` -> a constructor taking ``hidden``; a new architecture is one entry here (and its
# twin in jax_impl/model.py), nothing in train.py changes.
MODELS: dict[str, Callable[[Sequence[int]], nn.Module]] = {"mlp": NeuralNetwork}


def build_model(name: str = "mlp", hidden: Sequence[int] = (512, 512)) -> nn.Module:
    """The model ``--model name --hidden ...`` asks for; torch initialises its weights here."""
    if name not in MODELS:
        raise ValueError(f"--model {name}: unknown model (use one of {', '.join(MODELS)})")
    return MODELS[name](tuple(hidden))


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters())
