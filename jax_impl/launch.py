"""Starts JAX's data-parallel run: ``distributed.py``'s worker (``python -m jax_impl.distributed``).

JAX drives N devices from one process, so there is one process to start, not N. It runs apart from
the caller because its environment must be set before JAX starts its backend: on CPU the N host
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), and for float64 ``JAX_ENABLE_X64``,
which would leak into everything the caller runs after it. ``start`` returns at once, so the process
trains while the caller does something else (``parity.distributed`` runs DDP's ranks meanwhile);
``collect`` waits for it and reads its files back. A process that fails, or outlives its time (then
it is killed), raises DistributedError with its last stderr line. ``reference_torch/launch.py`` is
the twin.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quickstart_parity_common.shards import DistributedError

if TYPE_CHECKING:  # the worker's module imports JAX; starting it needs none
    from .distributed import Config

__all__ = ["DistributedError", "collect", "run_many", "start"]

_ROOT = Path(__file__).resolve().parents[1]  # the folder holding jax_impl: the child imports this copy


def start(cfgs: list[Config], init: dict, work: Path) -> subprocess.Popen:
    """One process training every config of ``cfgs`` from ``init`` (numpy, Flax layout
    ``{layer: {name: array}}``), writing into the existing folder ``work``. ``devices`` and ``device``
    are the first config's; x64 is on where any config is float64."""
    first, work = cfgs[0], Path(work)
    np.savez(work / "init.npz", **{f"{layer}/{k}": np.asarray(v) for layer, d in init.items() for k, v in d.items()})
    (work / "configs.json").write_text(json.dumps([asdict(c) for c in cfgs]))
    env = dict(os.environ, JAX_PLATFORMS="cpu" if first.device == "cpu" else "cuda", XLA_PYTHON_CLIENT_PREALLOCATE="false",
               PYTHONPATH=os.pathsep.join([str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if first.device == "cpu":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={first.devices}".strip()
    if any(c.dtype == "float64" for c in cfgs):
        env["JAX_ENABLE_X64"] = "1"
    return subprocess.Popen([sys.executable, "-m", "jax_impl.distributed", "--configs", str(work / "configs.json"),
                             "--init", str(work / "init.npz"), "--out", str(work)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen, work: Path, timeout_s: float) -> list[dict]:
    """Wait up to ``timeout_s`` for ``start``'s process; one result per config, in order: ``losses``
    (per step), ``epochs`` (the params after each epoch, device 0's copy, Flax layout), ``shards``
    ([device][step of the first epoch] -> indices) and the run's JSON fields (``accuracy``,
    ``avg_loss``, ``epoch_s``, ``devices``, ``config``, the replica checks)."""
    work = Path(work)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise DistributedError(f"the JAX process did not finish in {timeout_s:.0f} s and was killed") from None
    if proc.returncode != 0:
        last = [line for line in err.strip().splitlines() if line.strip()]
        raise DistributedError(f"the JAX process failed: {last[-1] if last else proc.returncode}")
    out = []
    for n in range(len(json.loads((work / "configs.json").read_text()))):
        if not (work / f"run{n}.npz").exists():  # exit 0 without a config's results: never a shorter list
            raise DistributedError(f"the JAX process exited without the results of config {n}")
        meta = json.loads((work / f"run{n}.json").read_text())
        with np.load(work / f"run{n}.npz") as f:
            flat = {k: f[k] for k in f.files}
        epochs: list[dict] = [{} for _ in range(meta["config"]["epochs"])]
        for key, v in flat.items():
            if key.startswith("epoch"):
                e, layer, name = key.split("/")
                epochs[int(e.removeprefix("epoch"))].setdefault(layer, {})[name] = v
        shards = [np.split(flat[f"shard{d}"], np.cumsum(flat[f"shard{d}_count"])[:-1])
                  for d in range(meta["config"]["devices"])]
        out.append({"losses": flat["losses"], "epochs": epochs, "shards": shards, **meta})
    return out


def run_many(cfgs: list[Config], init: dict, timeout_s: float) -> list[dict]:
    """``start`` then ``collect``, in a temporary folder: every config of ``cfgs`` in one process."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = start(cfgs, init, Path(tmp))
        try:
            return collect(proc, Path(tmp), timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
