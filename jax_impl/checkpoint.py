"""Params to and from msgpack (``flax.serialization``), written atomically, checked against the model."""
from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from flax import serialization


class CheckpointError(Exception):
    """A checkpoint cannot be read or does not fit the model."""


def _flat(tree, prefix=()) -> dict[str, object]:
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for k, v in tree.items():
            out.update(_flat(v, prefix + (str(k),)))
        return out
    return {"/".join(prefix): tree}


def check_params(restored: dict, expected: dict, source: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or mis-shaped parameter."""
    got, want = _flat(restored), _flat(expected)
    for name, ref in want.items():
        if name not in got:
            raise CheckpointError(f"{source}: missing parameter {name} (shape {tuple(np.shape(ref))})")
        if np.shape(got[name]) != np.shape(ref):
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(np.shape(got[name]))} but the model expects "
                f"{tuple(np.shape(ref))} (was it saved from a model with other hidden widths?)"
            )
    extra = [k for k in got if k not in want]
    if extra:
        raise CheckpointError(f"{source}: unexpected parameter {extra[0]} (not in the model)")


def save(params, path: str | os.PathLike) -> None:
    """Serialize ``params`` to msgpack in a temporary file, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(serialization.to_bytes(jax.device_get(params)))
    os.replace(tmp, path)


def load(path: str | os.PathLike, target):
    """Params read from ``path`` into the structure of ``target`` (e.g. ``init_params(key, hidden)``)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    try:
        restored = serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types for garbage input
        raise CheckpointError(f"{path}: not a Flax msgpack checkpoint ({type(e).__name__})") from None
    if not isinstance(restored, dict):
        raise CheckpointError(f"{path}: holds a {type(restored).__name__}, not a parameter tree")
    check_params(restored, serialization.to_state_dict(target), str(path))
    return serialization.from_state_dict(target, restored)
