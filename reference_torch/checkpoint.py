"""Save and load the model's ``state_dict`` as the tutorial does, with errors that name the problem."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import torch

from .model import NeuralNetwork


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model."""


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or mis-shaped key."""
    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(f"{source}: missing parameter {key} (shape {tuple(ref.shape)})")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(got.shape)} but the model expects {tuple(ref.shape)} "
                "(was it saved from a model with other hidden widths?)"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: unexpected parameter {extra[0]} (not in the model)")


def save(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``torch.save(model.state_dict(), path)``, written to a temporary file first and renamed,
    so a crash never leaves half a checkpoint under the final name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike, hidden=(512, 512), device: str | torch.device = "cpu") -> NeuralNetwork:
    """A fresh ``NeuralNetwork(hidden)`` with the checkpoint's weights (``weights_only=True``)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch state_dict ({first})") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    model = NeuralNetwork(hidden).to(device)
    check_state_dict(state, model.state_dict(), str(path))
    model.load_state_dict(state)
    return model
