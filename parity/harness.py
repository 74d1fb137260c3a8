"""Train and evaluate both sides from the same weights on the same batches (tests, CLI, calibration).

The torch side runs ``reference_torch.train.train_epoch`` / ``evaluate`` over a DataLoader in file
order; the JAX side runs ``jax_impl.train.train_epoch`` / ``evaluate``. Images are the ToTensor
pixels (``quickstart_parity_common.data.to_float``; ``test_data.py`` proves them bit-equal to torchvision's).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from jax_impl import model as jmodel
from jax_impl import train as jtrain
from jax_impl.data import load_fashion_mnist
from quickstart_parity_common.data import to_float
from reference_torch import train as ttrain
from reference_torch.model import NeuralNetwork

from .weights import flax_to_torch_numpy, hidden_of, torch_to_flax  # noqa: F401 - torch_to_flax re-exported


@dataclass
class Split:
    """One split as float pixels (N, 784) and int labels (N,), numpy on the host."""

    x: np.ndarray
    y: np.ndarray


def real_data(data_dir: str = "data") -> tuple[Split, Split]:
    """The real FashionMNIST train and test splits, in file order."""
    out = []
    for train in (True, False):
        images, labels = load_fashion_mnist(data_dir, train)
        out.append(Split(to_float(images).reshape(len(images), -1), labels))
    return out[0], out[1]


def torch_loader(split: Split, batch_size: int, dtype=torch.float32, device="cpu") -> DataLoader:
    """A DataLoader in file order with the last partial batch, fetching whole batches by index."""
    ds = TensorDataset(torch.from_numpy(split.x).to(device, dtype), torch.from_numpy(split.y.astype(np.int64)).to(device))
    return DataLoader(ds, batch_size=None, sampler=BatchSampler(SequentialSampler(ds), batch_size, drop_last=False))


def torch_model(state_dict, dtype=torch.float32, device="cpu") -> NeuralNetwork:
    """A NeuralNetwork of the state_dict's widths holding its values."""
    model = NeuralNetwork(hidden_of(state_dict)).to(device=device, dtype=dtype)
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()})
    return model


class TorchRunner:
    """The reference torch side, one epoch at a time: ``reference_torch.train.train_epoch`` and
    ``evaluate`` over a file-order loader, from ``state_dict``. The harness, ``python -m parity``
    and the tests all train torch through this class.

    ``loss_scale`` multiplies the loss (1.0 is the quickstart; the negative controls use 0.1).
    """

    def __init__(self, state_dict, split: Split, batch_size: int = 64, lr: float = 1e-3, dtype=torch.float32,
                 device="cpu", loss_scale: float = 1.0, momentum: float = 0.0, weight_decay: float = 0.0):
        self.model = torch_model(state_dict, dtype, device)
        ce = nn.CrossEntropyLoss()
        self.loss_fn = ce if loss_scale == 1.0 else (lambda pred, y: ce(pred, y) * loss_scale)
        self.optimizer = ttrain.make_optimizer(self.model, lr, momentum, weight_decay)
        self.loader = torch_loader(split, batch_size, dtype, device)
        self.batch_size = batch_size

    def epoch(self) -> np.ndarray:
        """Train one epoch; every step's loss as float64 numpy."""
        return ttrain.train_epoch(self.loader, self.model, self.loss_fn, self.optimizer, log=None).double().numpy()

    def evaluate(self, split: Split) -> tuple[float, float]:
        """(accuracy, Avg loss) on ``split``, the tutorial's test arithmetic."""
        return torch_evaluate(self.model, split, self.batch_size)

    def params(self) -> dict[str, np.ndarray]:
        """The parameters in torch naming, as numpy."""
        return state_dict_numpy(self.model)


class JaxRunner:
    """The JAX side, one epoch at a time: ``jax_impl.train.train_epoch`` and ``evaluate`` on
    device-resident data, from Flax ``params``; ``tx`` replaces the optimizer (the negative controls
    use it). The twin of ``TorchRunner``."""

    def __init__(self, params, split: Split, batch_size: int = 64, lr: float = 1e-3, device=None,
                 momentum: float = 0.0, weight_decay: float = 0.0, tx=None):
        self.state = jtrain.create_train_state(jax.device_put(params, device), lr, hidden_of(params),
                                               momentum=momentum, weight_decay=weight_decay)
        if tx is not None:
            self.state = self.state.replace(tx=tx, opt_state=tx.init(self.state.params))
        self.data = (jax.device_put(split.x, device), jax.device_put(split.y, device))
        self.batch_size, self.device = batch_size, device

    def epoch(self) -> np.ndarray:
        """Train one epoch; every step's loss as float64 numpy."""
        self.state, losses = jtrain.train_epoch(self.state, self.data, self.batch_size, log=None)
        return np.asarray(losses, np.float64)

    def evaluate(self, split: Split) -> tuple[float, float]:
        """(accuracy, Avg loss) on ``split``, the tutorial's test arithmetic."""
        return jax_evaluate(self.state, split, self.batch_size, device=self.device)

    def params(self) -> dict[str, np.ndarray]:
        """The parameters in torch naming and layout, as numpy."""
        return params_as_torch_numpy(self.state.params)


def torch_train(state_dict, split: Split, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3,
                dtype=torch.float32, device="cpu", loss_scale: float = 1.0, momentum: float = 0.0,
                weight_decay: float = 0.0):
    """(per-step losses (epochs * steps,), trained model) of ``TorchRunner``."""
    runner = TorchRunner(state_dict, split, batch_size, lr, dtype, device, loss_scale, momentum, weight_decay)
    return np.concatenate([runner.epoch() for _ in range(epochs)]), runner.model


def torch_evaluate(model, split: Split, batch_size: int = 64) -> tuple[float, float]:
    """(accuracy, Avg loss) of ``reference_torch.train.evaluate`` on ``split``."""
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    return ttrain.evaluate(torch_loader(split, batch_size, dtype, device), model, nn.CrossEntropyLoss())


def jax_train(params, split: Split, epochs: int = 1, batch_size: int = 64, lr: float = 1e-3, device=None,
              momentum: float = 0.0, weight_decay: float = 0.0, tx=None):
    """(per-step losses, final TrainState) of ``JaxRunner``."""
    runner = JaxRunner(params, split, batch_size, lr, device, momentum, weight_decay, tx)
    return np.concatenate([runner.epoch() for _ in range(epochs)]), runner.state


def jax_evaluate(state, split: Split, batch_size: int = 64, device=None) -> tuple[float, float]:
    """(accuracy, Avg loss) of ``jax_impl.train.evaluate`` on ``split``."""
    return jtrain.evaluate(state, (jax.device_put(split.x, device), jax.device_put(split.y, device)), batch_size)


def jax_x64_train(state_dict, steps: int, batch_size: int = 64, lr: float = 1e-3, data_dir: str = "data",
                  epochs: int = 1, momentum: float = 0.0, weight_decay: float = 0.0) -> tuple[np.ndarray, dict]:
    """Run ``jax_impl`` in float64 (``jax_enable_x64``) in its own process, since the flag leaks
    into everything imported after it; returns (per-step losses, final params in torch naming)."""
    with tempfile.TemporaryDirectory() as tmp:
        init, out = Path(tmp) / "init.npz", Path(tmp) / "out.npz"
        np.savez(init, **{k: np.asarray(v, np.float64) for k, v in state_dict.items()})
        cmd = [sys.executable, "-m", "parity.oracle", "--init", str(init), "--out", str(out), "--steps", str(steps),
               "--batch-size", str(batch_size), "--lr", repr(lr), "--data-dir", data_dir, "--epochs", str(epochs),
               "--momentum", repr(momentum), "--weight-decay", repr(weight_decay)]
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode
            raise RuntimeError(f"parity.oracle failed: {why}")
        with np.load(out) as f:
            losses = f["losses"]
            params = {k: f[k] for k in f.files if k != "losses"}
    return losses, params


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    """A module's state_dict as host numpy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def params_as_torch_numpy(params) -> dict[str, np.ndarray]:
    """Flax params in torch naming and layout, as numpy (for comparing with a state_dict)."""
    return dict(flax_to_torch_numpy(jax.device_get(params)))


def init_state_dict(seed: int = 0, hidden=(512, 512)) -> dict[str, np.ndarray]:
    """The tutorial's initial weights: ``torch.manual_seed(seed); NeuralNetwork(hidden)``."""
    torch.manual_seed(seed)
    return state_dict_numpy(NeuralNetwork(hidden))


def relu_preactivations(state_dict, x: np.ndarray) -> list[np.ndarray]:
    """float64 inputs of every ReLU, (B, width) per hidden layer: where they sit near 0, float32
    rounding may flip the ReLU and its gradient (a kink, not a bug)."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    out = []
    weights = [(np.asarray(state_dict[k], np.float64), np.asarray(state_dict[k.replace("weight", "bias")], np.float64))
               for k in state_dict if k.endswith(".weight")]
    for w, b in weights[:-1]:
        z = h @ w.T + b
        out.append(z)
        h = np.maximum(z, 0)
    return out


def torch_loss_and_grads(state_dict, x: np.ndarray, y: np.ndarray, dtype=torch.float32, device="cpu",
                         loss_scale: float = 1.0):
    """(logits, loss, {torch key: gradient}) from ``loss.backward()`` on one batch."""
    model = torch_model(state_dict, dtype, device)
    xt = torch.as_tensor(x).to(device, dtype)
    yt = torch.as_tensor(np.asarray(y, np.int64)).to(device)
    logits = model(xt)
    loss = nn.CrossEntropyLoss()(logits, yt) * loss_scale
    loss.backward()
    grads = {k: p.grad.detach().cpu().numpy() for k, p in model.named_parameters()}
    return logits.detach().cpu().numpy(), float(loss.detach()), grads


def jax_loss_and_grads(params, x: np.ndarray, y: np.ndarray, device=None):
    """(logits, loss, {torch key: gradient}) from ``jax.value_and_grad`` of jax_impl's loss, kernels
    transposed into torch's layout."""

    apply_fn = jmodel.NeuralNetwork(hidden_of(params)).apply
    params = jax.device_put(params, device)
    xj, yj = jax.device_put(np.asarray(x), device), jax.device_put(np.asarray(y, np.int32), device)
    loss, grads = jax.value_and_grad(lambda p: jtrain.loss_fn(apply_fn({"params": p}, xj), yj))(params)
    logits = apply_fn({"params": params}, xj)
    return np.asarray(logits), float(loss), params_as_torch_numpy(grads)
