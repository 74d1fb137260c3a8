"""Tutorial chapter "Save and load the model" in torch; ``jax_impl/basics/save_load.py`` mirrors it.

Weights go to a state_dict file (the tutorial's ``torch.save(model.state_dict(), path)``) or to
safetensors, which the JAX side reads too; a whole pickled model needs ``weights_only=False`` and runs code from the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from quickstart_parity_common.checkpoint import (
    DIGEST_KEY,
    CheckpointError,
    atomic_write,
    check_tree,
    read_safetensors,
    safetensors_bytes,
    verify_digest,
)
from quickstart_parity_common.convert import (  # numpy only: loading never imports JAX
    WeightsError,
    hidden_of,
)
from reference_torch.model import NeuralNetwork

__all__ = [
    "empty_model",
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

def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """The tutorial's one line. (The quickstart's own writer, ``reference_torch.checkpoint.save``, is
    atomic and checksummed: a program's concern, not the lesson's.)"""
    torch.save(model.state_dict(), path)


def empty_model(hidden: tuple[int, ...] = (512, 512)) -> NeuralNetwork:
    """The model on the ``meta`` device: shapes and dtypes only, no storage, nothing drawn."""
    with torch.device("meta"):
        return NeuralNetwork(hidden)


def load_weights(path: str | Path, model: torch.nn.Module | None = None) -> torch.nn.Module:
    """The tutorial's ``model.load_state_dict(torch.load(path, weights_only=True)); model.eval()``
    into ``model`` (default a fresh ``NeuralNetwork()``); ``assign=True`` so that an ``empty_model()``
    takes the loaded tensors as its own (copying into meta tensors would keep no values)."""
    model = NeuralNetwork() if model is None else model
    model.load_state_dict(torch.load(path, weights_only=True), assign=True)
    model.eval()
    return model


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
    """The state_dict as safetensors (torch names and layout), readable by any framework; atomic,
    with a sha256 of the tensors in its metadata."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(safetensors_bytes(arrays, METADATA)))


def load_safetensors(path: str | Path, device="cpu") -> NeuralNetwork:
    """A NeuralNetwork of the file's widths, holding its tensors (checked by name, dtype, shape,
    finite values and, where the file has one, checksum); CheckpointError naming the file otherwise."""
    arrays, metadata = read_safetensors(path)
    try:
        hidden = hidden_of(arrays)
    except WeightsError as e:
        raise CheckpointError(f"{path}: not the quickstart's network ({e})") from None
    model = NeuralNetwork(hidden).to(device)
    check_tree(arrays, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}, str(path))
    if DIGEST_KEY in metadata:
        verify_digest(arrays, metadata[DIGEST_KEY], str(path))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return model


def predict_all(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Predicted class of every image in ``x`` (N, 784) or (N, 28, 28)."""
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x)).argmax(1).numpy()
