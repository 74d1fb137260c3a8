"""The tutorial's training and test loops, and the whole quickstart as one importable function."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from quickstart_parity_common import checkpoint as common_checkpoint
from quickstart_parity_common.checkpoint import (
    DATA_FIELD,
    check_resume_epochs,
    claim_checkpoint_dir,
    latest_resume_path,
    resume_path,
    save_final,
)
from quickstart_parity_common.cli import DeviceError, Progress
from quickstart_parity_common.data import CLASSES, data_identity
from quickstart_parity_common.report import (
    check_finite,
    check_finite_params,
    check_finite_test,
    end_epoch,
    epoch_header,
    loss_line,
    prediction_line,
    test_line,
)

from . import checkpoint
from .data import get_dataloaders, get_datasets
from .model import build_model

__all__ = [
    "Config",
    "DeviceError",
    "check_outputs",
    "evaluate",
    "loss_fn",
    "make_optimizer",
    "predict",
    "resolve_device",
    "run",
    "train_epoch",
]


@dataclass
class Config:
    """The quickstart's settings; ``jax_impl.train.Config`` has the same fields (but ``threads``, ``download``)."""

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
    model: str = "mlp"
    checkpoint_dir: str = ""
    resume: bool = False
    load: str = ""
    limit_train: int = 0
    verbose: bool = True
    # 0 keeps torch's default (one thread per core); the README's benchmarks say which is faster.
    threads: int = 0
    download: bool = True


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


def make_optimizer(model: nn.Module, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.SGD:
    """``torch.optim.SGD``; the tutorial's is ``SGD(model.parameters(), lr=1e-3)``."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


loss_fn = nn.CrossEntropyLoss()  # mean cross-entropy over the batch, ``loss_fn(logits, y)``


def train_epoch(dataloader, model, loss_fn, optimizer, log=print) -> torch.Tensor:
    """One pass over ``dataloader`` (the tutorial's ``train``), in Python; returns every step's loss.

    Losses (CPU float) are gathered on the device and read once at the end (which also waits for
    the device), so the only other host syncs are the tutorial's own ``loss.item()`` every 100
    batches. ``log=None`` keeps it silent.
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


def check_outputs(config: Config) -> None:
    """Before any work: the save target and the checkpoint folder must be writable, so a run's
    work is never lost at the end (CheckpointError otherwise); quickstart_parity_common.checkpoint.check_outputs."""
    common_checkpoint.check_outputs(config.save, config.load, config.checkpoint_dir, config.resume)


def _identity(training_data, test_data) -> str:
    """``data_identity`` of the whole splits torchvision read (``--limit-train``'s Subset unwrapped)."""
    train = getattr(training_data, "dataset", training_data)
    return data_identity((train.data.numpy(), train.targets.numpy()), (test_data.data.numpy(), test_data.targets.numpy()))


def run(config: Config, progress: Progress | None = None) -> dict:
    """The whole quickstart: train ``config.epochs`` epochs, save, load back, predict.

    With ``checkpoint_dir`` a resumable checkpoint is written after every epoch, and ``resume``
    continues from the latest one; ``load`` evaluates a saved model instead of training.
    Prints the tutorial's lines on stdout (epoch times on stderr) and returns what it measured;
    ``progress`` follows where it is (for the line Ctrl-C prints).
    """
    out = print if config.verbose else (lambda *a, **k: None)
    progress = progress if progress is not None else Progress()
    progress.epochs, progress.checkpoint_dir = config.epochs, config.checkpoint_dir
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    check_outputs(config)
    out(f"Using {device} device")
    training_data, test_data = get_datasets(config.data_dir, download=config.download, limit_train=config.limit_train)
    train_dataloader, test_dataloader = get_dataloaders(training_data, test_data, config.batch_size)

    torch.manual_seed(config.seed)
    model = build_model(config.model, config.hidden).to(device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    run_config = asdict(config)
    if config.checkpoint_dir:  # the folder is this run's from here on: its flags and its data
        run_config[DATA_FIELD] = _identity(training_data, test_data)
        claim_checkpoint_dir(config.checkpoint_dir, run_config)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    first_epoch, step, epochs = 0, 0, config.epochs
    if config.load:
        model = checkpoint.load(config.load, model)
        out(f"Loaded PyTorch Model State from {config.load}")
        epochs = 0
    elif config.resume:
        path = latest_resume_path(config.checkpoint_dir, checkpoint.SUFFIX)
        first_epoch, step = checkpoint.load_resume(path, model, optimizer, run_config)
        check_resume_epochs(first_epoch, epochs, path)
        progress.checkpoint, progress.step = str(path), step
        out(f"Resumed from {path} after epoch {first_epoch}")
    for t in range(first_epoch, epochs):
        progress.epoch = t + 1
        out(epoch_header(t + 1))
        start = time.perf_counter()
        losses = train_epoch(train_dataloader, model, loss_fn, optimizer, log=out)  # losses read = synced
        history["epoch_s"].append(time.perf_counter() - start)
        step += len(losses)
        check_finite(losses.tolist(), t + 1)
        check_finite_params({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, t + 1)
        accuracy, avg_loss = evaluate(test_dataloader, model, loss_fn)
        end_epoch(history, t + 1, accuracy, avg_loss, losses, out, config.verbose)  # a NaN test loss stops here
        if config.checkpoint_dir:
            path = resume_path(config.checkpoint_dir, t + 1, checkpoint.SUFFIX)
            checkpoint.save_resume(path, model, optimizer, t + 1, step, run_config)
            progress.checkpoint = str(path)
        progress.step = step
    progress.trained = True
    if config.load:
        accuracy, avg_loss = evaluate(test_dataloader, model, loss_fn)
        check_finite_test(avg_loss)
        out(test_line(accuracy, avg_loss))
        history["accuracy"].append(accuracy)
        history["avg_loss"].append(avg_loss)
    else:
        out("Done!")

    if config.save and not config.load:
        save_final(lambda p: checkpoint.save(model, p), config.save, progress.checkpoint)
        out(f"Saved PyTorch Model State to {config.save}")
        model = checkpoint.load(config.save, build_model(config.model, config.hidden).to(device))
        out(f"Loaded PyTorch Model State from {config.save}")
    predicted, actual = predict(model, test_data)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["model"] = model
    return history
