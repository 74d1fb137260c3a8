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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from quickstart_parity_common.shards import DistributedError

if TYPE_CHECKING:  # the worker's module imports JAX; starting it needs none
    from .distributed import Config

__all__ = ["DistributedError", "collect", "collect_processes", "run_many", "run_processes", "start",
           "start_processes"]

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


# --- the multi-controller form: N processes of ``jax_impl.multiprocess`` over loopback ---------------

def _save_inputs(cfgs: list[Config], init: dict, work: Path) -> None:
    np.savez(work / "init.npz", **{f"{layer}/{k}": np.asarray(v) for layer, d in init.items() for k, v in d.items()})
    (work / "configs.json").write_text(json.dumps([asdict(c) for c in cfgs]))


def start_processes(cfgs: list[Config], init: dict, work: Path, processes: int | None = None,
                    init_timeout: int = 60) -> list[subprocess.Popen]:
    """``processes`` (default: the first config's ``devices``) processes of ``python -m
    jax_impl.multiprocess`` on this machine, one CPU device each, coordinator on a free loopback
    port, process 0 hosting it: what ``srun``/a host list starts across machines. Their stdout and
    stderr go to ``work``/proc<r>.log (files, not pipes: a full pipe would stall a process)."""
    work = Path(work)
    _save_inputs(cfgs, init, work)
    n = processes or cfgs[0].devices
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu" if cfgs[0].device == "cpu" else "cuda", XLA_PYTHON_CLIENT_PREALLOCATE="false",
               PYTHONPATH=os.pathsep.join([str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))  # one device each
    procs = []
    for r in range(n):
        with open(work / f"proc{r}.log", "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "jax_impl.multiprocess", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
                 str(n), "--process-id", str(r), "--init-timeout", str(init_timeout), "--configs",
                 str(work / "configs.json"), "--init", str(work / "init.npz"), "--out", str(work)],
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    return procs


def _last_error(work: Path, r: int) -> str:
    lines = [ln.strip() for ln in (work / f"proc{r}.log").read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or ["no output"])[-1]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def collect_processes(procs: list[subprocess.Popen], work: Path, timeout_s: float) -> list[dict]:
    """Wait up to ``timeout_s`` for ``start_processes``'s processes. The first to fail is named and the
    others are killed at once (a peer of a dead process would wait in a collective); one past the
    time is killed and named. One result per config: ``collect``'s fields, the losses and
    parameters from process 0, each device's shards from its own process, and in
    ``final_mismatch`` the parameters whose copies differ between processes."""
    work, deadline = Path(work), time.monotonic() + timeout_s
    try:
        while any(p.poll() is None for p in procs):
            failed = [r for r, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                time.sleep(0.5)  # a peer's failure follows a death within moments: name the cause, not the echo
                codes = {r: procs[r].poll() for r in range(len(procs)) if procs[r].poll() not in (None, 0)}
                r = min(codes, key=lambda k: (codes[k] >= 0, k))  # killed by a signal first
                raise DistributedError(_describe(r, codes[r], work))
            if time.monotonic() > deadline:
                alive = [r for r, p in enumerate(procs) if p.poll() is None]
                raise DistributedError(f"JAX process {alive[0]} did not finish in {timeout_s:.0f} s "
                                       f"(still running: {alive}); every process was killed")
            time.sleep(0.2)
        codes = {r: p.returncode for r, p in enumerate(procs) if p.returncode}
        if codes:
            r = min(codes, key=lambda k: (codes[k] >= 0, k))
            raise DistributedError(_describe(r, codes[r], work))
    finally:
        _stop(procs)
    out = []
    for n in range(len(json.loads((work / "configs.json").read_text()))):
        ranks = []
        for r in range(len(procs)):
            if not (work / f"run{n}_proc{r}.npz").exists():
                raise DistributedError(f"JAX process {r} exited without the results of config {n}")
            with np.load(work / f"run{n}_proc{r}.npz") as f:
                ranks.append({k: f[k] for k in f.files})
        meta = json.loads((work / f"run{n}_proc0.json").read_text())
        epochs: list[dict] = [{} for _ in range(meta["config"]["epochs"])]
        for key, v in ranks[0].items():
            if key.startswith("epoch"):
                e, layer, name = key.split("/")
                epochs[int(e.removeprefix("epoch"))].setdefault(layer, {})[name] = v
        devices = meta["config"]["devices"]
        shards = []
        for d in range(devices):
            holder = next(r for r in ranks if f"shard{d}" in r)
            shards.append(np.split(holder[f"shard{d}"], np.cumsum(holder[f"shard{d}_count"])[:-1]))
        across = sorted({k for r in ranks[1:] for k in ranks[0] if k.startswith("epoch")
                         and not np.array_equal(r[k], ranks[0][k])})
        meta["final_mismatch"] = meta["final_mismatch"] + across
        meta["rank_losses"] = [r["losses"] for r in ranks]
        out.append({"losses": ranks[0]["losses"], "epochs": epochs, "shards": shards, **meta})
    return out


def _describe(r: int, code: int, work: Path) -> str:
    if code < 0:  # JAX itself aborts a process (SIGABRT) on a fatal error of the coordination service
        fatal = [ln.split("] ", 1)[-1] for ln in (work / f"proc{r}.log").read_text(errors="replace").splitlines()
                 if ln.startswith("F")]
        why = f" ({fatal[-1][:200]})" if fatal and code != -signal.SIGKILL else ""
        return f"JAX process {r} was killed by {signal.Signals(-code).name}{why}; the other processes were stopped"
    return f"JAX process {r} failed (exit {code}): {_last_error(work, r)}; the other processes were stopped"


def run_processes(cfgs: list[Config], init: dict, timeout_s: float, processes: int | None = None) -> list[dict]:
    """``start_processes`` then ``collect_processes``, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = start_processes(cfgs, init, Path(tmp), processes)
        return collect_processes(procs, Path(tmp), timeout_s)
