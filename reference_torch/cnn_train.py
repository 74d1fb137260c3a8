"""The quickstart with ``--model cnn``: ``train.run``'s loop around ``cnn.CNN``; mirrors ``jax_impl/cnn_train.py``.

The loops are the tutorial's (``train.train_epoch``, ``train.evaluate``, ``train.predict``:
``model.train()`` / ``model.eval()`` switch BatchNorm and Dropout, and the module keeps BatchNorm's
running statistics and draws Dropout's masks itself); only the model and its checkpoint differ.
"""
from __future__ import annotations

import time

import torch

from quickstart_parity_common.checkpoint import save_final
from quickstart_parity_common.cli import Progress
from quickstart_parity_common.report import (
    check_finite,
    check_finite_params,
    end_epoch,
    epoch_header,
    prediction_line,
)

from . import checkpoint
from .cnn import CNN
from .data import get_dataloaders, get_datasets
from .train import (
    Config,
    check_outputs,
    evaluate,
    loss_fn,
    make_optimizer,
    predict,
    resolve_device,
    train_epoch,
)

__all__ = [
    "evaluate",
    "predict",
    "run",
    "train_epoch",
]


def run(config: Config, progress: Progress | None = None) -> dict:
    """``train.run`` with ``CNN``: train, save its state_dict, load it back, predict."""
    out = print if config.verbose else (lambda *a, **k: None)
    progress = progress if progress is not None else Progress(epochs=config.epochs)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    check_outputs(config)
    out(f"Using {device} device")
    training_data, test_data = get_datasets(config.data_dir, download=config.download)
    train_dataloader, test_dataloader = get_dataloaders(training_data, test_data, config.batch_size)

    torch.manual_seed(config.seed)
    model = CNN().to(device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    for t in range(config.epochs):
        progress.epoch = t + 1
        out(epoch_header(t + 1))
        start = time.perf_counter()
        losses = train_epoch(train_dataloader, model, loss_fn, optimizer, log=out)  # losses read = synced
        history["epoch_s"].append(time.perf_counter() - start)
        check_finite(losses.tolist(), t + 1)
        check_finite_params({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, t + 1)
        accuracy, avg_loss = evaluate(test_dataloader, model, loss_fn)
        end_epoch(history, t + 1, accuracy, avg_loss, losses, out, config.verbose)
    progress.trained = True
    out("Done!")

    if config.save:
        save_final(lambda p: checkpoint.save(model, p), config.save, None)
        out(f"Saved PyTorch Model State to {config.save}")
        model = checkpoint.load(config.save, CNN().to(device))
        out(f"Loaded PyTorch Model State from {config.save}")
    predicted, actual = predict(model, test_data)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["model"] = model
    return history
