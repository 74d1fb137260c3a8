"""python -m benchmarks.distributed --devices N: data-parallel training timed against one device.

Times one epoch (60,000 samples, global batch 64) of: torch on one device (the reference loop,
data preloaded), torch DDP over N processes, JAX on one device (the sharded step on a mesh of one)
and JAX over N devices in both forms (sharded ``jit``, ``shard_map`` + ``pmean``). The first epoch
is the warm-up (compilation, first all-reduces); the reported epoch is the last one. Every form
trains from the same weights on the same batches, and the losses are checked against one device
(``parity.distributed.compare`` needs float64 runs; here only the loss curves' largest gap is shown).
The runs are the sides' own launchers (``reference_torch.launch``, ``jax_impl.launch``), one after
another, so no form's clock runs while another form uses the cores.

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
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

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

CPU_NOTE = ("CPU scaling is meaningless here: the {n} replicas (DDP processes or JAX host devices) share the "
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


def measure(devices: int, device: str = "cpu", epochs: int = 2, data_dir: str = "data", samples: int = 0) -> dict:
    """Every form's epoch times (``epoch_s``, the first one the warm-up) and samples/s of the last epoch."""
    cfg = tdist.Config(devices=devices, epochs=epochs, device=device, data_dir=data_dir, samples=samples)
    tdist.check_config(cfg)
    torch.manual_seed(cfg.seed)  # the DDP ranks' weights (each rank seeds the same), handed to JAX
    init = torch_to_flax({k: v.numpy() for k, v in NeuralNetwork(cfg.hidden).state_dict().items()})
    jax_cfg = {k: getattr(cfg, k) for k in ("epochs", "device", "data_dir", "samples", "seed", "lr", "batch_size", "hidden")}
    limit = 30 * cfg.timeout_s  # a whole run: parity.distributed's limit on its JAX process
    jax_many = jlaunch.run_many([JConfig(devices=devices, form=form, **jax_cfg) for form in ("sharded", "shard_map")],
                                init, limit)
    jax_one = jlaunch.run_many([JConfig(devices=1, form="sharded", **jax_cfg)], init, limit)[0]
    many = {"one_device": _one_device(cfg), "ddp": tlaunch.run(cfg), "jax_sharded": jax_many[0],
            "jax_shard_map": jax_many[1]}
    one = {"jax_sharded": jax_one}
    n = samples or 60000
    rows = []
    reference = {"torch": many["one_device"]["epoch_s"][-1], "jax": one["jax_sharded"]["epoch_s"][-1]}
    for label, res, replicas, framework in (
            ("torch, 1 device (reference loop)", many["one_device"], 1, "torch"),
            (f"torch DDP, {devices} processes", many["ddp"], devices, "torch"),
            ("JAX, 1 device (jit)", one["jax_sharded"], 1, "jax"),
            (f"JAX sharded jit, {devices} devices", many["jax_sharded"], devices, "jax"),
            (f"JAX shard_map + pmean, {devices} devices", many["jax_shard_map"], devices, "jax")):
        last = res["epoch_s"][-1]
        rows.append({"form": label, "replicas": replicas, "warmup_s": res["epoch_s"][0], "epoch_s": last,
                     "samples_per_s": n / last, "speedup_vs_1_device": reference[framework] / last,
                     "max_step_loss_gap_vs_torch_1_device":
                         float(np.max(np.abs(res["losses"] - many["one_device"]["losses"])))})
    return {"devices": devices, "device": device, "epochs": epochs, "samples": n, "rows": rows,
            "jax_devices": many["jax_sharded"]["devices"],
            "cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "note": CPU_NOTE.format(n=devices, cores=len(os.sched_getaffinity(0))) if device == "cpu" else ""}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--devices", type=positive_int, default=2, help="replicas: DDP processes and JAX devices")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo, host devices) or cuda (NCCL, GPUs)")
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs per form; the first is the warm-up")
    p.add_argument("--samples", type=non_negative_int, default=0, help="train on the first N images (0: all 60000)")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--out-dir", default="benchmarks/results", help="folder for distributed_<device>_<N>.json")
    args = p.parse_args(argv)
    result = {}

    def go():
        result.update(measure(args.devices, args.device, args.epochs, args.data_dir, args.samples))

    code = run_guarded(go, (DataError, DeviceError, ShardError, DistributedError), p.prog)
    if code:
        return code
    print(f"data-parallel benchmark: {args.devices} replicas on {args.device} ({result['cpu']}, {result['cores']} cores), "
          f"{result['samples']} samples per epoch, global batch 64; last of {args.epochs} epochs")
    if result["note"]:
        print(f"NOTE: {result['note']}")
    print("| form | warm-up epoch s | epoch s | samples/s | speed-up vs 1 device | max step-loss gap vs torch 1 device |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['form']} | {r['warmup_s']:.2f} | {r['epoch_s']:.2f} | {r['samples_per_s']:,.0f} | "
              f"{r['speedup_vs_1_device']:.2f}x | {r['max_step_loss_gap_vs_torch_1_device']:.2e} |")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"distributed_{args.device}_{args.devices}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
