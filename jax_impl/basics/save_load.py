"""Tutorial chapter "Save and load the model" in JAX, mirroring ``reference_torch/basics/save_load.py``.

Params are a pytree of arrays, not an object: msgpack (``flax.serialization``) stores exactly
that, and safetensors in torch's names and layout is the file both frameworks read. There is no
"whole model" to pickle: the model is code, the params are data.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jax_impl import checkpoint
from jax_impl.model import NeuralNetwork, init_params
from quickstart_parity_common.checkpoint import (
    DIGEST_KEY,
    CheckpointError,
    atomic_write,
    check_tree,
    read_safetensors,
    safetensors_bytes,
    verify_digest,
)
from quickstart_parity_common.convert import (  # numpy only, no torch
    WeightsError,
    flax_to_torch_numpy,
    hidden_of,
    torch_to_flax,
)

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

save_weights = checkpoint.save  # flax.serialization msgpack of params, atomically, with a checksum
load_weights = checkpoint.load  # msgpack_restore, every value checked against a template


def save_whole_model(params, path: str | Path) -> None:
    """No class to pickle: the nearest thing is the params *and* the widths that rebuild ``NeuralNetwork``, as msgpack."""
    data = {"hidden": np.asarray(hidden_of(params), np.int64), "params": params}
    Path(path).write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(data)))


def load_whole_model(path: str | Path) -> tuple[NeuralNetwork, dict]:
    """``NeuralNetwork(hidden)`` rebuilt from code and its params read from the file: data only, no code runs."""
    data = serialization.msgpack_restore(Path(path).read_bytes())
    return NeuralNetwork(tuple(int(h) for h in data["hidden"])), data["params"]


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
    """Params in torch's names and ``[out, in]`` layout, so ``torch`` loads them as a state_dict;
    atomic, with a sha256 of the tensors in its metadata."""
    atomic_write(path, lambda f: f.write(safetensors_bytes(flax_to_torch_numpy(params), METADATA)))


def load_safetensors(path: str | Path) -> dict:
    """Flax params from a torch-layout safetensors file (kernels transposed back), checked by name,
    dtype, shape, finite values and, where the file has one, checksum; CheckpointError otherwise."""
    arrays, metadata = read_safetensors(path)
    try:
        hidden = hidden_of(arrays)
    except WeightsError as e:
        raise CheckpointError(f"{path}: not the quickstart's network ({e})") from None
    check_tree(arrays, dict(flax_to_torch_numpy(jax.device_get(init_params(jax.random.key(0), hidden)))), str(path))
    if DIGEST_KEY in metadata:
        verify_digest(arrays, metadata[DIGEST_KEY], str(path))
    return torch_to_flax(arrays)


def predict_all(params, x: np.ndarray) -> np.ndarray:
    return np.asarray(NeuralNetwork(hidden_of(params)).apply({"params": params}, np.asarray(x)).argmax(1))
