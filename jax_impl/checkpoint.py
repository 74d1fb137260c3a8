"""The model's params saved as Flax msgpack, and a resumable checkpoint of the whole run.

Both are msgpack files (``flax.serialization``, never pickle), written atomically and checked on
load (quickstart_parity_common/checkpoint.py): names, dtype, shapes, finite values and a sha256 of every array, so a
bad file is a CheckpointError naming it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.training.train_state import TrainState

from quickstart_parity_common.checkpoint import (
    DIGEST_KEY,
    PARAMS_FORMAT,
    RESUME_FIELDS,
    RESUME_FORMAT,
    CheckpointError,
    atomic_write,
    check_config,
    check_tree,
    digest,
    flatten,
    read_file,
    verify_digest,
)

__all__ = ["SUFFIX", "CheckpointError", "flatten", "load", "load_resume", "save", "save_resume"]

SUFFIX = ".msgpack"


def _numpy(tree, source: str) -> dict[str, object]:
    """``flatten(tree)`` with every array as a numpy array on the host."""
    del source  # (torch's twin names the file when a dtype has no numpy equivalent; every JAX dtype has one)
    flat = flatten(serialization.to_state_dict(tree))
    return {k: np.asarray(v) if isinstance(v, jax.Array) else v for k, v in flat.items()}


def _msgpack_load(path: str | os.PathLike):
    data = read_file(path)
    try:
        return serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 - untrusted bytes: msgpack fails in many unrelated types
        raise CheckpointError(f"{path}: not a readable Flax msgpack checkpoint ({type(e).__name__})") from None


def save(params, path: str | os.PathLike) -> None:
    """``flax.serialization`` msgpack of ``params``, atomically, with a sha256 of its arrays.

    The file is ``{"format", "params", "sha256"}``; ``load`` also reads a bare params tree
    (``serialization.to_bytes(params)``), with every check but the checksum.
    """
    params = jax.device_get(serialization.to_state_dict(params))
    payload = {"format": PARAMS_FORMAT, "params": params, DIGEST_KEY: digest(_numpy(params, str(path)))}
    atomic_write(path, lambda f: f.write(serialization.msgpack_serialize(payload)))


def load(path: str | os.PathLike, params):
    """Params read from ``path`` into the structure of ``params`` (e.g. ``init_params(key, hidden)``)."""
    restored = _msgpack_load(path)
    if not isinstance(restored, dict):
        raise CheckpointError(f"{path}: holds a {type(restored).__name__}, not a parameter tree")
    envelope = restored.get("format") == PARAMS_FORMAT
    if envelope:
        payload_digest, restored = restored.get(DIGEST_KEY), restored.get("params")
    flat = flatten(restored)
    check_tree(flat, _numpy(params, str(path)), str(path))
    if envelope:
        verify_digest(flat, payload_digest, str(path))
    return serialization.from_state_dict(params, restored)


def save_resume(path: str | os.PathLike, state: TrainState, rng: jax.Array,
                epoch: int, config: Mapping[str, object]) -> None:
    """Everything a run needs to go on after ``epoch`` epochs: params, the optimizer's state
    (momentum traces), epoch, step, the PRNG key and the config, with a sha256 of it all."""
    payload = {
        "format": RESUME_FORMAT,
        "params": jax.device_get(serialization.to_state_dict(state.params)),
        "opt_state": jax.device_get(serialization.to_state_dict(state.opt_state)),
        "epoch": epoch,
        "step": int(state.step),
        "rng": np.asarray(rng),
        "config": json.dumps(dict(config), sort_keys=True),
    }
    payload[DIGEST_KEY] = digest(flatten(payload))
    atomic_write(path, lambda f: f.write(serialization.msgpack_serialize(payload)))


def load_resume(path: str | os.PathLike, state: TrainState, rng: jax.Array,
                config: Mapping[str, object]) -> tuple[TrainState, jax.Array, int]:
    """``state`` and ``rng`` restored from ``save_resume``'s file; returns (state, rng, epoch).

    The optimizer's hyperparameters come from ``config``, which must agree with the checkpoint's
    (RESUME_FIELDS); only its per-parameter state (momentum traces) comes from the file. The
    restored leaves are placed where ``state``'s are, so the next epoch does not compile again.
    """
    source = str(path)
    payload = _msgpack_load(path)
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{source}: not a resume checkpoint of this project (format {RESUME_FORMAT})")
    flat = flatten({k: v for k, v in payload.items() if k != DIGEST_KEY})
    verify_digest(flat, payload.get(DIGEST_KEY), source)
    try:
        saved = json.loads(payload["config"])
        epoch, step = payload["epoch"], payload["step"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: incomplete resume checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or type(epoch) is not int or type(step) is not int or epoch < 0 or step < 0:
        raise CheckpointError(f"{source}: incomplete resume checkpoint (config, epoch or step)")
    check_config(saved, config, RESUME_FIELDS, source)
    want = {f"params/{k}": v for k, v in _numpy(state.params, source).items()}
    want.update({f"opt_state/{k}": v for k, v in _numpy(state.opt_state, source).items()})
    want["rng"] = np.asarray(rng)
    got = {k: v for k, v in flat.items() if k.startswith(("params/", "opt_state/")) or k == "rng"}
    check_tree(got, want, source, what="entry")
    device = next(iter(jax.tree_util.tree_leaves(state.params)[0].devices()))
    restored = state.replace(
        params=serialization.from_state_dict(state.params, payload["params"]),
        opt_state=serialization.from_state_dict(state.opt_state, payload["opt_state"]),
        step=jnp.asarray(step, jnp.int32),
    )
    # Committed to the device, as create_train_state leaves them: the epoch's compiled code is reused.
    restored = jax.device_put(restored, device)
    return restored, jax.device_put(jnp.asarray(payload["rng"]), device), epoch
