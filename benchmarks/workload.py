"""What every variant trains on: the same data, the same initial weights, the same batches.

A ``Workload`` is plain data (host numpy arrays and settings); the model is a parameter of it
(``MODELS``, the quickstart's MLP by default): ``quickstart_parity_pairs.PAIRS``, where a second model is one
entry of the project's one registry.
The data come from ``quickstart_parity_common.data`` (numpy only); the weights from the torch side's own module.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from quickstart_parity_common.data import DataError, find_files, read_split, to_float
from quickstart_parity_pairs import PAIRS, Pair

# ``--model`` -> the pair (constructors, conversion, steps, matrix products): the project's one registry.
MODELS: dict[str, Pair] = PAIRS


@dataclass(frozen=True)
class Workload:
    """The training every variant runs: host arrays in file order and the common initial weights."""

    x: np.ndarray  # float32 (N, 784), ToTensor's pixels
    y: np.ndarray  # int32 (N,)
    state_dict: dict = field(repr=False)  # torch keys, numpy values: the common initial weights
    batch_size: int = 64
    lr: float = 1e-3
    hidden: tuple[int, ...] = (512, 512)
    model: str = "mlp"
    data_dir: str = "data"

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def steps(self) -> int:
        return -(-self.n // self.batch_size)

    @property
    def spec(self) -> Pair:
        return MODELS[self.model]

    def step_flops(self, batch: int | None = None) -> float:
        """FLOPs of one training step's matrix products at ``batch`` (default: the workload's)."""
        return 2.0 * sum(m * k * n for m, k, n in self.spec.step_gemms(batch or self.batch_size, self.hidden))

    @property
    def flops_per_sample(self) -> float:
        return self.step_flops(1)

    @property
    def epoch_flops(self) -> float:
        return self.flops_per_sample * self.n

    def subset(self, n: int, batch_size: int | None = None, hidden: tuple[int, ...] | None = None,
               seed: int = 0) -> Workload:
        """The first ``n`` samples; new initial weights when the widths change."""
        hidden = tuple(hidden or self.hidden)
        sd = self.state_dict if hidden == self.hidden else init_state_dict(self.model, hidden, seed)
        return Workload(self.x[:n], self.y[:n], sd, batch_size or self.batch_size, self.lr, hidden, self.model,
                        self.data_dir)


def flops_per_sample(hidden: tuple[int, ...] = (512, 512), model: str = "mlp") -> float:
    """Training FLOPs per sample (every matrix product of the step, 2 per multiply-add)."""
    return 2.0 * sum(m * k * n for m, k, n in MODELS[model].step_gemms(1, tuple(hidden)))


def init_state_dict(model: str = "mlp", hidden: tuple[int, ...] = (512, 512), seed: int = 0) -> dict[str, np.ndarray]:
    """The tutorial's initial weights, ``torch.manual_seed(seed); Module(hidden)``, as numpy."""
    torch.manual_seed(seed)
    module = MODELS[model].torch_module(tuple(hidden))
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_workload(data_dir: str, n: int | None = None, batch_size: int = 64, model: str = "mlp",
                  hidden: tuple[int, ...] | None = None, seed: int = 0) -> Workload:
    """The real training split (first ``n`` samples, default all) and seed-``seed`` weights
    (``hidden`` defaults to the model's own widths).

    A missing or corrupt data set raises ``quickstart_parity_common.data.DataError``.
    """
    images, labels = read_split(find_files(data_dir), train=True)
    x = to_float(images).reshape(len(images), -1)
    if n is not None and n > len(labels):  # a clamped count would time, and label, another workload
        raise DataError(f"--samples {n}: the training set in {data_dir} has only {len(labels)} images")
    n = len(labels) if n is None else n
    hidden = MODELS[model].hidden if hidden is None else tuple(hidden)
    return Workload(x[:n], labels[:n], init_state_dict(model, hidden, seed), batch_size, 1e-3, tuple(hidden), model,
                    data_dir)
