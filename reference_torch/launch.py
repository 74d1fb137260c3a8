"""Starts torch's data-parallel run: ``distributed.py``'s worker in N processes, the standard way.

``torch.multiprocessing`` spawn, one process per replica, a TCP rendezvous on localhost. A rank
that dies or hangs does not hang the others: every collective has the process group's timeout,
and the parent stops all ranks as soon as one fails (``torch.multiprocessing``'s join), then
raises DistributedError naming the rank. ``jax_impl/launch.py`` is the twin: JAX's N devices share
one process, started apart because N host devices and x64 must be in its environment before JAX starts.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch.multiprocessing as mp

from quickstart_parity_common.shards import DistributedError

from .distributed import Config, check_config, worker

_ROOT = Path(__file__).resolve().parents[1]  # the folder holding reference_torch: torchrun's ranks import this copy

__all__ = ["DistributedError", "free_port", "run", "run_many", "run_processes"]


def free_port() -> int:
    """A free TCP port on localhost for the ranks' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def run(cfg: Config) -> dict:
    """Train with DDP over ``cfg.devices`` processes; returns per-step global losses (the mean of the
    ranks' weighted losses), every rank's shards, its initial weights and its weights after each epoch.

    Raises DistributedError naming the rank when one fails, dies or times out.
    """
    return run_many([cfg])[0]


def run_many(cfgs: list[Config]) -> list[dict]:
    """``run`` for several configurations in one set of processes (one start-up, one rendezvous:
    starting N Python processes that import torch is most of a short run's time).
    ``devices``, ``device`` and ``timeout_s`` are taken from the first."""
    for cfg in cfgs:
        check_config(cfg)
    first = cfgs[0]
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(worker, args=(cfgs, free_port(), tmp), nprocs=first.devices, join=False,
                                 start_method="spawn")
        try:
            while not ctx.join():  # returns when all ranks are done; raises (and stops the rest) when one fails
                pass
        except mp.ProcessExitedException as e:
            how = (f"was killed by {signal.Signals(-e.exit_code).name}" if e.exit_code < 0
                   else f"exited with code {e.exit_code}")
            raise DistributedError(f"DDP rank {e.error_index} {how}; the other ranks were stopped") from None
        except mp.ProcessRaisedException as e:
            raise DistributedError(f"DDP rank {e.error_index} failed: {_one_line(str(e))}; "
                                   "the other ranks were stopped") from None
        return _read_results(cfgs, Path(tmp))


def _read_results(cfgs: list[Config], tmp: Path) -> list[dict]:
    results = []
    for n, cfg in enumerate(cfgs):
        ranks = []
        for r in range(cfgs[0].devices):
            if not (tmp / f"run{n}_rank{r}.npz").exists():  # exit 0 without a config's results: never a shorter list
                raise DistributedError(f"DDP rank {r} exited without the results of config {n}")
            with np.load(tmp / f"run{n}_rank{r}.npz") as f:
                ranks.append({k: f[k] for k in f.files})
        results.append({
            "losses": np.mean([r["losses"] for r in ranks], axis=0),
            "rank_losses": [r["losses"] for r in ranks],
            "epoch_s": ranks[0]["epoch_s"].tolist(),  # wall time of each epoch, between barriers
            "shards": [np.split(r["seen"], np.cumsum(r["seen_count"])[:-1]) for r in ranks],  # [rank][step of epoch 1]
            "init": [{k[5:]: v for k, v in r.items() if k.startswith("init/")} for r in ranks],
            "epochs": [[{k.split("/", 1)[1]: v for k, v in r.items() if k.startswith(f"epoch{e}/")}
                        for e in range(cfg.epochs)] for r in ranks],  # [rank][epoch] -> state_dict
            "config": asdict(cfg),
        })
    return results


def _rank_failure(log: str) -> tuple[int, int] | None:
    """(rank, exit code) of torchrun's "Root Cause (first observed failure)" block: the rank that failed
    first, not the peers torchrun then stopped with SIGTERM (its "Failures" block)."""
    pattern = r"rank\s*:\s*(\d+).*?\n\s*exitcode\s*:\s*(-?\d+)"
    root = log.split("Root Cause", 1)
    found = re.findall(pattern, root[1]) if len(root) == 2 else re.findall(pattern, log)
    return (int(found[0][0]), int(found[0][1])) if found else None


def run_processes(cfgs: list[Config], timeout_s: float = 600.0) -> list[dict]:
    """``run_many`` through ``torchrun --standalone --nproc-per-node N`` (the c10d rendezvous on a free
    local port): the same ranks and results, with the process group formed the way a cluster forms it.
    torchrun stops every rank when one fails; the whole job is killed after ``timeout_s``. Raises
    DistributedError naming the rank."""
    for cfg in cfgs:
        check_config(cfg)
    n = cfgs[0].devices
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "configs.json").write_text(json.dumps([asdict(c) for c in cfgs]))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   OMP_NUM_THREADS=str(max(1, len(os.sched_getaffinity(0)) // n)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(n),
               "--max-restarts", "0", "--monitor-interval", "0.2", "-m", "reference_torch.multiprocess",
               "--configs", str(tmp / "configs.json"), "--out", str(tmp)]
        start = time.monotonic()
        with open(tmp / "torchrun.log", "w") as log:  # a file, not a pipe: a full pipe would stall the ranks
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                try:  # torchrun and its ranks share the session: none outlives it
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        text = (tmp / "torchrun.log").read_text(errors="replace")
        if code is None:
            raise DistributedError(f"the torchrun job did not finish in {timeout_s:.0f} s and was killed with its ranks")
        if code != 0:
            errors = {int(m.group(1)): m.group(0).strip() for m in
                      re.finditer(r"\(rank (\d+)\): error: .*", text)}
            cause = _rank_failure(text)
            if cause and cause[1] < 0:
                msg = f"DDP rank {cause[0]} was killed by {signal.Signals(-cause[1]).name}"
            elif errors:
                r = cause[0] if cause and cause[0] in errors else min(errors)  # the first to fail
                msg = f"DDP rank {r} failed: {errors[r].split('error: ', 1)[1]}"
            elif cause:
                msg = f"DDP rank {cause[0]} exited with code {cause[1]}"
            else:
                last = [ln for ln in text.splitlines() if ln.strip()]
                msg = f"torchrun failed (exit {code}): {last[-1] if last else 'no output'}"
            raise DistributedError(f"{msg} (torchrun, after {time.monotonic() - start:.0f} s); the other ranks were stopped")
        return _read_results(cfgs, tmp)
