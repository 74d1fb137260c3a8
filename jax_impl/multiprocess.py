"""The JAX data-parallel as one program over N processes (multi-controller): one process per host.

Every process runs this same program (``python -m jax_impl.multiprocess``). It calls
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` (from the flags, or
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, or, with none of them, JAX's
own cluster detection: SLURM's ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_STEP_NODELIST``), with CPU
collectives between processes over gloo. ``jax.devices()`` is then every process's devices, one
global mesh is built over them, and ``distributed.train`` runs the same jitted step as the
single-process form; what changes is the data: each process builds only its own shard of every
global batch, and ``jax.make_array_from_process_local_data`` assembles the global array
(``sharding.place_rows``). Every process writes ``run<n>_proc<r>.npz`` (the losses, its copy of the
parameters after each epoch and its devices' shards); ``launch.start_processes`` starts N of them on
one machine. ``reference_torch/multiprocess.py`` is the torch twin (the program ``torchrun`` starts).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

from quickstart_parity_common.shards import read_configs

__all__ = ["main", "process_from_environment"]


def process_from_environment(coordinator: str | None, num_processes: int | None,
                             process_id: int | None) -> tuple[str | None, int | None, int | None]:
    """The flags, else ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``; all three
    None leaves ``jax.distributed.initialize`` to detect the cluster (SLURM, among others)."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    return coordinator, num_processes, process_id


def _reach(address: str, timeout_s: float) -> str:
    """"" when a TCP connection to ``host:port`` opens within ``timeout_s``, else the last reason it did not."""
    host, _, port = address.rpartition(":")
    deadline, reason = time.monotonic() + timeout_s, "no attempt"
    while time.monotonic() < deadline:
        try:
            wait = max(0.1, min(2.0, deadline - time.monotonic()))
            with socket.create_connection((host.strip("[]"), int(port)), timeout=wait):
                return ""
        except (OSError, ValueError) as e:
            reason = str(e) or type(e).__name__
            if isinstance(e, ValueError):
                break
        time.sleep(0.5)  # process 0 may still be starting
    return reason


def main(argv=None) -> int:
    """One process of the multi-controller JAX run: trains every config of ``--configs`` from ``--init``
    and writes ``--out``/run<n>_proc<r>.npz and .json."""
    p = argparse.ArgumentParser(prog="python -m jax_impl.multiprocess", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--coordinator", help="host:port of process 0's coordination service (env JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--num-processes", type=int, help="processes in the run (env JAX_NUM_PROCESSES)")
    p.add_argument("--process-id", type=int, help="this process, 0..num-processes-1 (env JAX_PROCESS_ID)")
    p.add_argument("--init-timeout", type=int, default=60,
                   help="seconds to wait for every process to reach the coordinator")
    p.add_argument("--configs", required=True, help="JSON file: a list of jax_impl.distributed.Config dicts")
    p.add_argument("--init", required=True, help="npz of the initial params, Flax layout (layer/kernel)")
    p.add_argument("--out", required=True, help="folder for run<n>_proc<r>.npz and .json")
    args = p.parse_args(argv)
    coordinator, nprocs, pid = process_from_environment(args.coordinator, args.num_processes, args.process_id)
    who = f"{p.prog} (process {pid if pid is not None else '?'})"

    def fail(message: str) -> int:
        print(f"{who}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2

    try:
        cfg_dicts = read_configs(args.configs, args.out)
    except ValueError as e:
        return fail(str(e))
    if nprocs is not None and any(c["devices"] != nprocs for c in cfg_dicts):
        return fail(f"--num-processes {nprocs} but the configs train {sorted({c['devices'] for c in cfg_dicts})} "
                    "replicas: one device per process")
    if pid is not None and nprocs is not None and not 0 <= pid < nprocs:
        return fail(f"--process-id {pid} is outside 0..{nprocs - 1}")

    if coordinator and pid:  # JAX aborts the process from C++ when it cannot register: try the address first
        reason = _reach(coordinator, args.init_timeout)
        if reason:
            return fail(f"cannot reach the coordinator {coordinator} within {args.init_timeout} s ({reason}): is "
                        "process 0 running there, and the port open?")

    import jax  # noqa: PLC0415 -- after the checks above, which need no backend

    from quickstart_parity_common.checkpoint import CheckpointError  # noqa: PLC0415 -- as jax above
    from quickstart_parity_common.cli import DeviceError  # noqa: PLC0415 -- as jax above
    from quickstart_parity_common.data import DataError  # noqa: PLC0415 -- as jax above

    from .distributed import _read_init, configs_from_dicts, train_configs  # noqa: PLC0415 -- imports jax

    try:  # the inputs whole before the run forms: a bad one ends this process alone, not its peers' wait
        cfgs = configs_from_dicts(cfg_dicts)
        params = _read_init(args.init)
    except (OSError, ValueError, KeyError, TypeError) as e:  # missing, not an npz, keys not layer/name, bad fields
        return fail(f"--init {args.init} / --configs {args.configs}: not the inputs jax_impl.launch writes ({e})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives between processes
    if any(c.dtype == "float64" for c in cfgs):  # before any array exists
        jax.config.update("jax_enable_x64", True)
    try:
        jax.distributed.initialize(coordinator, nprocs, pid, initialization_timeout=args.init_timeout,
                                   heartbeat_timeout_seconds=max(10, args.init_timeout))
    except Exception as e:  # noqa: BLE001 -- JAX raises XlaRuntimeError / RuntimeError / ValueError here
        return fail(f"cannot join the run at coordinator {coordinator} as process {pid} of {nprocs} "
                    f"within {args.init_timeout} s: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    pid = jax.process_index()
    who = f"{p.prog} (process {pid})"
    if jax.device_count() != cfgs[0].devices:
        return fail(f"the run has {jax.device_count()} devices over {jax.process_count()} processes, "
                    f"the configs {cfgs[0].devices} replicas")
    try:  # the test-set metrics once, on process 0
        train_configs(cfgs, params, Path(args.out), f"run{{n}}_proc{pid}", evaluate=pid == 0,
                        processes=jax.process_count())
    except (CheckpointError, DataError, DeviceError, ValueError) as e:
        return fail(str(e))
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    sys.exit(main())
