"""The model's ``state_dict`` saved as the tutorial does, and a resumable checkpoint of the whole run.

Both are ``torch.save`` files read back with ``torch.load(weights_only=True)``, written atomically
and checked on load (quickstart_parity_common/checkpoint.py): names, dtype, shapes, finite values and a sha256 of
every tensor, so a bad file is a CheckpointError naming it.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping

import numpy as np
import torch

from quickstart_parity_common.checkpoint import (
    DIGEST_KEY,
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

SUFFIX = ".pth"
# Where the weights file keeps its checksum: the state_dict's own ``_metadata`` (module versions),
# which ``torch.load`` restores and ``load_state_dict`` ignores for names that are no module, so
# the tutorial's ``model.load_state_dict(torch.load(path, weights_only=True))`` still reads it.
METADATA_KEY = "quickstart-parity"


def _numpy(tree, source: str) -> dict[str, object]:
    """``flatten(tree)`` with every tensor as a numpy array (CheckpointError for a dtype numpy lacks)."""
    out: dict[str, object] = {}
    for name, value in flatten(tree).items():
        if isinstance(value, torch.Tensor):
            try:
                value = value.detach().cpu().numpy()
            except (TypeError, RuntimeError):
                raise CheckpointError(f"{source}: {name} has dtype {value.dtype}, the model's is float32") from None
        out[name] = value
    return out


def _torch_load(path: str | os.PathLike):
    data = read_file(path)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - untrusted bytes: unpickling and unzipping fail in many unrelated types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def _write(path: str | os.PathLike, obj) -> None:
    """``torch.save(obj)`` to ``path`` atomically: serialized in memory first, so a failed write (disk
    full, ``ulimit -f``) is the OSError of a plain ``write``, a CheckpointError naming ``path``, not
    torch's zip writer's ``RuntimeError: ... unexpected pos``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))


def save(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``torch.save(model.state_dict(), path)``, atomically, with a sha256 of its tensors."""
    state = model.state_dict()
    state._metadata[METADATA_KEY] = {DIGEST_KEY: digest(_numpy(dict(state), str(path)))}
    _write(path, state)


def load(path: str | os.PathLike, model: torch.nn.Module) -> torch.nn.Module:
    """``model`` holding the weights of the state_dict file ``path`` (``weights_only=True``).

    A file without this project's checksum (the tutorial's own ``model.pth``) is read too, with
    every other check.
    """
    state = _torch_load(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    flat = _numpy(dict(state), str(path))
    check_tree(flat, _numpy(dict(model.state_dict()), str(path)), str(path))
    metadata = getattr(state, "_metadata", None)
    ours = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    if ours is not None:
        verify_digest(flat, ours.get(DIGEST_KEY) if isinstance(ours, Mapping) else None, str(path))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in flat.items()})
    return model


def save_resume(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                epoch: int, step: int, config: Mapping[str, object]) -> None:
    """Everything a run needs to go on after ``epoch`` epochs: weights, the optimizer's state
    (momentum buffers), epoch, step, torch's RNG state and the config, with a sha256 of it all."""
    payload = {
        "format": RESUME_FORMAT,
        "model": dict(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "rng": torch.get_rng_state(),
        "config": json.dumps(dict(config), sort_keys=True),
    }
    payload[DIGEST_KEY] = digest(_numpy(payload, str(path)))
    _write(path, payload)


def load_resume(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                config: Mapping[str, object]) -> tuple[int, int]:
    """Restore ``model``, ``optimizer`` and torch's RNG from ``save_resume``'s file; returns (epoch, step).

    The optimizer's hyperparameters come from ``config``, which must agree with the checkpoint's
    (RESUME_FIELDS); only its per-parameter state (momentum buffers) comes from the file.
    """
    source = str(path)
    payload = _torch_load(path)
    if not isinstance(payload, Mapping) or payload.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{source}: not a resume checkpoint of this project (format {RESUME_FORMAT})")
    flat = _numpy({k: v for k, v in payload.items() if k != DIGEST_KEY}, source)
    verify_digest(flat, payload.get(DIGEST_KEY), source)
    try:
        saved = json.loads(payload["config"])
        epoch, step = payload["epoch"], payload["step"]
        optimizer_state = payload["optimizer"]["state"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: incomplete resume checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or type(epoch) is not int or type(step) is not int or epoch < 0 or step < 0:
        raise CheckpointError(f"{source}: incomplete resume checkpoint (config, epoch or step)")
    check_config(saved, config, RESUME_FIELDS, source)
    params = [p.detach().cpu().numpy() for p in model.parameters()]
    want = {f"model/{k}": v for k, v in _numpy(dict(model.state_dict()), source).items()}
    if config["momentum"] and epoch > 0:  # torch's SGD keeps a buffer per parameter once it has stepped
        want.update({f"optimizer/state/{i}/momentum_buffer": p for i, p in enumerate(params)})
    want["rng"] = torch.get_rng_state().numpy()
    got = {k: v for k, v in flat.items() if k.startswith(("model/", "optimizer/state/")) or k == "rng"}
    check_tree(got, want, source, what="entry")
    model.load_state_dict({k.removeprefix("model/"): torch.from_numpy(np.array(v)) for k, v in got.items()
                           if k.startswith("model/")})
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": optimizer.state_dict()["param_groups"]})
    torch.set_rng_state(torch.from_numpy(np.array(got["rng"])))
    return epoch, step
