"""The quickstart data-parallel in JAX: one process, N devices, the batch sharded over a mesh axis.

Two forms of the same step, parameters replicated (``P()``) and every global batch split over the
mesh axis ``"data"`` (``P("data")``):

- ``sharded``: the one-device ``train_step`` under ``jit`` with sharded inputs. The loss is the
  batch mean; XLA partitions the sum over the batch and inserts the all-reduce of the gradients.
- ``shard_map``: the per-device program written out, as DDP is: each device's shard mean times
  ``quickstart_parity_common.shards.loss_weight``, its gradients, then an explicit ``pmean`` over the axis. It runs
  with ``check_vma=False``: with the check on, JAX types the replicated parameters as invariant and
  the gradient of a device-varying loss comes back already *summed* over devices (the transpose of
  the implicit broadcast is a ``psum``), so the explicit ``pmean`` would be a no-op on a sum.

On CPU the N devices are host devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` in
the environment of a process of its own, before JAX starts its backend. On GPUs, the real ones.
``NamedSharding`` requires the sharded dimension to divide evenly (``IndivisibleError``): full
batches must be divisible by N, and a partial last batch is padded per shard with weight-0 samples.
``reference_torch/distributed.py`` is the torch twin.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from quickstart_parity_common.checkpoint import CheckpointError, atomic_write
from quickstart_parity_common.cli import DeviceError
from quickstart_parity_common.data import DataError, find_files, read_split, to_float
from quickstart_parity_common.shards import check_divisible

from .model import NeuralNetwork, init_params
from .sharding import (
    AXIS,
    FORMS,
    epoch_groups,
    make_mesh,
    make_step,
    place_rows,
    replica_mismatches,
    replicate,
    scan_steps,
    shards_seen,
)
from .train import TrainState, create_train_state, evaluate, make_optimizer

__all__ = [
    "Config",
    "available_devices",
    "check_config",
    "configs_from_dicts",
    "load_train",
    "main",
    "test_metrics",
    "train",
    "train_configs",
]

@dataclass
class Config:
    """Data-parallel settings; ``reference_torch.distributed.Config`` has the same fields (but ``form``)."""

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
    seed_per_rank: bool = False  # negative control: device d's replica initialised from seed + d
    timeout_s: float = 60.0  # the parent's limit on this process (one process: no peer to wait for)
    fault: str = ""  # "kill": process ``fault_rank`` of a multi-process run dies in its first epoch
    fault_rank: int = 1
    fault_step: int = 5
    form: str = "sharded"  # FORMS


def available_devices(device: str) -> int:
    """Devices JAX sees on this platform (on CPU, as many as XLA_FLAGS forced)."""
    try:
        return len(jax.devices("gpu" if device == "cuda" else "cpu"))
    except RuntimeError:
        raise DeviceError(f"--device {device}: JAX {jax.__version__} sees no such device") from None


def check_config(cfg: Config) -> None:
    """Bad inputs as DeviceError / ShardError."""
    have = available_devices(cfg.device)
    if cfg.devices > have:
        raise DeviceError(f"--devices {cfg.devices}: JAX sees {have} {cfg.device} device(s) "
                          "(on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)")
    check_divisible(cfg.batch_size, cfg.devices)
    if cfg.form not in FORMS:
        raise ValueError(f"form {cfg.form!r}: use one of {FORMS}")


def configs_from_dicts(dicts: list[dict]) -> list[Config]:
    """The Configs of a ``configs.json`` (``dataclasses.asdict`` of each, through JSON): every worker's input."""
    names = {f.name for f in fields(Config)}
    return [Config(**{k: (tuple(v) if k == "hidden" else v) for k, v in c.items() if k in names}) for c in dicts]


def load_train(data_dir: str, samples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The training split as ToTensor pixels (N, 784) and int32 labels, the first ``samples`` (0: all)."""
    images, labels = read_split(find_files(data_dir), train=True)
    n = samples or len(images)
    return to_float(images[:n]).reshape(n, -1), labels[:n].astype(np.int32)


def train(cfg: Config, params, x_np: np.ndarray, y_np: np.ndarray) -> dict:
    """Train ``cfg.epochs`` epochs from ``params`` (numpy, Flax layout); returns per-step losses, the
    params after each epoch (device 0's copy), replica checks before and after, the shards each device held, and
    the collectives in the compiled program."""
    check_config(cfg)
    dtype = jnp.dtype(cfg.dtype)
    mesh = make_mesh(cfg.devices, cfg.device)
    params = jax.tree.map(lambda p: np.asarray(p, dtype), params)
    per_device = None
    if cfg.seed_per_rank:
        per_device = [params] + [jax.tree.map(lambda p: np.asarray(p, dtype),
                                              init_params(jax.random.PRNGKey(cfg.seed + d), cfg.hidden))
                                 for d in range(1, cfg.devices)]
    replicated = NamedSharding(mesh, P())
    state = TrainState.create(apply_fn=NeuralNetwork(tuple(cfg.hidden)).apply, params=replicate(params, mesh, per_device),
                              tx=make_optimizer(cfg.lr))
    state = state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), replicated))
    init_mismatch = replica_mismatches(state.params)
    step = make_step(cfg.form, mesh, cfg.grad_reduce)
    batch_sharding = NamedSharding(mesh, P(None, AXIS))
    placed = []

    def gather(idx):  # pixels (S, k, 784), labels, weights (padding 0) and the indices themselves
        real = idx >= 0
        safe = np.where(real, idx, 0)
        return np.where(real[..., None], x_np[safe], 0).astype(dtype), y_np[safe] * real, real.astype(dtype), idx

    for g in epoch_groups(len(x_np), cfg.batch_size, cfg.devices, cfg.split, cfg.same_shard):
        arrays = place_rows(gather, g["idx"], batch_sharding)  # over processes: each builds its own shard only
        rows_on = {s.device: np.asarray(s.data) for s in arrays[3].addressable_shards}
        for s in arrays[0].addressable_shards:  # each device holds exactly the rows its indices name
            rows = rows_on[s.device]
            if not np.array_equal(np.asarray(s.data), np.where((rows >= 0)[..., None], x_np[np.maximum(rows, 0)], 0)):
                raise AssertionError(f"{s.device} holds other pixels than the indices placed with them")
        placed.append(arrays)
    hlo = scan_steps.lower(step, state, *placed[0][:3]).compile().as_text()
    collectives = sorted({op for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
                          if f" {op}(" in hlo or f" {op}-start(" in hlo})
    losses, snapshots, epoch_s = [], [], []  # snapshots: device 0's params after each epoch
    for _ in range(cfg.epochs):
        start = time.perf_counter()  # the first epoch includes compilation
        for xs, ys, ws, _idx in placed:
            state, metrics = scan_steps(step, state, xs, ys, ws)
            if cfg.fault == "kill" and jax.process_index() == cfg.fault_rank:  # dies while its peers run the scan
                os.kill(os.getpid(), signal.SIGKILL)
            losses.append(np.asarray(metrics["loss"], np.float64))  # reading the losses waits for the devices
        epoch_s.append(time.perf_counter() - start)
        snapshots.append(jax.tree.map(lambda leaf: np.asarray(leaf.addressable_shards[0].data), state.params))
    by_step = [shards_seen(p[3], mesh) for p in placed]  # None where another process holds the device
    seen = [None if by_step[0][d] is None else [s for g in by_step for s in g[d]] for d in range(cfg.devices)]
    return {"losses": np.concatenate(losses), "params": snapshots[-1], "epochs": snapshots, "epoch_s": epoch_s,
            "init_mismatch": init_mismatch, "final_mismatch": replica_mismatches(state.params), "shards": seen,
            "collectives": collectives}


def test_metrics(params, cfg: Config) -> tuple[float, float]:
    """(accuracy, Avg loss) of ``params`` on the test split, with ``jax_impl.train.evaluate`` on one device."""
    images, labels = read_split(find_files(cfg.data_dir), train=False)
    x = to_float(images).reshape(len(images), -1).astype(cfg.dtype)
    dev = jax.local_devices(backend="gpu" if cfg.device == "cuda" else "cpu")[0]  # this process's own
    state = create_train_state(jax.device_put(params, dev), cfg.lr, cfg.hidden, device=dev)
    return evaluate(state, (jax.device_put(x, dev), jax.device_put(labels, dev)), cfg.batch_size)


def _flat(params) -> dict[str, np.ndarray]:
    return {f"{layer}/{name}": np.asarray(v) for layer, parts in params.items() for name, v in parts.items()}


def _unflat(flat) -> dict:
    out: dict = {}
    for key, v in flat.items():
        layer, name = key.split("/")
        out.setdefault(layer, {})[name] = v
    return out


def _read_init(path: str) -> dict:
    """The initial params of ``--init`` (npz, ``layer/name`` keys) as a Flax tree."""
    with np.load(path) as f:
        return _unflat({k: f[k] for k in f.files})


def train_configs(cfgs: list[Config], params, out: Path, stem: str, evaluate: bool = True, **meta) -> None:
    """Every config of ``cfgs`` trained from ``params``, written as ``out``/``stem``.npz (losses, the params
    after each epoch, the shards of this process's devices) and .json (``meta`` among its fields); ``stem``
    formats ``n``, the config's index. ``evaluate``: the test-set metrics too (else None). The worker's loop,
    one process of N devices (``main``) or one of N processes (``multiprocess``)."""
    data: dict = {}
    for n, cfg in enumerate(cfgs):
        key = (cfg.data_dir, cfg.samples)
        if key not in data:  # loaded once for every config that trains on it; over processes place_rows
            data[key] = load_train(cfg.data_dir, cfg.samples)  # then builds only this process's shard
        result = train(cfg, params, *data[key])
        mine = {d: s for d, s in enumerate(result["shards"]) if s is not None}  # None: another process's device
        snaps = {f"epoch{e}/{k}": v for e, ps in enumerate(result["epochs"]) for k, v in _flat(ps).items()}
        acc, avg = test_metrics(result["params"], cfg) if evaluate else (None, None)
        meta_json = json.dumps({
            "accuracy": acc, "avg_loss": avg, "init_mismatch": result["init_mismatch"],
            "final_mismatch": result["final_mismatch"], "collectives": result["collectives"],
            "epoch_s": result["epoch_s"],
            "devices": [str(d) for d in make_mesh(cfg.devices, cfg.device).devices.flat], "config": asdict(cfg), **meta})
        # Each file whole or absent (a process killed mid-write leaves none half-written), the .json before the
        # .npz: a reader that finds the .npz finds both.
        atomic_write(out / f"{stem.format(n=n)}.json", lambda f, text=meta_json: f.write(text.encode()))
        arrays = {"losses": result["losses"], **snaps, **{f"shard{d}": np.concatenate(s) for d, s in mine.items()},
                  **{f"shard{d}_count": np.array([len(x) for x in s]) for d, s in mine.items()}}
        atomic_write(out / f"{stem.format(n=n)}.npz", lambda f, arrays=arrays: np.savez(f, **arrays))


def main(argv=None) -> int:
    """The JAX worker process ``jax_impl.launch`` starts: trains every config of ``--configs`` (JSON list of
    Config fields) from ``--init`` (npz, Flax layout ``layer/kernel``) and writes ``--out``."""
    p = argparse.ArgumentParser(prog="python -m jax_impl.distributed", description=main.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--configs", required=True, help="JSON file: a list of Config dicts")
    p.add_argument("--init", required=True, help="npz of the initial params, Flax layout (layer/kernel)")
    p.add_argument("--out", required=True, help="folder for run<i>.npz and run<i>.json")
    args = p.parse_args(argv)
    cfgs = configs_from_dicts(json.loads(Path(args.configs).read_text()))
    if any(c.dtype == "float64" for c in cfgs):  # before any array exists
        jax.config.update("jax_enable_x64", True)
    params = _read_init(args.init)
    try:
        train_configs(cfgs, params, Path(args.out), "run{n}")
    except (CheckpointError, DataError, DeviceError, ValueError) as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    sys.exit(main())
