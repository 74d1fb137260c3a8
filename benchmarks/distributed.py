"""python -m benchmarks.distributed --devices N: data-parallel training timed against one device.

Times one epoch (60,000 samples, global batch 64) of: torch in one process (the reference loop,
data preloaded), torch DDP over N processes started by ``torchrun``, JAX in one process (the sharded
step on a mesh of one) and JAX as one program over N processes (``jax.distributed``, the sharded
``jit``): the forms of ``python -m parity.distributed --processes N``. Each run starts its processes
afresh; its first epoch is the warm-up (compilation, first all-reduces), the reported epoch the last
one. The forms run one at a time (no form's clock runs while another uses the cores) in interleaved
rounds, the order rotated from round to round (``benchmarks.schedule.rotation``), and each form's
epoch is the median over the rounds; the load average is recorded at the start and after each
round. Every form trains from the same weights on the same batches; the largest per-step loss gap
against torch in one process is shown (``parity.distributed`` is the verdict, with float64 runs).
``all_reduce_cost`` adds the paper case: the bytes all-reduced per step and the time they take over a
10 Gb/s and a 100 Gb/s link.

On CPU the numbers are NOT a scaling measurement: the N DDP processes, or JAX's N host devices,
share the same cores (on the 2-core development machine: 2 cores for everything, plus the other
users of the machine), and gloo all-reduces over loopback TCP. Speed-up < 1 is expected there and
says nothing about data parallelism. Scaling rows belong to a machine with N GPUs
(``--device cuda``: NCCL, one GPU per rank).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from benchmarks.schedule import rotation
from jax_impl import launch as jlaunch
from jax_impl.distributed import Config as JConfig
from quickstart_parity_common.cli import DeviceError, non_negative_int, positive_int, run_guarded
from quickstart_parity_common.convert import torch_to_flax
from quickstart_parity_common.data import DataError
from quickstart_parity_common.shards import DistributedError, ShardError
from reference_torch import distributed as tdist
from reference_torch import launch as tlaunch
from reference_torch import train as ttrain
from reference_torch.model import NeuralNetwork

CPU_NOTE = ("CPU scaling is meaningless here: the {n} replicas (DDP processes or JAX processes) share the "
            "machine's {cores} cores, and gloo all-reduces over loopback TCP; run with --device cuda on a "
            "machine with {n} GPUs for scaling numbers")


def _one_device(cfg: tdist.Config) -> dict:
    """The reference: ``reference_torch.train.train_epoch`` on one device over the preloaded split, in
    file order, from the seed's weights (what every DDP rank starts from)."""
    device = torch.device("cuda", 0) if cfg.device == "cuda" else torch.device("cpu")
    torch.manual_seed(cfg.seed)
    model = NeuralNetwork(cfg.hidden).to(device)
    optimizer = ttrain.make_optimizer(model, cfg.lr)
    ds = TensorDataset(*(torch.from_numpy(a).to(device) for a in tdist.load_train(cfg.data_dir, cfg.samples)))
    loader = DataLoader(ds, batch_size=None, sampler=BatchSampler(SequentialSampler(ds), cfg.batch_size, drop_last=False))
    losses, epoch_s = [], []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        step_losses = ttrain.train_epoch(loader, model, torch.nn.CrossEntropyLoss(), optimizer, log=None)
        losses.append(step_losses.double().cpu().numpy())
        epoch_s.append(time.perf_counter() - start)  # train_epoch reads its losses back: synced
    return {"losses": np.concatenate(losses), "epoch_s": epoch_s}


def all_reduce_cost(hidden: tuple[int, ...], devices: int, steps: int) -> dict:
    """The paper case for scaling out: every step all-reduces one float32 gradient per parameter; a ring
    all-reduce sends (and receives) 2 (N - 1) / N of those bytes per process, so a link of B bit/s adds at
    least that many bytes x 8 / B seconds per step (latency and compute overlap left out)."""
    grads = sum(v.numel() for v in NeuralNetwork(hidden).state_dict().values()) * 4
    sent = 2 * (devices - 1) / devices * grads
    links = {"10 Gb/s": 10e9, "100 Gb/s": 100e9}
    return {"gradient_bytes_per_step": grads, "ring_bytes_sent_per_process_per_step": sent,
            "step_s_at_link": {k: sent * 8 / b for k, b in links.items()},
            "epoch_s_at_link": {k: steps * sent * 8 / b for k, b in links.items()}, "steps_per_epoch": steps}


def _forms(cfg: tdist.Config, init: dict, processes: int) -> dict[str, tuple[int, Callable[[], dict]]]:
    """Every form timed: its label -> (replicas, a call that trains it once from a fresh start of its processes)."""
    limit = 30 * cfg.timeout_s  # a whole run: parity.distributed's limit on its JAX process
    jax_cfg = {k: getattr(cfg, k) for k in ("epochs", "device", "data_dir", "samples", "seed", "lr", "batch_size", "hidden")}
    one_jax = JConfig(devices=1, form="sharded", **jax_cfg)
    many_jax = JConfig(devices=processes, form="sharded", **jax_cfg)
    return {
        "torch, 1 process (reference loop)": (1, lambda: _one_device(cfg)),
        f"torch DDP, {processes} processes (torchrun)": (processes, lambda: tlaunch.run_processes([cfg], limit)[0]),
        "JAX, 1 process (jit)": (1, lambda: jlaunch.run_many([one_jax], init, limit)[0]),
        f"JAX, {processes} processes (jax.distributed, sharded jit)":
            (processes, lambda: jlaunch.run_processes([many_jax], init, limit)[0]),
    }


def measure(devices: int, device: str = "cpu", epochs: int = 2, data_dir: str = "data", samples: int = 0,
            rounds: int = 3) -> dict:
    """Every form's epoch times in ``rounds`` interleaved rounds (round r runs the forms in ``schedule.rotation``'s
    order, so a slow phase of the machine lands on every form alike): per form the median over the rounds of its
    last epoch (the first is the warm-up: compilation, first all-reduces), the spread, samples/s."""
    cfg = tdist.Config(devices=devices, epochs=epochs, device=device, data_dir=data_dir, samples=samples)
    tdist.check_config(cfg)
    torch.manual_seed(cfg.seed)  # the DDP ranks' weights (each rank seeds the same), handed to JAX
    init = torch_to_flax({k: v.numpy() for k, v in NeuralNetwork(cfg.hidden).state_dict().items()})
    forms = _forms(cfg, init, devices)
    labels = list(forms)
    load = [os.getloadavg()]
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    for r, order in enumerate(rotation(len(labels), rounds)):
        for i in order:
            print(f"round {r + 1}/{rounds}: {labels[i]}", file=sys.stderr, flush=True)
            runs[labels[i]].append(forms[labels[i]][1]())
        load.append(os.getloadavg())
    n = samples or 60000
    reference = runs[labels[0]][0]["losses"]
    rows = []
    for label in labels:
        last = np.array([res["epoch_s"][-1] for res in runs[label]])
        rows.append({"form": label, "replicas": forms[label][0], "epoch_s": float(np.median(last)),
                     "epoch_s_rounds": last.tolist(),
                     "warmup_s": float(np.median([res["epoch_s"][0] for res in runs[label]])),
                     "samples_per_s": n / float(np.median(last)),
                     "max_step_loss_gap_vs_torch_1_process":
                         max(float(np.max(np.abs(res["losses"] - reference))) for res in runs[label])})
    for row in rows:
        framework_one = rows[0] if row["form"].startswith("torch") else rows[2]
        row["speedup_vs_1_process"] = framework_one["epoch_s"] / row["epoch_s"]
    return {"devices": devices, "device": device, "epochs": epochs, "samples": n, "rounds": rounds, "rows": rows,
            "all_reduce": all_reduce_cost(cfg.hidden, devices, -(-n // cfg.batch_size)),
            "order": [[labels[i] for i in order] for order in rotation(len(labels), rounds)],
            "load_1min_5min_15min": {"start": load[0], "after_each_round": load[1:]},
            "cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "note": CPU_NOTE.format(n=devices, cores=len(os.sched_getaffinity(0))) if device == "cpu" else ""}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--devices", type=positive_int, default=2, help="replicas: DDP processes and JAX devices")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo, host devices) or cuda (NCCL, GPUs)")
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs per form; the first is the warm-up")
    p.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (every form once each)")
    p.add_argument("--samples", type=non_negative_int, default=0, help="train on the first N images (0: all 60000)")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--out-dir", default="benchmarks/results", help="folder for distributed_<device>_<N>.json")
    args = p.parse_args(argv)
    result = {}

    def go():
        result.update(measure(args.devices, args.device, args.epochs, args.data_dir, args.samples, args.rounds))

    code = run_guarded(go, (DataError, DeviceError, ShardError, DistributedError), p.prog)
    if code:
        return code
    print(f"data-parallel benchmark: {args.devices} replicas on {args.device} ({result['cpu']}, {result['cores']} cores), "
          f"{result['samples']} samples per epoch, global batch 64; last of {args.epochs} epochs")
    if result["note"]:
        print(f"NOTE: {result['note']}")
    print(f"{args.rounds} interleaved rounds; load average (1, 5, 15 min) at the start "
          f"{', '.join(f'{x:.2f}' for x in result['load_1min_5min_15min']['start'])}")
    print("| form | warm-up epoch s | epoch s (median) | epoch s per round | samples/s | speed-up vs 1 process "
          "| max step-loss gap vs torch 1 process |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        per_round = ", ".join(f"{t:.2f}" for t in r["epoch_s_rounds"])
        print(f"| {r['form']} | {r['warmup_s']:.2f} | {r['epoch_s']:.2f} | {per_round} | {r['samples_per_s']:,.0f} "
              f"| {r['speedup_vs_1_process']:.2f}x | {r['max_step_loss_gap_vs_torch_1_process']:.2e} |")
    ar = result["all_reduce"]
    print(f"all-reduced per step: {ar['gradient_bytes_per_step'] / 1e6:.2f} MB of float32 gradients; a ring sends "
          f"{ar['ring_bytes_sent_per_process_per_step'] / 1e6:.2f} MB per process: at least "
          + ", ".join(f"{t * 1e3:.2f} ms per step ({ar['epoch_s_at_link'][k]:.2f} s per epoch) over {k}"
                      for k, t in ar["step_s_at_link"].items()))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"distributed_{args.device}_{args.devices}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
