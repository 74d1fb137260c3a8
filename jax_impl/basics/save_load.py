"""Tutorial chapter "Save and load the model" in JAX, mirroring ``reference_torch/basics/save_load.py``.

Params are a pytree of arrays, not an object: msgpack (``flax.serialization``) stores exactly
that, and safetensors in torch's names and layout is the file both frameworks read. There is no
"whole model" to pickle: the model is code, the params are data.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from jax_impl import checkpoint
from jax_impl.model import MLP
from parity.weights import flax_to_torch_numpy, hidden_of, torch_to_flax  # numpy only, no torch

METADATA = {"format": "pt", "layout": "torch: linear_relu_stack.<i>.weight is [out, in]"}

save_weights = checkpoint.save  # flax.serialization.to_bytes(params), atomically
load_weights = checkpoint.load  # msgpack_restore, checked against a template


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
