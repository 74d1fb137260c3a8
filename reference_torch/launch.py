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


def run_processes(cfgs: list[Config], timeout_s: float = 600.0, nodes: int = 1) -> list[dict]:
    """``run_many`` through ``torchrun``: the same ranks and results, with the process group formed the
    way a cluster forms it. ``nodes`` = 1: ``torchrun --standalone --nproc-per-node N``; ``nodes`` > 1:
    that many torchrun agents on this machine, each ``--nnodes nodes --node-rank i --nproc-per-node
    N/nodes --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:port``, the multi-node form over loopback.
    torchrun stops every rank of its node when one fails, and the other agents are stopped here; the
    whole job is killed after ``timeout_s``. Raises DistributedError naming the (global) rank."""
    for cfg in cfgs:
        check_config(cfg)
    n = cfgs[0].devices
    if nodes < 1 or n % nodes:
        raise DistributedError(f"{n} replicas do not split over {nodes} nodes")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "configs.json").write_text(json.dumps([asdict(c) for c in cfgs]))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
                   OMP_NUM_THREADS=str(max(1, len(os.sched_getaffinity(0)) // n)))
        run = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "0", "--monitor-interval", "0.2"]
        program = ["-m", "reference_torch.multiprocess", "--configs", str(tmp / "configs.json"), "--out", str(tmp)]
        if nodes == 1:
            cmds = [[*run, "--standalone", "--nnodes", "1", "--nproc-per-node", str(n), *program]]
        else:
            endpoint = f"127.0.0.1:{free_port()}"
            cmds = [[*run, "--nnodes", str(nodes), "--node-rank", str(i), "--nproc-per-node", str(n // nodes),
                     "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "quickstart-parity",
                     "--rdzv-conf", f"join_timeout={int(cfgs[0].timeout_s)}", *program] for i in range(nodes)]
        start, deadline = time.monotonic(), time.monotonic() + timeout_s
        procs = []
        try:
            for i, cmd in enumerate(cmds):  # files, not pipes: a full pipe would stall the ranks
                with open(tmp / f"torchrun{i}.log", "w") as log:
                    procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                if any(p.poll() not in (None, 0) for p in procs):
                    time.sleep(1.0)  # the other nodes' agents report their side of it
                    break
                time.sleep(0.2)
            timed_out = any(p.poll() is None for p in procs) and time.monotonic() >= deadline
        finally:
            for p in procs:
                try:  # each torchrun and its ranks share a session: none outlives it
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        logs = [(tmp / f"torchrun{i}.log").read_text(errors="replace") for i in range(len(cmds))]
        if timed_out:
            raise DistributedError(f"the torchrun job did not finish in {timeout_s:.0f} s and was killed with its ranks")
        codes = [p.returncode for p in procs]
        if any(codes):
            text = "\n".join(logs)
            errors = {int(m.group(1)): m.group(0).strip() for m in re.finditer(r"\(rank (\d+)\): error: .*", text)}
            causes = [c for c in map(_rank_failure, logs) if c]
            killed = [c for c in causes if c[1] < 0 and c[1] != -signal.SIGTERM] or [c for c in causes if c[1] < 0]
            if killed:
                msg = f"DDP rank {killed[0][0]} was killed by {signal.Signals(-killed[0][1]).name}"
            elif errors:
                r = next((c[0] for c in causes if c[0] in errors), min(errors))  # the first to fail
                msg = f"DDP rank {r} failed: {errors[r].split('error: ', 1)[1]}"
            elif causes:
                msg = f"DDP rank {causes[0][0]} exited with code {causes[0][1]}"
            else:
                last = [ln for ln in text.splitlines() if ln.strip()]
                msg = f"torchrun failed (exit {max(codes, key=abs)}): {last[-1] if last else 'no output'}"
            raise DistributedError(f"{msg} (torchrun, after {time.monotonic() - start:.0f} s); the other ranks were stopped")
        return _read_results(cfgs, tmp)
