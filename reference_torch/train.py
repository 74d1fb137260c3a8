"""The tutorial's training and test loops, and the whole quickstart as one importable function."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from common.cli import DeviceError
from common.data import CLASSES
from common.report import check_finite, epoch_header, loss_line, prediction_line, test_line

from . import checkpoint
from .data import get_dataloaders, get_datasets
from .model import NeuralNetwork


@dataclass
class Config:
    """The quickstart's settings; ``jax_impl.train.Config`` has the same fields (but ``threads``)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    save: str = "model.pth"
    hidden: tuple[int, ...] = (512, 512)
    # 0 keeps torch's default (one thread per core). Measured on the 2-core machine (README):
    # 2 threads beat 1 for the batch-64 step (eager epoch 2.0 s vs 3.1 s; tutorial loop 8.6 s vs 9.3 s).
    threads: int = 0
    download: bool = True
    verbose: bool = True


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu, as the tutorial does; an absent device is DeviceError."""
    cuda = torch.cuda.is_available()
    mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise DeviceError(f"--device cuda: CUDA is not available to torch {torch.__version__} on this machine")
    if name == "mps" and not mps:
        raise DeviceError("--device mps: MPS is not available on this machine")
    if name not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {name}: unknown device (use auto, cpu, cuda or mps)")
    return torch.device(name)


def make_optimizer(model: nn.Module, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
    """``torch.optim.SGD``; the tutorial's is ``SGD(model.parameters(), lr=1e-3)``."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def train_epoch(dataloader, model, loss_fn, optimizer, log=print) -> torch.Tensor:
    """One pass over ``dataloader`` (the tutorial's ``train``); returns every step's loss (CPU, float).

    Losses are gathered on the device and read once at the end, so the only host syncs are the
    tutorial's own ``loss.item()`` every 100 batches. ``log=None`` keeps it silent.
    """
    size = len(dataloader.dataset)
    param = next(model.parameters())
    device = param.device
    losses = torch.empty(len(dataloader), device=device, dtype=param.dtype)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        # Compute prediction error
        pred = model(X)
        loss = loss_fn(pred, y)

        # Backpropagation
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

        losses[batch] = loss.detach()
        if log is not None and batch % 100 == 0:
            loss, current = loss.item(), (batch + 1) * len(X)
            log(loss_line(loss, current, size))
    return losses.cpu()


def evaluate(dataloader, model, loss_fn) -> tuple[float, float]:
    """The tutorial's ``test`` arithmetic: (correct / size, mean of the per-batch mean losses)."""
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    device = next(model.parameters()).device
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    return correct, test_loss


def predict(model, test_data, index: int = 0) -> tuple[str, str]:
    """The tutorial's final prediction: (predicted class name, actual class name) of ``test_data[index]``."""
    device = next(model.parameters()).device
    model.eval()
    x, y = test_data[index][0], test_data[index][1]
    with torch.no_grad():
        x = x.to(device)
        pred = model(x)
        return CLASSES[int(pred[0].argmax(0))], CLASSES[y]


def run(config: Config) -> dict:
    """The whole quickstart: train ``config.epochs`` epochs, save, load back, predict.

    Prints the tutorial's lines on stdout (epoch times on stderr) and returns what it measured.
    """
    out = print if config.verbose else (lambda *a, **k: None)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    out(f"Using {device} device")
    training_data, test_data = get_datasets(config.data_dir, download=config.download)
    train_dataloader, test_dataloader = get_dataloaders(training_data, test_data, config.batch_size)

    torch.manual_seed(config.seed)
    model = NeuralNetwork(config.hidden).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    for t in range(config.epochs):
        out(epoch_header(t + 1))
        start = time.perf_counter()
        losses = train_epoch(train_dataloader, model, loss_fn, optimizer, log=out)
        check_finite(losses.tolist(), t + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        history["epoch_s"].append(time.perf_counter() - start)
        accuracy, avg_loss = evaluate(test_dataloader, model, loss_fn)
        out(test_line(accuracy, avg_loss))
        if config.verbose:
            print(f"[epoch {t + 1}: {history['epoch_s'][-1]:.2f} s training]", file=sys.stderr)
        history["accuracy"].append(accuracy)
        history["avg_loss"].append(avg_loss)
        history["losses"].append(losses)
    out("Done!")

    if config.save:
        checkpoint.save(model, config.save)
        out(f"Saved PyTorch Model State to {config.save}")
        model = checkpoint.load(config.save, config.hidden, device)
        out(f"Loaded PyTorch Model State from {config.save}")
    predicted, actual = predict(model, test_data)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["model"] = model
    return history
