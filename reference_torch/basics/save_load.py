"""Tutorial chapter "Save and load the model" in torch; ``jax_impl/basics/save_load.py`` mirrors it.

Weights go to a state_dict file (``reference_torch.checkpoint``) or to safetensors, which the JAX
side reads too; a whole pickled model needs ``weights_only=False`` and runs code from the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from common.convert import hidden_of  # numpy only: loading never imports JAX
from reference_torch import checkpoint
from reference_torch.model import NeuralNetwork

__all__ = [
    "load_safetensors",
    "load_untrusted",
    "load_weights",
    "load_whole_model",
    "predict_all",
    "save_safetensors",
    "save_weights",
    "save_whole_model",
    "write_crafted_pickle",
]

METADATA = {"format": "pt", "layout": "torch: linear_relu_stack.<i>.weight is [out, in]"}

save_weights = checkpoint.save  # torch.save(model.state_dict(), path), atomically
load_weights = checkpoint.load  # NeuralNetwork(hidden) + torch.load(path, weights_only=True)


def save_whole_model(model: torch.nn.Module, path: str | Path) -> None:
    """``torch.save(model, path)``: pickles the class reference along with the weights."""
    torch.save(model, path)


def load_whole_model(path: str | Path) -> torch.nn.Module:
    """Needs ``weights_only=False``: unpickling may run arbitrary code, so only for trusted files."""
    return torch.load(path, weights_only=False)


def load_untrusted(path: str | Path):
    """``torch.load(path, weights_only=True)``: refuses anything but tensors and plain containers.

    ``weights_only=True`` is ``torch.load``'s default only from torch 2.6 (2.4 and 2.5, which this
    project allows, default to ``False``), so it is passed explicitly.
    """
    return torch.load(path, weights_only=True)


class _Payload:  # what an attacker would put in a "checkpoint"
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def write_crafted_pickle(path: str | Path, marker: str | Path) -> None:
    """A checkpoint-looking pickle that would create ``marker`` when loaded with ``weights_only=False``."""
    torch.save({"linear_relu_stack.0.weight": torch.zeros(1), "payload": _Payload(str(marker))}, path)


def save_safetensors(model: torch.nn.Module, path: str | Path) -> None:
    """The state_dict as safetensors (torch names and layout), readable by any framework."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=METADATA)
    os.replace(tmp, path)


def load_safetensors(path: str | Path, device="cpu") -> NeuralNetwork:
    """A NeuralNetwork of the file's widths, holding its tensors (checked by name and shape)."""
    state = load_file(str(path), device=str(device))
    model = NeuralNetwork(hidden_of(state)).to(device)
    checkpoint.check_state_dict(state, model.state_dict(), str(path))
    model.load_state_dict(state)
    return model


def predict_all(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Predicted class of every image in ``x`` (N, 784) or (N, 28, 28)."""
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x)).argmax(1).numpy()
