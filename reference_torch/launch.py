"""Starts torch's data-parallel run: ``distributed.py``'s worker in N processes, the standard way.

``torch.multiprocessing`` spawn, one process per replica, a TCP rendezvous on localhost. A rank
that dies or hangs does not hang the others: every collective has the process group's timeout,
and the parent stops all ranks as soon as one fails (``torch.multiprocessing``'s join), then
raises DistributedError naming the rank. ``jax_impl/launch.py`` is the twin: JAX's N devices share
one process, started apart because N host devices and x64 must be in its environment before JAX starts.
"""
from __future__ import annotations

import signal
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch.multiprocessing as mp

from quickstart_parity_common.shards import DistributedError

from .distributed import Config, check_config, worker

__all__ = ["DistributedError", "free_port", "run", "run_many"]


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
        results = []
        for n, cfg in enumerate(cfgs):
            ranks = []
            for r in range(first.devices):
                with np.load(Path(tmp) / f"run{n}_rank{r}.npz") as f:
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
