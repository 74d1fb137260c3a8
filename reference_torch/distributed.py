"""The quickstart data-parallel: torch ``DistributedDataParallel`` over N processes.

One process per replica (``launch.py`` starts them): gloo on CPU, NCCL on CUDA (one GPU per rank).
Every rank initialises its own model from the same seed (DDP also broadcasts rank 0's weights at
construction), trains on its shard of every global batch (``quickstart_parity_common.shards``) and DDP all-reduces
the gradients in buckets during ``backward``. Every collective has the process group's timeout, so
a dead or hung peer becomes an error. ``jax_impl/distributed.py`` is the JAX twin.
"""
from __future__ import annotations

import datetime
import os
import signal
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from quickstart_parity_common.checkpoint import atomic_write
from quickstart_parity_common.cli import DeviceError
from quickstart_parity_common.data import find_files, read_split, to_float
from quickstart_parity_common.shards import check_divisible, epoch_shards, loss_weight

from .model import NeuralNetwork
from .train import make_optimizer

__all__ = [
    "Config",
    "allreduce_sum_hook",
    "available_devices",
    "check_config",
    "configs_from_dicts",
    "load_train",
    "train",
    "train_configs",
    "train_step",
    "weighted_loss",
    "worker",
]


@dataclass
class Config:
    """Data-parallel settings; ``jax_impl.distributed.Config`` has the same fields (and ``form``)."""

    devices: int = 2
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    data_dir: str = "data"
    hidden: tuple[int, ...] = (512, 512)
    dtype: str = "float32"
    samples: int = 0  # train on the first ``samples`` images (0: all 60000)
    split: str = "exact"  # quickstart_parity_common.shards.SPLITS; floor and drop_last are negative controls
    grad_reduce: str = "mean"  # "sum": the negative control (gradients summed over replicas, not averaged)
    same_shard: bool = False  # negative control: every replica fed shard 0
    seed_per_rank: bool = False  # negative control: rank r initialised from seed + r, without DDP's broadcast
    timeout_s: float = 60.0  # per collective: a dead or hung peer becomes an error after this long
    fault: str = ""  # "kill" or "stall" rank ``fault_rank`` at step ``fault_step`` (tests of the timeout)
    fault_rank: int = 1
    fault_step: int = 5


def available_devices(device: str) -> int:
    """Replicas this machine can run: one per GPU on CUDA, one per core (the CPUs this process may use) on CPU."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device cuda: CUDA is not available to torch {torch.__version__} on this machine")
        return torch.cuda.device_count()
    if device != "cpu":
        raise DeviceError(f"--device {device}: unknown device (use cpu or cuda)")
    return len(os.sched_getaffinity(0))


def check_config(cfg: Config) -> None:
    """Bad inputs as DeviceError / ShardError, before any process starts."""
    have = available_devices(cfg.device)
    if cfg.devices > have:
        raise DeviceError(f"--devices {cfg.devices}: this machine can run {have} {cfg.device} replica(s) "
                          f"({'GPUs' if cfg.device == 'cuda' else 'cores'} available)")
    check_divisible(cfg.batch_size, cfg.devices)


def configs_from_dicts(dicts: list[dict]) -> list[Config]:
    """The Configs of a ``configs.json`` (``dataclasses.asdict`` of each, through JSON): every worker's input."""
    names = {f.name for f in fields(Config)}
    return [Config(**{k: (tuple(v) if k == "hidden" else v) for k, v in c.items() if k in names}) for c in dicts]


def load_train(data_dir: str, samples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training split as ToTensor pixels (N, 784) and int64 labels, the first ``samples`` (0: all)."""
    images, labels = read_split(find_files(data_dir), train=True)
    n = samples or len(images)
    return to_float(images[:n]).reshape(n, -1), labels[:n].astype(np.int64)


def weighted_loss(pred: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
    """This shard's mean cross-entropy times ``weight = n_r * N / b`` (1 for equal shards)."""
    if len(y):
        return nn.functional.cross_entropy(pred, y) * weight
    return pred.sum() * 0.0  # an empty shard still joins the all-reduce, with zero gradients


def train_step(ddp: DDP, optimizer, x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
    """One replica's step: ``weighted_loss`` of its shard; ``backward`` all-reduces the gradients
    (sum / world size, in buckets) before ``step``."""
    loss = weighted_loss(ddp(x), y, weight)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def allreduce_sum_hook(state, bucket):  # no annotations: DDP compares them with dist.GradBucket, and
    # ``from __future__ import annotations`` would make them strings
    """The negative control's DDP comm hook: all-reduce the bucket's gradients as a sum (no division)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def train(rank: int, cfg: Config, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Train ``cfg.epochs`` epochs on this rank (inside an initialised process group); returns per-step
    losses, this rank's initial weights and its weights after each epoch, the epoch times and the
    shards this rank held in the first epoch."""
    cuda = device.type == "cuda"
    dtype = getattr(torch, cfg.dtype)
    torch.manual_seed(cfg.seed + (rank if cfg.seed_per_rank else 0))
    model = NeuralNetwork(cfg.hidden).to(device, dtype)
    # init_sync (the default) broadcasts rank 0's weights; the seed control turns it off to show the bug.
    ddp = DDP(model, device_ids=[rank] if cuda else None, init_sync=not cfg.seed_per_rank)
    if cfg.grad_reduce == "sum":
        ddp.register_comm_hook(None, allreduce_sum_hook)
    init = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(ddp, cfg.lr)
    steps = epoch_shards(len(x), cfg.batch_size, cfg.devices, cfg.split)
    losses, seen, snapshots, epoch_s = [], [], [], []  # snapshots: this rank's weights after each epoch
    ddp.train()
    for epoch in range(cfg.epochs):
        dist.barrier()  # every rank starts the clock together
        start = time.perf_counter()
        for step, shards in enumerate(steps):
            if cfg.fault and rank == cfg.fault_rank and step == cfg.fault_step:
                if cfg.fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(10 * cfg.timeout_s)  # "stall": hang without dying
            idx = shards[0 if cfg.same_shard else rank]
            b = sum(len(s) for s in shards)  # the samples this global batch trains on
            i = torch.from_numpy(idx).to(device)
            losses.append(train_step(ddp, optimizer, x[i], y[i], loss_weight(len(idx), b, cfg.devices)))
            if epoch == 0:
                seen.append(idx)
        if cuda:
            torch.cuda.synchronize(device)
        dist.barrier()
        epoch_s.append(time.perf_counter() - start)
        snapshots.append({k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()})
    return {"losses": torch.stack(losses).double().cpu().numpy(), "epochs": snapshots, "init": init,
            "epoch_s": epoch_s, "shards": seen}


def worker(rank: int, cfgs: list[Config], port: int, out_dir: str) -> None:
    """One rank of ``launch.run_many``: trains every config of ``cfgs`` and writes ``run<n>_rank<rank>.npz``."""
    first = cfgs[0]
    cuda = first.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # N processes share the cores: one process per core, not N * cores threads
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // first.devices))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=first.devices, timeout=datetime.timedelta(seconds=first.timeout_s))
    try:
        train_configs(rank, cfgs, out_dir, device)
    finally:
        dist.destroy_process_group()


def train_configs(rank: int, cfgs: list[Config], out_dir: str, device: torch.device) -> None:
    """Inside an initialised process group: trains every config of ``cfgs`` on this rank and writes
    ``run<n>_rank<rank>.npz`` (``worker`` and ``multiprocess``, the program torchrun starts, share it)."""
    data: dict = {}
    for n, cfg in enumerate(cfgs):
        key = (cfg.data_dir, cfg.samples, cfg.dtype)
        if key not in data:  # the ranks load the data themselves (nothing large is pickled to them)
            x_np, y_np = load_train(cfg.data_dir, cfg.samples)
            data[key] = (torch.from_numpy(x_np).to(device, getattr(torch, cfg.dtype)), torch.from_numpy(y_np).to(device))
        result = train(rank, cfg, device, *data[key])
        snaps = {f"epoch{e}/{k}": v for e, p in enumerate(result["epochs"]) for k, v in p.items()}
        arrays = {"losses": result["losses"], **snaps, "seen": np.concatenate(result["shards"]),
                  "seen_count": np.array([len(s) for s in result["shards"]]), "epoch_s": np.array(result["epoch_s"]),
                  **{f"init/{k}": v for k, v in result["init"].items()}}
        # whole or absent: a rank killed mid-write leaves no half-written file
        atomic_write(Path(out_dir) / f"run{n}_rank{rank}.npz", lambda f, arrays=arrays: np.savez(f, **arrays))
