"""The torch data-parallel as the program ``torchrun`` starts: one process per replica, on any number of nodes.

``torchrun`` (``python -m torch.distributed.run``) forms the process group by rendezvous and starts
this program once per replica with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in its environment; it joins with ``init_method="env://"``. Under
SLURM without torchrun (``srun`` one task per replica), ``SLURM_PROCID`` / ``SLURM_NTASKS`` /
``SLURM_LOCALID`` stand in, and the batch script exports ``MASTER_ADDR`` / ``MASTER_PORT``. Each rank
trains ``distributed.train`` on its shard of every global batch, as ``launch.run``'s spawned ranks
do, and writes ``run<n>_rank<r>.npz``; ``launch.run_processes`` runs ``torchrun --standalone`` on one
machine. A bad input or a failed collective ends the rank with one ``error:`` line naming it, exit 2.
``jax_impl/multiprocess.py`` is the JAX twin.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

from quickstart_parity_common.shards import read_configs

__all__ = ["main", "process_from_environment"]


def process_from_environment() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) from torchrun's variables, else SLURM's."""
    env = os.environ
    if "RANK" in env:
        world = int(env["WORLD_SIZE"])
        return int(env["RANK"]), world, int(env.get("LOCAL_RANK", 0)), int(env.get("LOCAL_WORLD_SIZE", world))
    if "SLURM_PROCID" in env:
        world = int(env["SLURM_NTASKS"])
        return (int(env["SLURM_PROCID"]), world, int(env.get("SLURM_LOCALID", 0)),
                int(env.get("SLURM_NTASKS_PER_NODE", world).split("(")[0]))
    raise KeyError("RANK")


def main(argv=None) -> int:
    """One rank of the torchrun-started DDP run: trains every config of ``--configs`` and writes ``--out``."""
    p = argparse.ArgumentParser(prog="python -m reference_torch.multiprocess", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", required=True, help="JSON file: a list of reference_torch.distributed.Config dicts")
    p.add_argument("--out", required=True, help="folder for run<n>_rank<r>.npz")
    args = p.parse_args(argv)
    try:
        rank, world, local_rank, local_world = process_from_environment()
    except (KeyError, ValueError) as e:
        print(f"{p.prog}: error: no rank in the environment ({e}): start it with torchrun, or under SLURM with srun",
              file=sys.stderr)
        return 2
    who = f"{p.prog} (rank {rank})"

    def fail(message: str) -> int:
        print(f"{who}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2

    try:
        cfg_dicts = read_configs(args.configs, args.out)
    except ValueError as e:
        return fail(str(e))
    if any(c["devices"] != world for c in cfg_dicts):
        return fail(f"WORLD_SIZE {world} but the configs train {sorted({c['devices'] for c in cfg_dicts})} replicas "
                    "(one process per replica: --nnodes x --nproc-per-node must be the replica count)")

    import torch  # noqa: PLC0415 -- after the checks above, which need none of it
    import torch.distributed as dist  # noqa: PLC0415 -- as torch above

    from quickstart_parity_common.checkpoint import CheckpointError  # noqa: PLC0415 -- as torch above
    from quickstart_parity_common.data import DataError  # noqa: PLC0415 -- as torch above

    from .distributed import configs_from_dicts, train_configs  # noqa: PLC0415 -- imports torch

    try:
        cfgs = configs_from_dicts(cfg_dicts)
    except (TypeError, ValueError) as e:  # a field the Config does not take, a value of the wrong kind
        return fail(f"--configs {args.configs}: not the configs reference_torch.launch writes ({e})")
    cuda = cfgs[0].device == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif not os.environ.get("OMP_NUM_THREADS"):  # torchrun sets it (1 by default), a user may: that wins;
        # else the node's processes share its cores
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=cfgs[0].timeout_s))
    except (RuntimeError, ValueError) as e:  # DistStoreError / DistNetworkError are RuntimeErrors
        return fail(f"cannot join the process group at {where} within {cfgs[0].timeout_s:.0f} s: {str(e).splitlines()[0]}")
    try:
        train_configs(rank, cfgs, args.out, device)
    except (CheckpointError, DataError) as e:
        return fail(str(e))
    except RuntimeError as e:  # a collective failed: a peer died, or did not answer within the timeout
        return fail(f"a collective failed (a peer died or hung): {str(e).strip().splitlines()[0]}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
