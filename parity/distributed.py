"""python -m parity.distributed: the quickstart trained four ways from the same weights on the same
global batches: one device (``reference_torch``), torch DDP over N processes, JAX with the batch
sharded over N devices (``jit`` + ``NamedSharding``) and JAX ``shard_map`` with an explicit ``pmean``.

Every run is made twice, in float32 and in float64 (torch ``float64``, JAX ``jax_enable_x64`` in its
own process), and the float32 tolerances are derived from it: two forms agree per step if their
float32 gap is at most ``MULTIPLE`` times the larger of their own float32-vs-float64 errors (the
running maximum up to that step, at least one float32 ulp of the loss), and their float64 runs
agree to ``F64_AGREE``. The forms are run side by side: the JAX process starts first, DDP's N
processes next, the one-device run in this process.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from jax_impl import launch as jlaunch
from jax_impl.distributed import Config as JConfig
from quickstart_parity_common.cli import (
    DeviceError,
    HelpFormatter,
    Parser,
    non_negative_int,
    out_dir,
    positive_int,
    run_guarded,
)
from quickstart_parity_common.data import DataError
from quickstart_parity_common.shards import ShardError, epoch_shards
from reference_torch import distributed as tdist
from reference_torch import launch
from reference_torch import train as ttrain
from reference_torch.basics import distributed as tb
from reference_torch.model import NeuralNetwork

from . import harness as H
from . import tolerances as T

REPO = Path(__file__).resolve().parents[1]
FORMS = ("one_device", "ddp", "jax_sharded", "jax_shard_map")
LABELS = {"one_device": "1 device", "ddp": "DDP", "jax_sharded": "JAX sharded", "jax_shard_map": "shard_map"}
PAIRS = (("ddp", "jax_sharded"), ("ddp", "one_device"), ("jax_sharded", "one_device"),
         ("jax_shard_map", "one_device"), ("ddp", "jax_shard_map"), ("jax_sharded", "jax_shard_map"))
# float32 tolerance = MULTIPLE x the measured float32-vs-float64 error of the two forms (per step,
# running max): rounding differences between two float32 runs are of the size of each one's error.
MULTIPLE = 4.0
TEST_IMAGES = 10_000  # the real test split every form is evaluated on
# float64 forms must agree to this: far above float64 rounding over an epoch (the run reports the gap)
# and far below any float32 effect or bug (>= 1e-7), so every difference in the math shows here.
F64_AGREE = 1e-12


@dataclass
class DistConfig:
    devices: int = 2
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    data_dir: str = "data"
    hidden: tuple[int, ...] = (512, 512)
    samples: int = 0  # the first ``samples`` training images (0: all 60000, 938 steps at batch 64)
    timeout_s: float = 60.0
    out_dir: str = "runs"
    processes: int = 0  # N > 0: the multi-process forms, torchrun's DDP and JAX over N processes (one device each)
    verbose: bool = True


@dataclass
class Run:
    """One training configuration of every form: ``overrides`` are fields of the sides' Configs
    (controls: split, grad_reduce, same_shard, seed_per_rank)."""

    name: str
    dtype: str = "float32"
    forms: tuple[str, ...] = FORMS
    overrides: dict = field(default_factory=dict)


def _side_config(cls, cfg: DistConfig, run: Run, **extra):
    base = {k: v for k, v in asdict(cfg).items() if k in {f for f in cls.__dataclass_fields__}}
    return cls(**{**base, "dtype": run.dtype, **run.overrides, **extra})


def _start_jax(cfg: DistConfig, runs: list[tuple[int, Run]], init_sd, tmp: Path, dtype: str):
    """The JAX forms of ``runs`` in one process of their own (``jax_impl.launch``: N host devices and
    x64 must be set before JAX starts, and must not leak into this process); with ``cfg.processes``,
    in that many processes of one device each (``jax_impl.multiprocess``), a list of them."""
    work = tmp / f"jax_{dtype}"
    work.mkdir()
    configs = [_side_config(JConfig, cfg, run, form=form.removeprefix("jax_"))
               for _, run in runs for form in run.forms if form.startswith("jax_")]
    if cfg.processes:
        return jlaunch.start_processes(configs, H.torch_to_flax(init_sd), work, cfg.processes)
    return jlaunch.start(configs, H.torch_to_flax(init_sd), work)


def _read_jax(proc, work: Path, timeout_s: float) -> list[dict]:
    """``jax_impl.launch.collect``'s (or ``collect_processes``') results, their weights in torch's layout."""
    results = jlaunch.collect_processes(proc, work, timeout_s) if isinstance(proc, list) else jlaunch.collect(
        proc, work, timeout_s)
    return [{**res, "epochs": [H.flax_to_torch_numpy(params) for params in res["epochs"]]} for res in results]


def run_forms(cfg: DistConfig, runs: list[Run]) -> dict[str, dict[str, dict]]:
    """``{run name: {form: result}}``; a result has ``losses`` (per step, float64), ``epochs`` (the
    weights after each epoch, torch layout), ``shards`` ([replica][step] -> indices) where it has
    replicas, and the test-set ``accuracy`` / ``avg_loss`` after each epoch (``reference_torch``'s
    evaluate on every form's weights, so only the weights differ)."""
    tdist.check_config(_side_config(tdist.Config, cfg, Run("check")))
    train, test = H.real_data(cfg.data_dir)
    init_sd = H.init_state_dict(cfg.seed, cfg.hidden)
    results: dict[str, dict[str, dict]] = {run.name: {} for run in runs}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        jax_runs = {dtype: [(i, r) for i, r in enumerate(runs)
                            if r.dtype == dtype and any(f.startswith("jax_") for f in r.forms)]
                    for dtype in ("float32", "float64")}
        procs = {dtype: _start_jax(cfg, rs, init_sd, tmp, dtype) for dtype, rs in jax_runs.items() if rs}
        try:
            ddp_runs = [r for r in runs if "ddp" in r.forms]
            if ddp_runs:
                ddp_cfgs = [_side_config(tdist.Config, cfg, r) for r in ddp_runs]
                ddp_results = (launch.run_processes(ddp_cfgs, 30 * cfg.timeout_s) if cfg.processes
                               else launch.run_many(ddp_cfgs))
                for run, res in zip(ddp_runs, ddp_results, strict=True):
                    res["rank_epochs"] = res["epochs"]  # [rank][epoch]
                    res["epochs"] = res["epochs"][0]  # rank 0's copy
                    results[run.name]["ddp"] = res
            for run in runs:
                if "one_device" in run.forms:
                    samples = run.overrides.get("samples", cfg.samples)
                    results[run.name]["one_device"] = _one_device(init_sd, train, cfg, run.dtype, samples)
            for dtype, proc in procs.items():
                jres = iter(_read_jax(proc, tmp / f"jax_{dtype}", 30 * cfg.timeout_s))
                for _, run in jax_runs[dtype]:
                    for form in run.forms:
                        if form.startswith("jax_"):
                            results[run.name][form] = next(jres)
        finally:
            for proc in [q for p in procs.values() for q in (p if isinstance(p, list) else [p])]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    for run in runs:
        for res in results[run.name].values():
            metrics = [H.torch_evaluate(H.torch_model(sd, getattr(torch, run.dtype)), test, cfg.batch_size)
                       for sd in res["epochs"]]
            res["test"] = metrics
    return results


def _one_device(init_sd, train: H.Split, cfg: DistConfig, dtype: str, samples: int) -> dict:
    """The reference: ``reference_torch.train.train_epoch`` on one device, in file order."""
    n = samples or len(train.x)
    model = H.torch_model(init_sd, getattr(torch, dtype))
    optimizer = ttrain.make_optimizer(model, cfg.lr)
    loader = H.torch_loader(H.Split(train.x[:n], train.y[:n]), cfg.batch_size, getattr(torch, dtype))
    losses, epochs, epoch_s = [], [], []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        losses.append(ttrain.train_epoch(loader, model, nn.CrossEntropyLoss(), optimizer, log=None).double().numpy())
        epoch_s.append(time.perf_counter() - start)  # train_epoch reads its losses back: synced
        epochs.append(H.state_dict_numpy(model))
    return {"losses": np.concatenate(losses), "epochs": epochs, "epoch_s": epoch_s}


def derived_tolerance(err_a: np.ndarray, err_b: np.ndarray, loss: np.ndarray, multiple: float = MULTIPLE) -> np.ndarray:
    """Per-step float32 tolerance of a pair: ``multiple`` x the running max of the larger of the two
    forms' own |float32 - float64| loss errors, at least one float32 ulp of the loss."""
    band = np.maximum.accumulate(np.maximum(err_a, err_b))
    ulp = np.spacing(np.abs(loss).astype(np.float32)).astype(np.float64)
    return multiple * np.maximum(band, ulp)


def derived_param_atol(r32: dict, r64: dict, a: str, b: str, multiple: float = MULTIPLE) -> float:
    """Final-weights tolerance of a pair: ``multiple`` x the larger of the two forms' own max
    |float32 - float64| over every parameter after the last epoch."""
    def err(form):
        last32, last64 = r32[form]["epochs"][-1], r64[form]["epochs"][-1]
        return max(float(np.max(np.abs(last32[k] - last64[k]))) for k in last64)
    return multiple * max(err(a), err(b))


def shard_problems(shards: list[list[np.ndarray]], n_samples: int, batch_size: int) -> list[str]:
    """Where the replicas' shards are not a partition of each global batch into disjoint, non-empty
    parts (empty list: every replica saw a different shard of every batch, and nothing was lost)."""
    problems = []
    expected = epoch_shards(n_samples, batch_size, 1)
    if any(len(s) != len(expected) for s in shards):
        return [f"steps per replica {[len(s) for s in shards]} != {len(expected)} global batches"]
    for step, batch in enumerate(expected):
        parts = [s[step] for s in shards]
        joined = np.sort(np.concatenate(parts))
        if any(len(p) == 0 for p in parts) and len(batch[0]) >= len(parts):
            problems.append(f"step {step + 1}: a replica got no samples")
        if len(np.unique(joined)) != len(joined):
            problems.append(f"step {step + 1}: replicas share samples")
        if not np.array_equal(np.unique(joined), batch[0]):
            problems.append(f"step {step + 1}: the shards do not cover the global batch")
        if len(problems) >= 3:
            break
    return problems


def weight_problems(results: dict[str, dict[str, dict]], form: str, f32: str = "float32", f64: str = "float64") -> list[str]:
    """The parameters' verdict of ``form``: after the last epoch within ``derived_param_atol`` of one
    device's, and every replica's copy (every rank, every process, every device) the same."""
    r32, problems = results[f32], []
    atol = derived_param_atol(r32, results[f64], form, "one_device")
    last, ref = r32[form]["epochs"][-1], r32["one_device"]["epochs"][-1]
    gap = max(float(np.max(np.abs(last[k] - ref[k]))) for k in ref)
    if not gap <= atol:
        problems.append(f"{LABELS[form]} weights after the last epoch differ from one device's by {gap:.3e} > {atol:.3e}")
    copies = [r[-1] for r in r32[form].get("rank_epochs", [])[1:]]
    if any(not np.array_equal(c[k], r32[form]["rank_epochs"][0][-1][k]) for c in copies for k in c) or \
            r32[form].get("final_mismatch"):
        problems.append(f"{LABELS[form]}: the replicas' weights are not identical after training")
    return problems


def compare(results: dict[str, dict[str, dict]], f32: str = "float32", f64: str = "float64",
            multiple: float = MULTIPLE) -> dict:
    """Per pair: the float32 gap per step, its derived tolerance, the float64 gap; and the failures."""
    r32, r64 = results[f32], results[f64]
    err = {form: np.abs(r32[form]["losses"] - r64[form]["losses"]) for form in r32}
    out, failures = {"pairs": {}}, []
    for a, b in PAIRS:
        if a not in r32 or b not in r32:
            continue
        gap = np.abs(r32[a]["losses"] - r32[b]["losses"])
        tol = derived_tolerance(err[a], err[b], r64["one_device"]["losses"] if "one_device" in r64 else r64[a]["losses"],
                                multiple)
        gap64 = np.abs(r64[a]["losses"] - r64[b]["losses"])
        name = f"{LABELS[a]} vs {LABELS[b]}"
        beyond = np.flatnonzero(~(gap <= tol))  # NaN fails
        if beyond.size:
            k = int(beyond[0])
            failures.append(f"{name}: step {k + 1} float32 loss gap {gap[k]:.3e} > {tol[k]:.3e}")
        if not np.max(gap64) <= F64_AGREE:
            failures.append(f"{name}: float64 loss gap {np.max(gap64):.3e} > {F64_AGREE:.0e}")
        out["pairs"][name] = {"max_gap_f32": float(np.max(gap)), "max_gap_f64": float(np.max(gap64)),
                              "min_tol": float(np.min(tol)), "max_tol": float(np.max(tol)),
                              "worst_ratio": float(np.max(gap / tol)), "gap": gap, "tol": tol}
    out["f32_vs_f64"] = {LABELS[f]: float(np.max(e)) for f, e in err.items()}
    accs = {form: [m[0] for m in r32[form]["test"]] for form in r32}
    # Test accuracy is judged as python -m parity judges it: a near-tie image (top-2 logits closer than
    # float32 rounding) may flip between frameworks, up to ACCURACY_IMAGES of the 10,000 (tolerances.py).
    per_epoch = np.array(list(accs.values()))  # (forms, epochs)
    images = (per_epoch.max(axis=0) - per_epoch.min(axis=0)) * TEST_IMAGES
    if not np.all(images <= T.ACCURACY_IMAGES + 0.5):
        failures.append(f"accuracies differ by more than {T.ACCURACY_IMAGES} test images: {accs}")
    out["failures"] = failures
    return out


def run(cfg: DistConfig) -> dict:
    """The CLI's work: every form in float32 and float64; prints the table; writes JSON and a plot."""
    out = print if cfg.verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    results = run_forms(cfg, [Run("float32"), Run("float64", dtype="float64")])
    cmp = compare(results)
    r32 = results["float32"]
    n = cfg.samples or 60000
    for form in ("ddp", "jax_sharded", "jax_shard_map"):
        problems = shard_problems(r32[form]["shards"], n, cfg.batch_size)
        if problems:
            cmp["failures"].append(f"{LABELS[form]} shards: {problems[0]}")
        cmp["failures"].extend(weight_problems(results, form))
    steps = len(r32["one_device"]["losses"]) // cfg.epochs
    how = (f"{cfg.processes} processes: DDP started by torchrun --standalone, JAX as one program over "
           f"{cfg.processes} processes (jax.distributed, gloo), " if cfg.processes else "")
    backend = "gloo" if cfg.device == "cpu" else "nccl"
    out(f"data-parallel parity: {cfg.devices} replicas on {cfg.device} ({how}DDP {backend}, "
        f"JAX devices {r32['jax_sharded']['devices']}), {steps} steps per epoch at global batch {cfg.batch_size}; "
        f"tolerance = {MULTIPLE:g} x each pair's float32-vs-float64 error")
    header = ("| epoch | " + " | ".join(f"{LABELS[f]} acc" for f in FORMS)
              + " | " + " | ".join(f"{LABELS[f]} Avg loss" for f in FORMS)
              + " | " + " | ".join(f"max step diff {LABELS[a]}-{LABELS[b]}" for a, b in PAIRS[:4]) + " |")
    out(header)
    out("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for e in range(cfg.epochs):
        sl = slice(e * steps, (e + 1) * steps)
        row = {"epoch": e + 1, **{f"{f}_accuracy": r32[f]["test"][e][0] for f in FORMS},
               **{f"{f}_avg_loss": r32[f]["test"][e][1] for f in FORMS},
               **{f"max_step_diff_{a}_vs_{b}": float(np.max(np.abs(r32[a]["losses"][sl] - r32[b]["losses"][sl])))
                  for a, b in PAIRS}}
        rows.append(row)
        out(f"| {e + 1:>5} | " + " | ".join(f"{100 * row[f + '_accuracy']:>{len(LABELS[f]) + 3}.1f}%" for f in FORMS)
            + " | " + " | ".join(f"{row[f + '_avg_loss']:>{len(LABELS[f]) + 9}.6f}" for f in FORMS)
            + " | " + " | ".join(f"{row[f'max_step_diff_{a}_vs_{b}']:>{len(LABELS[a]) + len(LABELS[b]) + 15}.3e}"
                                 for a, b in PAIRS[:4]) + " |")
    for name, p in cmp["pairs"].items():
        out(f"{name}: max per-step loss gap float32 {p['max_gap_f32']:.3e} "
            f"(tolerance {p['min_tol']:.1e}..{p['max_tol']:.1e}, "
            f"worst gap/tol {p['worst_ratio']:.2f}), float64 {p['max_gap_f64']:.1e}")
    out("float32 vs float64 (the tolerances' source): " + ", ".join(f"{k} {v:.3e}" for k, v in cmp["f32_vs_f64"].items()))
    report = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "platform": cfg.device, "cpu": platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0], "numpy": np.__version__},
        "jax_devices": r32["jax_sharded"]["devices"], "processes": cfg.processes,
              "collectives": {f: r32[f]["collectives"] for f in ("jax_sharded", "jax_shard_map")},
        "tolerance": {"multiple": MULTIPLE, "f64_agree": F64_AGREE, "f32_vs_f64": cmp["f32_vs_f64"]},
        "epochs": rows,
        "pairs": {k: {kk: vv for kk, vv in v.items() if kk not in ("gap", "tol")} for k, v in cmp["pairs"].items()},
        "failures": cmp["failures"], "ok": not cmp["failures"], "seconds": time.perf_counter() - t0,
    }
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"distributed_{cfg.device}_{cfg.devices}{'_processes' if cfg.processes else ''}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    report["plot"] = str(plot(r32, cmp, stem.with_suffix(".png"), f"{cfg.devices} replicas, {cfg.device}, float32"))
    out(f"report: {stem.with_suffix('.json')}, plot: {report['plot']}")
    out("PASS: DDP, JAX sharded, shard_map and one device agree within the float64-derived tolerance"
        if report["ok"] else "FAIL: " + "; ".join(cmp["failures"]))
    return report


def plot(r32: dict, cmp: dict, path: Path, title: str) -> Path:
    """The four loss curves, and every pair's per-step gap with its derived tolerance (log axis)."""
    import matplotlib  # noqa: PLC0415 -- plot only; Agg set before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- as matplotlib above

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for form, style in zip(FORMS, ("-", "--", ":", "-."), strict=True):
        losses = r32[form]["losses"]
        ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8, ls=style, label=LABELS[form])
    ax.set_ylabel("training loss")
    ax.legend(loc="upper right")
    ax.set_title(title, fontsize=9)
    for name, p in list(cmp["pairs"].items())[:4]:
        steps = np.arange(1, len(p["gap"]) + 1)
        line = ax2.semilogy(steps, np.maximum.accumulate(p["gap"]), lw=1.0, label=f"running max |{name}|")[0]
        ax2.semilogy(steps, p["tol"], lw=0.6, ls=":", color=line.get_color())
    ax2.set_xlabel("training step (global batch)")
    ax2.set_ylabel("per-step loss gap (dotted: tolerance)")
    ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _refuse(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    p = Parser(prog="python -m parity.distributed", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--devices", type=positive_int, default=None,
                   help="replicas: DDP processes and JAX devices (2 if not given)")
    p.add_argument("--processes", type=positive_int, default=None,
                   help="N processes of one replica each: DDP started by torchrun, JAX as one program over N processes "
                        "(jax.distributed) over loopback; default: DDP spawned here, JAX one process of N devices")
    p.add_argument("--epochs", type=positive_int, default=1, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=64, help="global batch (split over the replicas)")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu (gloo, host devices) or cuda (NCCL, GPUs)")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--samples", type=non_negative_int, default=0, help="train on the first N images (0: all 60000)")
    p.add_argument("--timeout", type=float, default=60.0, dest="timeout_s",
                   help="seconds a rank waits for a peer in a collective before failing")
    p.add_argument("--out-dir", type=out_dir, default="runs", help="folder for the JSON report and the PNG plot")
    args = p.parse_args(argv)
    if args.processes is not None:
        if args.devices not in (None, args.processes):
            return _refuse(p.prog, f"--devices {args.devices} with --processes {args.processes}: each process holds one "
                                   "replica, so the replicas are the processes (drop --devices)")
        cores = len(os.sched_getaffinity(0))
        if args.device == "cpu" and args.processes > cores:
            return _refuse(p.prog, f"--processes {args.processes}: this machine has {cores} cores for the processes over "
                                   "loopback (one each); on a cluster start them with torchrun / the JAX program "
                                   "(docs/multinode.md)")
    args.devices = args.processes or args.devices or 2
    args.processes = args.processes or 0
    result = {}
    code = run_guarded(lambda: result.setdefault("report", run(DistConfig(**vars(args)))),
                       (DataError, DeviceError, ShardError, launch.DistributedError), p.prog)
    if code:
        return code
    return 0 if result["report"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())



# --- the study guide's numbers: the basics modules themselves, over 2 replicas --------------------

BASICS_SAMPLES = 4 * 64 + 33  # 5 steps; the last global batch of 33 splits 17 + 16
BASICS_JAX = """
import sys
import numpy as np
from flax.training.train_state import TrainState
import optax
from jax_impl.basics import distributed as jb
from jax_impl.distributed import load_train
from jax_impl.model import NeuralNetwork
data_dir, init, out = sys.argv[1:]
with np.load(init) as f:
    params = {{}}
    for key in f.files:
        layer, name = key.split("/")
        params.setdefault(layer, {{}})[name] = f[key]
mesh = jb.setup(2)
state = TrainState.create(apply_fn=NeuralNetwork((512, 512)).apply, params=jb.replicate(params, mesh), tx=optax.sgd(1e-3))
x, y = load_train(data_dir, {samples})
s1, auto = jb.train_epoch(state, x, y, mesh)
s2, explicit = jb.train_epoch(state, x, y, mesh, step=jb.train_step_shard_map(mesh))
np.savez(out, auto=auto, explicit=explicit,
         **{{f"{{k}}/{{n}}": np.asarray(v) for k, p in s1.params.items() for n, v in p.items()}})
"""


def _basics_ddp(rank: int, port: int, data_dir: str, out: str) -> None:
    """Spawned rank of the guide's DDP run: ``reference_torch.basics.distributed`` as written."""
    torch.set_num_threads(1)
    tb.setup(rank, 2, port)
    try:
        x, y = tdist.load_train(data_dir, BASICS_SAMPLES)
        torch.manual_seed(0)
        model = NeuralNetwork()
        ddp = tb.replicate(model, torch.device("cpu"))
        losses = tb.train_epoch(ddp, torch.optim.SGD(ddp.parameters(), lr=1e-3), torch.from_numpy(x), torch.from_numpy(y))
        dist.all_reduce(losses)  # each rank's weighted loss; their mean is the global batch's loss
        if rank == 0:
            np.savez(out, losses=tb.as_numpy(losses / 2), **H.state_dict_numpy(model))
    finally:
        dist.destroy_process_group()


def basics_numbers(data_dir: str = "data") -> list[tuple[str, object, object]]:
    """(what, torch, JAX) rows for the study guide: the basics functions run over 2 replicas (2 gloo
    processes; 2 host devices in a JAX process of its own) against one device."""
    train, _ = H.real_data(data_dir)
    sd = H.init_state_dict(0)
    prefix = H.Split(train.x[:BASICS_SAMPLES], train.y[:BASICS_SAMPLES])
    one_losses, one_model = H.torch_train(sd, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_basics_ddp, args=(launch.free_port(), data_dir, f"{tmp}/ddp.npz"), nprocs=2,
                           start_method="spawn")
        np.savez(f"{tmp}/init.npz", **{f"{layer}/{k}": v for layer, d in H.torch_to_flax(sd).items() for k, v in d.items()})
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", BASICS_JAX.format(samples=BASICS_SAMPLES), data_dir, f"{tmp}/init.npz",
                        f"{tmp}/jax.npz"], env=env, cwd=REPO, check=True, capture_output=True)
        with np.load(f"{tmp}/ddp.npz") as f:
            ddp = {k: f[k] for k in f.files}
        with np.load(f"{tmp}/jax.npz") as f:
            jx = {k: f[k] for k in f.files}
    jax_sd = H.flax_to_torch_numpy(H.torch_to_flax(sd) | {layer: {"kernel": jx[f"{layer}/kernel"],
                                                                  "bias": jx[f"{layer}/bias"]}
                                                          for layer in H.torch_to_flax(sd)})
    one = H.state_dict_numpy(one_model)

    def close(a, b, atol=1e-5):
        return bool(np.max(np.abs(np.asarray(a) - np.asarray(b))) <= atol)

    return [
        ("per-step loss over 2 replicas, 5 steps (last global batch 33 = 17 + 16)", ddp["losses"], jx["auto"]),
        ("one device's per-step loss (`reference_torch.train`)", one_losses, one_losses),
        ("loss agrees with one device to 1e-5 at every step", close(ddp["losses"], one_losses),
         close(jx["auto"], one_losses)),
        ("`train_step_shard_map` (explicit `pmean`): loss agrees with one device", None, close(jx["explicit"], one_losses)),
        ("weights after 5 steps agree with one device to 1e-5", close(np.concatenate([ddp[k].ravel() for k in one]),
                                                                        np.concatenate([one[k].ravel() for k in one])),
         close(np.concatenate([jax_sd[k].ravel() for k in one]), np.concatenate([one[k].ravel() for k in one]))),
        ("loss weights n_r * N / b of the last batch (ranks 0, 1)", [17 * 2 / 33, 16 * 2 / 33], [17 * 2 / 33, 16 * 2 / 33]),
    ]
