"""How a global batch is split over N data-parallel replicas (numpy only; both sides use it).

The tutorial's loader gives global batches of ``batch_size`` samples in file order, the last one
partial (60000 = 937 * 64 + 32). Data parallelism gives each of N replicas one *shard* of every
global batch and combines their gradients. One device's step is the mean over the ``b`` samples of
the batch; replica ``r`` holds ``n_r`` of them, and

    mean over b  =  sum_r (n_r / b) * mean over shard r  =  (1/N) * sum_r (n_r * N / b) * mean_r.

torch DDP all-reduces gradient *sums* and divides by N (the world size) whatever the shard sizes,
and JAX's ``pmean`` is the same (1/N) sum. So each replica's loss is its shard mean times
``weight = n_r * N / b`` (exactly 1 when the shards are equal, the standard loop): exact for unequal
shards too. A replica with an empty shard (b < N) still joins every all-reduce, with weight 0.

Splits (the ``split`` argument): ``exact`` cuts every global batch in N contiguous shards whose
sizes differ by at most one (``np.array_split``), the first ``b % N`` one larger; the negative
controls ``floor`` (every shard ``b // N``, the remainder dropped, what ``x.reshape(N, -1)`` of a
truncated batch does) and ``drop_last`` (the last partial global batch skipped, what
``DistributedSampler``/``DataLoader(drop_last=True)`` do to make shards equal) lose samples one
device trains on.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLITS = ("exact", "floor", "drop_last")


class ShardError(ValueError):
    """A batch size or device count that data parallelism cannot run as asked."""


class DistributedError(RuntimeError):
    """A replica's process failed, died or timed out; the message names it. Both sides' launchers
    (``reference_torch.launch``, ``jax_impl.launch``) raise this one class, so a caller running both
    catches one name."""


def read_configs(path: str, out_dir: str) -> list[dict]:
    """The worker programs' inputs (``reference_torch.multiprocess``, ``jax_impl.multiprocess``): the
    non-empty JSON list of Config dicts at ``path``, each with an integer ``devices``, and an existing
    ``out_dir``; ValueError saying what is wrong, before any process group forms."""
    try:
        dicts = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"--configs {path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"--configs {path}: not JSON ({e})") from None
    if not isinstance(dicts, list) or not dicts or not all(
            isinstance(c, dict) and type(c.get("devices")) is int for c in dicts):
        raise ValueError(f"--configs {path}: not a non-empty list of Config objects, each with an integer \"devices\"")
    if not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir}: no such folder (every rank writes its results there)")
    return dicts


def check_divisible(batch_size: int, world: int) -> None:
    """The full global batches must split evenly (B / N per replica): the standard DDP recipe and
    JAX's ``NamedSharding`` (an ``IndivisibleError`` otherwise) both need it. Only the last, partial
    batch may be uneven, and is handled exactly by the weights above."""
    if world < 1:
        raise ShardError(f"--devices {world}: need at least 1")
    if batch_size % world:
        raise ShardError(f"--batch-size {batch_size} is not divisible by --devices {world}: each replica needs "
                         f"an equal share of every full batch ({batch_size} / {world} is not whole)")


def global_batches(n_samples: int, batch_size: int, split: str = "exact") -> list[tuple[int, int]]:
    """(start, stop) of every global batch in file order, the last partial one kept unless ``drop_last``."""
    if split not in SPLITS:
        raise ShardError(f"split {split!r}: use one of {SPLITS}")
    bounds = [(s, min(s + batch_size, n_samples)) for s in range(0, n_samples, batch_size)]
    if split == "drop_last" and bounds and bounds[-1][1] - bounds[-1][0] < batch_size:
        bounds.pop()
    return bounds


def shard_sizes(b: int, world: int, split: str = "exact") -> list[int]:
    """Samples each replica gets of a global batch of ``b``."""
    if split == "floor":
        return [b // world] * world
    return [b // world + (1 if r < b % world else 0) for r in range(world)]


def shard_of(start: int, stop: int, world: int, rank: int, split: str = "exact") -> np.ndarray:
    """Indices (into the data set) of replica ``rank``'s contiguous shard of batch ``[start, stop)``."""
    sizes = shard_sizes(stop - start, world, split)
    lo = start + sum(sizes[:rank])
    return np.arange(lo, lo + sizes[rank])


def loss_weight(n_rank: int, b: int, world: int) -> float:
    """``n_r * N / b``: the factor on replica r's mean loss that makes the (1/N)-average of the
    replicas' gradients the global batch mean (1.0 when the shards are equal)."""
    return n_rank * world / b


def epoch_shards(n_samples: int, batch_size: int, world: int, split: str = "exact") -> list[list[np.ndarray]]:
    """``[step][rank] -> indices``: every replica's shard of every global batch of one epoch."""
    return [[shard_of(s, e, world, r, split) for r in range(world)] for s, e in global_batches(n_samples, batch_size, split)]

