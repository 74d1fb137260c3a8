"""Tutorial chapter "Save and load the model" in JAX, mirroring ``reference_torch/basics/save_load.py``.

Params are a pytree of arrays, not an object: msgpack (``flax.serialization``) stores exactly
that, and safetensors in torch's names and layout is the file both frameworks read. There is no
"whole model" to pickle: the model is code, the params are data.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from flax import serialization
from safetensors.numpy import load_file, save_file

from common.convert import flax_to_torch_numpy, hidden_of, torch_to_flax  # numpy only, no torch
from jax_impl import checkpoint
from jax_impl.model import MLP

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

save_weights = checkpoint.save  # flax.serialization.to_bytes(params), atomically
load_weights = checkpoint.load  # msgpack_restore, checked against a template


def save_whole_model(params, path: str | Path) -> None:
    """No class to pickle: the nearest thing is the params *and* the widths that rebuild ``MLP``, as msgpack."""
    data = {"hidden": np.asarray(hidden_of(params), np.int64), "params": params}
    Path(path).write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(data)))


def load_whole_model(path: str | Path) -> tuple[MLP, dict]:
    """``MLP(hidden)`` rebuilt from code and its params read from the file: data only, no code runs."""
    data = serialization.msgpack_restore(Path(path).read_bytes())
    return MLP(tuple(int(h) for h in data["hidden"])), data["params"]


def load_untrusted(path: str | Path):
    """``msgpack_restore``: a msgpack file can hold only arrays, numbers, strings and containers, so
    reading one never runs code; a pickle is not msgpack and is refused."""
    return serialization.msgpack_restore(Path(path).read_bytes())


class _Payload:  # the same "checkpoint" torch's chapter crafts
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_crafted_pickle(path: str | Path, marker: str | Path) -> None:
    """The pickle torch's chapter writes (plain ``pickle``: no torch here)."""
    Path(path).write_bytes(pickle.dumps({"payload": _Payload(str(marker))}))


def save_safetensors(params, path: str | Path) -> None:
    """Params in torch's names and ``[out, in]`` layout, so ``torch`` loads them as a state_dict."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    save_file(dict(flax_to_torch_numpy(params)), str(tmp), metadata=METADATA)
    os.replace(tmp, path)


def load_safetensors(path: str | Path) -> dict:
    """Flax params from a torch-layout safetensors file (kernels transposed back)."""
    return torch_to_flax(load_file(str(path)))


def predict_all(params, x: np.ndarray) -> np.ndarray:
    return np.asarray(MLP(hidden_of(params)).apply({"params": params}, np.asarray(x)).argmax(1))
