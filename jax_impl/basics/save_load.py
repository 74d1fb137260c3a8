"""Tutorial chapter "Save and load the model" in Flax NNX, mirroring ``reference_torch/basics/save_load.py``.

``nnx.state(model, nnx.Param)`` is the ``state_dict`` (a pytree of arrays) and ``nnx.update(model,
state)`` is ``load_state_dict``. msgpack (``flax.serialization``) stores that pytree, safetensors in
torch's names and layout is the file both frameworks read, and Orbax is what Flax advises for
training checkpoints (the chapter's exercise). There is no "whole model" to pickle: the model is
code, the params are data.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from jax_impl.model import init_params
from jax_impl.nnx_model import NeuralNetwork
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


def save_weights(model: nnx.Module, path: str | Path) -> None:
    """The tutorial's one line: the ``state_dict`` (``nnx.state``) as msgpack. (The quickstart's own
    writer, ``jax_impl.checkpoint.save``, is atomic and checksummed: a program's concern.)"""
    Path(path).write_bytes(serialization.to_bytes(nnx.to_pure_dict(nnx.state(model, nnx.Param))))


def empty_model(hidden: tuple[int, ...] = (512, 512)) -> NeuralNetwork:
    """``nnx.eval_shape``: the model built with ``jax.ShapeDtypeStruct`` leaves, nothing drawn or
    allocated, as torch's meta device."""
    return nnx.eval_shape(lambda: NeuralNetwork(hidden, rngs=nnx.Rngs(0)))


def load_weights(path: str | Path, model: nnx.Module | None = None) -> nnx.Module:
    """``nnx.update(model, state)`` (``load_state_dict``) and ``model.eval()``, into ``model``
    (default a fresh ``NeuralNetwork``); an ``empty_model()`` takes the loaded arrays as its own."""
    model = NeuralNetwork(rngs=nnx.Rngs(0)) if model is None else model
    nnx.update(model, jax.tree.map(jnp.asarray, serialization.msgpack_restore(Path(path).read_bytes())))
    model.eval()
    return model


def save_whole_model(model: NeuralNetwork, path: str | Path) -> None:
    """No class to pickle: the nearest thing is the params *and* the widths that rebuild ``NeuralNetwork``, as msgpack."""
    data = {"hidden": np.asarray(model.hidden, np.int64), "params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    Path(path).write_bytes(serialization.to_bytes(data))


def load_whole_model(path: str | Path) -> NeuralNetwork:
    """``NeuralNetwork(hidden)`` rebuilt from code and its params read from the file: data only, no code runs."""
    data = serialization.msgpack_restore(Path(path).read_bytes())
    model = empty_model(tuple(int(h) for h in data["hidden"]))
    nnx.update(model, jax.tree.map(jnp.asarray, data["params"]))
    model.eval()
    return model


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


def save_safetensors(model: nnx.Module, path: str | Path) -> None:
    """The params in torch's names and ``[out, in]`` layout, so ``torch`` loads them as a state_dict;
    atomic, with a sha256 of the tensors in its metadata."""
    arrays = flax_to_torch_numpy(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    atomic_write(path, lambda f: f.write(safetensors_bytes(arrays, METADATA)))


def load_safetensors(path: str | Path) -> dict:
    """The params tree of a torch-layout safetensors file (kernels transposed back), checked by name,
    dtype, shape, finite values and, where the file has one, checksum; CheckpointError otherwise.
    ``nnx.update(empty_model(hidden_of(params)), params)`` makes it a model."""
    arrays, metadata = read_safetensors(path)
    try:
        hidden = hidden_of(arrays)
    except WeightsError as e:
        raise CheckpointError(f"{path}: not the quickstart's network ({e})") from None
    check_tree(arrays, dict(flax_to_torch_numpy(jax.device_get(init_params(jax.random.key(0), hidden)))), str(path))
    if DIGEST_KEY in metadata:
        verify_digest(arrays, metadata[DIGEST_KEY], str(path))
    return torch_to_flax(arrays)


def predict_all(model: nnx.Module, x: np.ndarray) -> np.ndarray:
    """Predicted class of every image in ``x`` (N, 784) or (N, 28, 28)."""
    model.eval()
    return np.asarray(model(jnp.asarray(x)).argmax(1))
