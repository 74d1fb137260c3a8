"""What every variant trains on: the same data, the same initial weights, the same batches.

A ``Workload`` is plain data (host numpy arrays and settings); the model is a parameter of it
(``MODELS``, the quickstart's MLP by default), so a second model is one more ``ModelSpec``.
The data come from ``quickstart_parity_common.data`` (numpy only); the weights from the torch side's own module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from jax_impl import cnn_train as jcnn_train
from jax_impl import train as jtrain
from jax_impl.train import Config as JaxConfig
from quickstart_parity_common.convert import state_dict_to_variables, torch_to_flax
from quickstart_parity_common.data import DataError, find_files, read_split, to_float
from reference_torch import cnn as tcnn
from reference_torch.model import NeuralNetwork


@dataclass(frozen=True)
class ModelSpec:
    """One model as the benchmarks need it, on both sides, from one torch state_dict.

    ``torch_module(hidden)`` builds the torch module; ``jax_state(variables, lr, hidden, device)``
    the JAX train state from what ``to_flax`` makes of the state_dict; ``jax_train_step`` and
    ``jax_train_epoch`` are that side's jitted step and compiled epoch (the torch side needs no
    hook: its loops take any module); ``step_gemms(batch, hidden)`` lists the (m, k, n) of every
    matrix product of one training step, from which the FLOP count and the limit probe follow.
    ``hidden`` is the default width tuple; ``widths`` says whether the width sweep applies.
    """

    name: str
    torch_module: Callable[[tuple[int, ...]], torch.nn.Module]
    jax_state: Callable
    to_flax: Callable[[dict], dict]
    step_gemms: Callable[[int, tuple[int, ...]], list[tuple[int, int, int]]]
    jax_train_step: Callable
    jax_train_epoch: Callable
    hidden: tuple[int, ...] = (512, 512)
    widths: bool = True


def mlp_step_gemms(batch: int, hidden: tuple[int, ...] = (512, 512)) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step of the MLP: forward, weight
    gradients, and input gradients of every layer but the first (no gradient w.r.t. the images)."""
    dims = [784, *hidden, 10]
    pairs = list(zip(dims[:-1], dims[1:], strict=True))
    fwd = [(batch, a, b) for a, b in pairs]
    wgrad = [(b, batch, a) for a, b in pairs]
    igrad = [(batch, b, a) for a, b in pairs[1:]]
    return fwd + wgrad + igrad


def cnn_step_gemms(batch: int, hidden: tuple[int, ...] = ()) -> list[tuple[int, int, int]]:
    """(m, k, n) of the CNN's step with each convolution as its im2col matrix product
    (m = batch x output pixels, k = in-channels x 3 x 3, n = out-channels), then the two Linears;
    as for the MLP: forward, weight gradients, input gradients of every layer but the first.
    BatchNorm, ReLU and pooling are not matrix products and are not counted."""
    c1, c2 = tcnn.CHANNELS
    layers = [(batch * 28 * 28, 1 * 9, c1), (batch * 14 * 14, c1 * 9, c2),  # conv1 (stride 1), conv2 (stride 2)
              (batch, tcnn.FLAT, tcnn.HIDDEN), (batch, tcnn.HIDDEN, tcnn.NUM_CLASSES)]
    fwd = list(layers)
    wgrad = [(n, m, k) for m, k, n in layers]
    igrad = [(m, n, k) for m, k, n in layers[1:]]
    return fwd + wgrad + igrad


def _mlp_jax_state(params, lr: float, hidden: tuple[int, ...], device):
    return jtrain.create_train_state(params, lr, hidden, device=device)


def _cnn_jax_state(variables, lr: float, hidden: tuple[int, ...], device):
    return jcnn_train.create_train_state(variables, JaxConfig(lr=lr), device)


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", NeuralNetwork, _mlp_jax_state, torch_to_flax, mlp_step_gemms,
                     jtrain.train_step, jtrain.train_epoch),
    "cnn": ModelSpec("cnn", lambda hidden: tcnn.CNN(), _cnn_jax_state, state_dict_to_variables, cnn_step_gemms,
                     jcnn_train.train_step, jcnn_train.scan_epoch, hidden=(tcnn.HIDDEN,), widths=False),
}


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
    def spec(self) -> ModelSpec:
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
