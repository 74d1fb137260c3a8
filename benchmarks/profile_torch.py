"""python -m benchmarks.profile_torch: where torch's eager training step goes on this CPU.

Two views of the tutorial's step (batch 64 by default, data already in memory, ``torch-eager``):

* **The ladder**, timed without a profiler in interleaved rounds (``schedule.run_rounds``): the
  step's bare matrix products (the limit probe), then the forward, forward and loss, forward,
  loss and backward, and the whole step (SGD update and ``zero_grad``), and a hand-written step
  (the same forward, backward and update as plain tensor ops: no autograd engine, no optimizer
  object). Each rung's extra milliseconds are what that part of the step costs.
* **The profiler's split**, ``torch.profiler`` over the same steps: self CPU time per op group
  (matrix products, elementwise, loss, reductions, tensor bookkeeping, optimizer, autograd nodes)
  and the wall time no op accounts for (Python and dispatch). The profiler adds its own cost per
  op, so it apportions; the ladder measures.

Writes ``benchmarks/results/cpu/torch_profile.json`` (``--out``) and prints a table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from quickstart_parity_common.cli import Parser, non_negative_int, positive_int
from quickstart_parity_common.data import DataError

from . import limits, report, schedule
from .schedule import Unit, spread
from .variants import _torch_setup
from .workload import load_workload

RESULTS = Path(__file__).resolve().parent / "results" / "cpu"
# aten op name -> group; anything else is "other". Self times, so a composite (linear, cross_entropy_loss) counts
# only what it does itself.
GROUPS = {
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"),
    "elementwise": ("aten::relu", "aten::threshold_backward", "aten::mul", "aten::add", "aten::clamp_min",
                    "aten::threshold"),
    "loss": ("aten::log_softmax", "aten::_log_softmax", "aten::nll_loss", "aten::nll_loss_forward",
             "aten::nll_loss_nd", "aten::nll_loss_backward", "aten::_log_softmax_backward_data",
             "aten::cross_entropy_loss"),
    "reduction (bias grads)": ("aten::sum",),
    "bookkeeping (views, copies, allocs)": ("aten::view", "aten::reshape", "aten::flatten", "aten::t",
                                             "aten::transpose", "aten::as_strided", "aten::empty", "aten::empty_like",
                                             "aten::expand", "aten::copy_", "aten::detach", "aten::ones_like",
                                             "aten::fill_", "aten::zero_", "aten::zeros", "aten::_unsafe_view",
                                             "aten::resize_", "aten::empty_strided", "aten::unsqueeze",
                                             "aten::squeeze", "aten::select", "aten::slice", "aten::alias",
                                             "detach", "aten::result_type", "aten::to", "aten::_to_copy"),
    "optimizer": ("aten::_foreach_add_", "aten::add_", "aten::_foreach_mul_", "aten::_foreach_zero_",
                  "Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad"),
}
PHASES = ("forward", "loss", "backward", "optimizer.step", "zero_grad")


def _group(name: str) -> str:
    if name.startswith("autograd::engine") or name.endswith("Backward0") or name.endswith("Backward1") \
            or name == "torch::autograd::AccumulateGrad":
        return "autograd nodes"
    for group, ops in GROUPS.items():
        if name in ops:
            return group
    return "other"


def _batches(w, steps: int):
    x, y = torch.from_numpy(w.x), torch.from_numpy(w.y.astype(np.int64))
    bs = w.batch_size
    return [(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]) for i in range(steps)]


def _manual_step(params: list[torch.Tensor], lr: float):
    """The MLP's step as plain ops: forward, CrossEntropyLoss's mean gradient, backward, SGD. Same math as
    autograd's (float32 rounding aside); it only exists to price the autograd engine and the optimizer object."""
    w1, b1, w2, b2, w3, b3 = params

    def step(x, y):
        x = x.reshape(len(x), -1)  # (B, 784)
        h1 = torch.addmm(b1, x, w1.t()).relu_()  # (B, 512)
        h2 = torch.addmm(b2, h1, w2.t()).relu_()
        logits = torch.addmm(b3, h2, w3.t())  # (B, 10)
        g = torch.softmax(logits, 1)
        g[torch.arange(len(y)), y] -= 1
        g /= len(y)  # dloss/dlogits of the mean
        gw3, gb3 = g.t() @ h2, g.sum(0)
        g = (g @ w3).mul_(h2 > 0)
        gw2, gb2 = g.t() @ h1, g.sum(0)
        g = (g @ w2).mul_(h1 > 0)
        gw1, gb1 = g.t() @ x, g.sum(0)
        torch._foreach_add_(params, [gw1, gb1, gw2, gb2, gw3, gb3], alpha=-lr)

    return step


def ladder_units(w, steps: int) -> list[Unit]:
    """The rungs, each ``steps`` steps over the same batches; each builds its own model from the workload's weights."""
    batches = _batches(w, steps)
    gemms = w.spec.step_gemms(w.batch_size, w.hidden)
    work = steps * w.step_flops()

    def rung(kind: str):
        def build():
            _, model, loss_fn, optimizer = _torch_setup(w, "cpu")
            if kind == "manual":
                params = [p.detach() for p in model.parameters()]
                step = _manual_step(params, w.lr)
                return lambda: [step(x, y) for x, y in batches]

            def run():
                for x, y in batches:
                    if kind == "forward":
                        with torch.no_grad():
                            model(x)
                        continue
                    loss = loss_fn(model(x), y)
                    if kind == "forward+loss":
                        continue
                    loss.backward()
                    if kind == "step":
                        optimizer.step()
                    optimizer.zero_grad()
            return run
        return build

    units = [Unit("matmuls only (limit probe)", lambda: limits.torch_probe(gemms, steps, "cpu"), work)]
    units += [Unit(k, rung(k), work) for k in ("forward", "forward+loss", "forward+loss+backward", "step", "manual")]
    return units


def profile_split(w, steps: int) -> dict:
    """Self CPU time per op group and per phase over ``steps`` profiled steps, and the wall time ops do not cover."""
    _, model, loss_fn, optimizer = _torch_setup(w, "cpu")
    batches = _batches(w, steps)

    def step(x, y):
        with record_function("forward"):
            out = model(x)
        with record_function("loss"):
            loss = loss_fn(out, y)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer.step"):
            optimizer.step()
        with record_function("zero_grad"):
            optimizer.zero_grad()

    for x, y in batches[:20]:  # warm the allocator and MKL's buffers first
        step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for x, y in batches:
            step(x, y)
        wall = time.perf_counter() - t0
    groups: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    phases = {}
    for e in prof.key_averages():
        if e.key in PHASES:
            phases[e.key] = e.cpu_time_total / 1e3 / steps  # ms per step, with everything under it
            continue
        groups[_group(e.key)] += e.self_cpu_time_total / 1e3 / steps
        ops[e.key] += e.self_cpu_time_total / 1e3 / steps
    covered = sum(phases.values())
    wall_ms = wall * 1e3 / steps
    return {"steps": steps, "wall_ms_per_step_profiled": wall_ms,
            "phases_ms_per_step": phases, "outside_phases_ms_per_step": wall_ms - covered,
            "groups_self_ms_per_step": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top_ops_self_ms_per_step": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:15])}


# OpenMP's idle policy and placement, which only take effect in a fresh process: each runs the "step" rung in
# its own subprocess, the settings interleaved over rounds. (GNU OpenMP: torch's wheel links libgomp.)
ENV_EXPERIMENTS = {
    "default": {},
    "OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE (idle threads spin)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "GOMP_SPINCOUNT=infinite": {"GOMP_SPINCOUNT": "infinite"},
    "OMP_PROC_BIND=close, OMP_PLACES=cores (pinned)": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},
}


def env_experiments(data_dir: str, threads: int, steps: int, rounds: int, progress=None) -> list[dict]:
    """The whole step's ms/step under each of ``ENV_EXPERIMENTS``, one fresh process per setting and round."""
    times: dict[str, list[float]] = {k: [] for k in ENV_EXPERIMENTS}
    for r in range(rounds):
        names = list(ENV_EXPERIMENTS)
        for name in names[r % len(names):] + names[:r % len(names)]:
            env = {**os.environ, **ENV_EXPERIMENTS[name]}
            cmd = [sys.executable, "-m", "benchmarks.profile_torch", "--step-only", "--threads", str(threads),
                   "--steps", str(steps), "--data-dir", data_dir]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
            times[name].append(float(proc.stdout.split()[-1]))
            if progress:
                progress(f"env round {r + 1}/{rounds} {name}")
    return [{"setting": k, "env": ENV_EXPERIMENTS[k], "ms_per_step": spread(v)} for k, v in times.items()]


def step_only(data_dir: str, threads: int, steps: int, batch_size: int) -> float:
    """Median ms/step of the whole step over 5 calls of ``steps`` steps, after one warm-up call."""
    torch.set_num_threads(threads)
    w = load_workload(data_dir, steps * batch_size, batch_size)
    unit = dict((u.key, u) for u in ladder_units(w, steps))["step"]
    call = unit.build()
    call()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts)) / steps


def run(data_dir: str, threads: int, steps: int, rounds: int, batch_size: int, progress=None) -> dict:
    torch.set_num_threads(threads)
    w = load_workload(data_dir, steps * batch_size, batch_size)
    timings, _ = schedule.run_rounds(ladder_units(w, steps), rounds, progress=progress)
    ladder = []
    for key, t in timings.items():
        ms = spread([1e3 * s / steps for s in t.times])
        ladder.append({"rung": key, "ms_per_step": ms, "gflops": w.step_flops() / ms["median"] / 1e6})
    probe = ladder[0]["ms_per_step"]["median"]
    for row in ladder:
        row["of_limit"] = probe / row["ms_per_step"]["median"]
    return {"meta": {"cpu_model": limits.cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                     "torch_threads": threads, "batch_size": batch_size, "steps": steps, "rounds": rounds,
                     "step_mflop": w.step_flops() / 1e6, "load_average_at_start": list(os.getloadavg()),
                     "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "command": "python -m benchmarks.profile_torch " + " ".join(sys.argv[1:])},
            "ladder": ladder, "profile": profile_split(w, steps)}


def main(argv=None) -> int:
    p = Parser(prog="python -m benchmarks.profile_torch", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads")
    p.add_argument("--steps", type=positive_int, default=300, help="steps per rung and call")
    p.add_argument("--rounds", type=positive_int, default=7, help="interleaved rounds")
    p.add_argument("--batch-size", type=positive_int, default=64, help="minibatch size")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--out", default="", help="JSON path (default benchmarks/results/cpu/torch_profile_<threads>t.json)")
    p.add_argument("--env-rounds", type=non_negative_int, default=3,
                   help="rounds of the OpenMP settings' subprocesses (0: skip)")
    p.add_argument("--step-only", action="store_true", help="print the whole step's ms/step and exit (the subprocess "
                                                            "form the OpenMP experiments run)")
    a = p.parse_args(argv)
    if a.steps * a.batch_size > 60000:
        p.error(f"--steps {a.steps} x --batch-size {a.batch_size}: more samples than the training set's 60000")
    progress = lambda text: print(f"  {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if a.step_only:
            print(f"ms/step {step_only(a.data_dir, a.threads, a.steps, a.batch_size):.6f}")
            return 0
        out = run(a.data_dir, a.threads, a.steps, a.rounds, a.batch_size, progress=progress)
        out["openmp_settings"] = env_experiments(a.data_dir, a.threads, a.steps, a.env_rounds, progress) \
            if a.env_rounds > 0 else []
    except (DataError, RuntimeError) as e:
        print(f"python -m benchmarks.profile_torch: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out["meta"]["load_average_at_end"] = list(os.getloadavg())
    path = Path(a.out or RESULTS / f"torch_profile_{a.threads}t.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(report.torch_profile_section(out))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
