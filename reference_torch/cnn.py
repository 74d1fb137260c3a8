"""``CNN``: a small FashionMNIST convnet with the layers ports get wrong; ``jax_impl/cnn.py`` mirrors it.

conv 3x3 pad 1 -> BatchNorm -> ReLU -> conv 3x3 stride 2 pad 1 -> BatchNorm -> ReLU -> max-pool 2
-> flatten (channel-major, NCHW order) -> Dropout -> Linear -> ReLU -> Linear(.., 10). Every step is
a submodule, so forward hooks see every layer's output (``parity.checker``).
"""
from __future__ import annotations

from torch import nn

# The shapes and the dropout probability live once, below both sides (the benchmarks count the step's
# matrix products from them, parity draws the dropout masks of that shape).
from quickstart_parity_common.models import CNN_CHANNELS as CHANNELS
from quickstart_parity_common.models import CNN_DROPOUT as DROPOUT
from quickstart_parity_common.models import CNN_FLAT as FLAT
from quickstart_parity_common.models import CNN_HIDDEN as HIDDEN
from quickstart_parity_common.models import NUM_CLASSES


class CNN(nn.Module):
    """The convnet; ``dropout`` is the Dropout probability (torch's ``p``)."""

    def __init__(self, dropout: float = DROPOUT):
        super().__init__()
        self.conv1 = nn.Conv2d(1, CHANNELS[0], 3, padding=1)  # (B, 16, 28, 28)
        self.bn1 = nn.BatchNorm2d(CHANNELS[0])
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], 3, stride=2, padding=1)  # (B, 32, 14, 14)
        self.bn2 = nn.BatchNorm2d(CHANNELS[1])
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)  # (B, 32, 7, 7)
        self.flatten = nn.Flatten()  # (B, 1568), channel-major
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(FLAT, HIDDEN)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x):
        x = x.reshape(-1, 1, 28, 28)  # (B, 784) or (B, 1, 28, 28) -> NCHW
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.dropout(self.flatten(self.pool(x)))
        return self.fc2(self.relu3(self.fc1(x)))  # (B, 10)
