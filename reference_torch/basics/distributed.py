"""Data parallelism in torch, the loop at its smallest; ``jax_impl/basics/distributed.py`` has the
same functions. The step and its loss are the program's own (``reference_torch/distributed.py``, which
runs them over N processes): the chapter shows them, it does not hold them.

DDP keeps one full model per process. ``backward`` fires a hook per parameter as its gradient is
ready; gradients are packed into buckets (25 MiB by default) and each full bucket is all-reduced
while the rest of ``backward`` still runs. The reducer divides every gradient by the world size
and the all-reduce sums them: each replica ends with (1/N) * sum of the N gradients.
"""
from __future__ import annotations

import datetime

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from quickstart_parity_common.shards import epoch_shards, loss_weight
from reference_torch.distributed import train_step, weighted_loss

__all__ = ["as_numpy", "replicate", "setup", "train_epoch", "train_step", "weighted_loss"]


def setup(rank: int, world: int, port: int, backend: str = "gloo", timeout_s: float = 60.0) -> None:
    """Join the process group (gloo on CPU, nccl on GPUs); every collective times out after ``timeout_s``."""
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def replicate(model: nn.Module, device: torch.device) -> DDP:
    """Wrap the model: DDP broadcasts rank 0's weights so every replica starts the same."""
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def train_epoch(ddp: DDP, optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """This rank's epoch: its contiguous shard of every global batch (``quickstart_parity_common.shards``), file order."""
    rank, world = dist.get_rank(), dist.get_world_size()
    losses = []
    for shards in epoch_shards(len(x), batch_size, world):
        idx = torch.from_numpy(shards[rank]).to(x.device)
        b = sum(len(s) for s in shards)
        losses.append(train_step(ddp, optimizer, x[idx], y[idx], loss_weight(len(idx), b, world)))
    return torch.stack(losses)


def as_numpy(losses: torch.Tensor) -> np.ndarray:
    return losses.double().cpu().numpy()
