"""python -m benchmarks.run --device cpu|cuda|all: every variant of the quickstart's training timed in
interleaved rounds, against the step's measured matmul limit, with sweeps over batch size and width.

Fair timing: every variant starts from the same weights and trains on the same batches; every
clock read follows a device sync. All variants (and the limit probes) are built and warmed up
first; then each round runs one epoch of every variant, in an order rotated between rounds, and
every ratio (share of the limit, speed-up over the tutorial, between variants) is taken within a
round; the reports give the median of those paired ratios with their spread (``schedule.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# --device all times torch and JAX in one process on one GPU: JAX must not preallocate 75% of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import flax  # noqa: E402 - after the XLA environment above
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from quickstart_parity_common.cli import HelpFormatter, Parser, non_negative_int, out_dir, positive_int  # noqa: E402
from quickstart_parity_common.data import DataError  # noqa: E402

from . import limits, memory, report, schedule, variants  # noqa: E402
from .schedule import ARITHMETIC_BOUND, Timing, Unit, paired_ratio, per_round_max, spread  # noqa: E402
from .workload import MODELS, Workload, load_workload  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Rounds: each paired ratio's median is taken over this many rounds. With 5, the median ignores
# the two most extreme rounds, and a slow phase of the machine (minutes long) spoils at most the
# rounds it overlaps, within which every unit is slowed alike; the README's note compares two runs.
DEFAULT_ROUNDS = 5
THREAD_PROBE_STEPS = 150
SWEEP_BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
SWEEP_WIDTHS = (512, 1024, 2048, 4096)
SWEEP_ROUNDS = 3
ONE_THREAD = "@1thread"  # key suffix of the tutorial timed with one torch thread


class BenchError(Exception):
    """A benchmark cannot run as asked (absent device, bad option, missing data)."""


@dataclass(frozen=True)
class Settings:
    """The run's options, validated."""

    device: str
    rounds: int
    threads: int  # 0: chosen by measurement on CPU, torch's default on GPU
    batch_size: int
    precisions: tuple[str, ...]
    variants: tuple[str, ...]
    model: str
    sweep: bool
    quick: bool
    data_dir: str
    out_dir: str
    samples: int = 0  # the first N training samples; 0: all

    @property
    def kinds(self) -> list[str]:
        return ["cpu", "cuda"] if self.device == "all" else [self.device]


# ---------------------------------------------------------------- units


def set_precision(precision: str) -> None:
    """Pin float32 matmul precision on both sides: ``fp32`` = IEEE float32, ``tf32`` = TF32 tensor cores."""
    torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
    jax.config.update("jax_default_matmul_precision", "highest" if precision == "fp32" else "tensorfloat32")


def _pin(threads: int | None, precision: str):
    """The ``before`` hook of a unit: torch's intra-op threads (changeable at run time, unlike its
    inter-op pool) and the matmul precision, set again before every call of the unit."""

    def before() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        set_precision(precision)

    return before


def variant_unit(name: str, w: Workload, kind: str, threads: int | None, precision: str, key: str,
                 memory_out: dict | None = None) -> Unit:
    """A variant's epoch as a timed unit; torch variants run with ``threads``. With ``memory_out``, the unit
    records there, under ``key``, its peak memory from its build to the end of its first (warm-up) epoch,
    the one stretch during which it runs alone (``benchmarks.memory``)."""
    v = variants.VARIANTS[name]

    def build():
        if memory_out is None:
            return v.build(w, kind)
        state = memory.start(kind, v.framework)
        epoch = v.build(w, kind)
        first = [True]

        def call():
            out = epoch()
            if first[0]:
                first[0] = False
                memory_out[key] = memory.stop(kind, v.framework, state)
            return out

        return call

    return Unit(key, build, w.epoch_flops, _pin(threads if v.framework == "torch" else None, precision))


def limit_units(w: Workload, kind: str, threads: int, precision: str, suffix: str) -> list[tuple[Unit, dict]]:
    """The limit probes, torch and JAX, each with its meta: the step's matrix products, ``reps`` times per call."""
    gemms = w.spec.step_gemms(w.batch_size, w.hidden)
    reps = max(1, w.steps // 4) if kind == "cpu" else w.steps  # CPU: ~1/4 of an epoch's matmul work
    work = reps * w.step_flops()
    jdev = variants.jax_device(kind)
    probes = {"torch": (lambda: limits.torch_probe(gemms, reps, kind), threads),
              "jax": (lambda: limits.jax_probe(gemms, reps, jdev, precision), None)}
    return [(Unit(f"limit-{fw}{suffix}", build, work, _pin(t, precision)),
             {"variant": f"limit-{fw}", "framework": fw, "label": "limit probe", "precision": precision, "limit": True,
              "torch_threads": t})
            for fw, (build, t) in probes.items()]


def plan(kind: str, s: Settings, threads: int, w: Workload) -> tuple[list[Unit], dict[str, dict], dict[str, dict]]:
    """Every unit of one device's rounds, what each key stands for (the meta is the truth; keys are labels), and
    the dict the variants' peak memory lands in, by key, as their warm-ups run."""
    units, meta = [], {}
    mem: dict[str, dict] = {}
    precisions = s.precisions if kind == "cuda" else ("fp32",)
    for p_i, precision in enumerate(precisions):
        suffix = f"/{precision}" if kind == "cuda" else ""
        for name in s.variants:
            v = variants.VARIANTS[name]
            if v.gpu_only and kind != "cuda":
                continue
            if v.tutorial and p_i > 0:
                continue  # the tutorial's time is its data pipeline: one precision is enough
            anchors = [(threads, False)]
            if v.tutorial and threads != 1:
                anchors.append((1, True))
            for t, one_thread in anchors:
                key = name + (ONE_THREAD if one_thread else "") + suffix
                units.append(variant_unit(name, w, kind, t, precision, key, mem))
                meta[key] = {"variant": name, "framework": v.framework,
                             "label": v.label + (" at 1 thread" if one_thread else ""), "precision": precision,
                             "torch_threads": t if v.framework == "torch" else None, "tutorial": v.tutorial,
                             "one_thread_anchor": one_thread}
        for u, m in limit_units(w, kind, threads, precision, suffix):
            units.append(u)
            meta[u.key] = m
    return units, meta, mem


def choose_threads(w: Workload, rounds: int, progress=None) -> tuple[int, list[dict]]:
    """torch's intra-op thread count by measurement: torch-eager over the first steps of the data,
    with 1, 2, 4, ... threads up to the core count, in interleaved rounds; the fastest median wins."""
    cores = os.cpu_count() or 1
    candidates = sorted({1, cores, *(2**k for k in range(1, 8) if 2**k < cores)})
    sub = w.subset(min(w.n, THREAD_PROBE_STEPS * w.batch_size))
    units = [variant_unit("torch-eager", sub, "cpu", t, "fp32", f"threads={t}") for t in candidates]
    timings, _ = schedule.run_rounds(units, rounds, progress=progress)
    rows = []
    for t in candidates:
        st = spread([x * w.n / sub.n for x in timings[f"threads={t}"].times])
        rows.append({"threads": t, "epoch_equivalent_s": st, "probe_steps": sub.steps})
    return min(rows, key=lambda r: r["epoch_equivalent_s"]["median"])["threads"], rows


# ---------------------------------------------------------------- summaries


def _ratio(num: list[float], den: list[float]) -> dict:
    ratios = paired_ratio(num, den)
    return {"per_round": ratios, **spread(ratios)}


def summarise(kind: str, timings: dict[str, Timing], meta: dict[str, dict], w: Workload, threads: int,
              mem: dict[str, dict] | None = None) -> dict:
    """Rows per unit, the limit per precision and every paired ratio, from one device's rounds."""
    gpu = torch.cuda.get_device_name(0) if kind == "cuda" else None
    limit = {}
    for precision in sorted({m["precision"] for m in meta.values()}):
        probes = [k for k, m in meta.items() if m.get("limit") and m["precision"] == precision]
        per_round = per_round_max([timings[k].rates for k in probes])
        entry = {"method": f"the step's {len(w.spec.step_gemms(w.batch_size, w.hidden))} matrix products at batch "
                           f"{w.batch_size}, back to back; the faster of torch and JAX in each round",
                 "gflops_per_round": [r / 1e9 for r in per_round], "gflops": spread([r / 1e9 for r in per_round]),
                 "probes": {k: spread([r / 1e9 for r in timings[k].rates]) for k in probes}}
        if gpu:
            entry["datasheet"], peak = limits.datasheet_peak_gflops(gpu, precision)
            entry["datasheet_gflops"] = peak
        limit[precision] = {**entry, "_rates": per_round}

    tutorial = {"": None, ONE_THREAD: None}
    for key, m in meta.items():
        if m.get("tutorial"):
            tutorial[ONE_THREAD if m["one_thread_anchor"] else ""] = timings[key].times
    if tutorial[ONE_THREAD] is None:  # the chosen count is 1: both anchors are the same unit
        tutorial[ONE_THREAD] = tutorial[""]

    rows = []
    for key, m in meta.items():
        if m.get("limit"):
            continue
        t = timings[key]
        epoch = spread(t.times)
        of_limit = _ratio(t.rates, limit[m["precision"]]["_rates"])
        of_limit["over_limit"] = of_limit["median"] > 1.0
        row = {"key": key, **m, "device": kind, "samples": w.n, "steps_per_epoch": w.steps,
               "build_s": t.build_s, "warmup_s": t.warmup_s, "epoch_s": t.times, "epoch": epoch,
               "five_epochs_end_to_end_s": t.build_s + t.warmup_s + 4 * epoch["median"],
               "five_epochs_steady_s": 5 * epoch["median"],
               "samples_per_s": w.n / epoch["median"], "gflops": w.epoch_flops / epoch["median"] / 1e9,
               "of_limit": of_limit, "last_loss": float(t.last), "memory": (mem or {}).get(key, {})}
        if limit[m["precision"]].get("datasheet_gflops"):
            row["of_datasheet_peak"] = row["gflops"] / limit[m["precision"]]["datasheet_gflops"]
        if tutorial[""] is not None:
            row["vs_tutorial"] = _ratio(tutorial[""], t.times)
            row["vs_tutorial_1thread"] = _ratio(tutorial[ONE_THREAD], t.times)
        row["noisy"] = of_limit["noisy"] or of_limit["over_limit"]
        rows.append(row)

    pairs = []
    by_key = {r["key"]: r for r in rows}
    main_tutorial = next((k for k, r in by_key.items() if r["tutorial"] and not r["one_thread_anchor"]), None)
    one = next((k for k, r in by_key.items() if r["tutorial"] and r["one_thread_anchor"]), None)
    for precision in limit:
        at = {r["variant"]: k for k, r in by_key.items()
              if not r["one_thread_anchor"] and (r["precision"] == precision or r["tutorial"])}
        candidates = [(at[v.name], at[v.baseline]) for v in variants.VARIANTS.values()
                      if v.baseline in at and v.name in at]
        candidates += [(at[a], at[b]) for a, b in variants.CROSS if a in at and b in at]
        fastest = [min((r for r in rows if r["framework"] == fw and r["precision"] == precision and not r["tutorial"]),
                       key=lambda r: r["epoch"]["median"], default=None) for fw in variants.FRAMEWORKS]
        if all(fastest):  # each framework's fastest against the other's: the headline comparison
            a, b = sorted(fastest, key=lambda r: r["epoch"]["median"])
            candidates.append((a["key"], b["key"]))
        for a, b in dict.fromkeys(candidates):
            pairs.append({"faster": a, "baseline": b, "what": f"{a} vs {b}", **_ratio(timings[b].times, timings[a].times)})
    if one and main_tutorial:
        pairs.append({"faster": main_tutorial, "baseline": one, "what": f"the tutorial at {threads} vs 1 torch thread",
                      **_ratio(timings[one].times, timings[main_tutorial].times)})
    for entry in limit.values():
        entry.pop("_rates")
    return {"device": kind, "gpu": gpu, "torch_threads": threads, "limit": limit, "variants": rows, "pairs": pairs}


# ---------------------------------------------------------------- sweeps


def sweep(kind: str, s: Settings, threads: int, w: Workload, rows: list[dict], progress=None) -> list[dict]:
    """Throughput of the fastest variant of each framework over batch size (width as the
    workload's) and width (batch 64), in interleaved rounds per point. Left out: the tutorial and
    the notebook (their data paths, not the step, set their speed) and torch.compile's default
    mode (every new shape compiles again, minutes per point on a small CPU)."""
    fastest = {}
    for fw in variants.FRAMEWORKS:
        cands = [r for r in rows if r["framework"] == fw and r["precision"] == "fp32"
                 and variants.VARIANTS[r["variant"]].sweep]
        if cands:
            fastest[fw] = min(cands, key=lambda r: r["epoch"]["median"])["variant"]
    batches = SWEEP_BATCHES[:3] if s.quick else SWEEP_BATCHES
    widths = (SWEEP_WIDTHS[:2] if s.quick else SWEEP_WIDTHS) if w.spec.widths else ()
    width0 = w.hidden[0]
    configs = [(b, width0) for b in batches] + [(64, h) for h in widths if h != width0]
    out = []
    for batch, width in configs:
        hidden = (width,) * len(w.hidden)
        # A fixed amount of work per point: enough steps to time, few enough on a slow CPU.
        budget = (2e11 if kind == "cpu" else 5e12) / (w.subset(1, hidden=hidden).flops_per_sample * 3)
        n = int(min(w.n, max(8 * batch, budget)) // batch * batch)
        sub = w.subset(n, batch_size=batch, hidden=hidden)
        probes = limit_units(sub, kind, threads, "fp32", "")  # this point's own limit, in the same rounds
        units = [variant_unit(name, sub, kind, threads, "fp32", name) for name in fastest.values()]
        timings, _ = schedule.run_rounds(units + [u for u, _ in probes], SWEEP_ROUNDS if not s.quick else 2,
                                         progress=progress)
        limit = per_round_max([timings[u.key].rates for u, _ in probes])
        for fw, name in fastest.items():
            t = timings[name]
            sps = spread([n / x for x in t.times])
            of_limit = _ratio(t.rates, limit)
            out.append({"framework": fw, "variant": name, "device": kind, "batch_size": batch, "hidden": width,
                        "samples": n, "samples_per_s": sps, "gflops": sps["median"] * sub.flops_per_sample / 1e9,
                        "epoch_s_equivalent": w.n / sps["median"], "limit_gflops": spread([r / 1e9 for r in limit]),
                        "of_limit": of_limit, "warmup_s": t.warmup_s, "rounds": len(t.times)})
    return out


def arithmetic_bound_from(sweeps: list[dict], width0: int) -> dict[str, dict]:
    """Per framework and sweep axis (batch size at the workload's width ``width0``, width at batch 64), the
    smallest point from which the fastest variant's share of the limit stays at or above ``ARITHMETIC_BOUND``:
    where the step stops being bound by overhead (dispatch, Python, small kernels) and becomes bound by its
    matrix products. None: not within the sweep."""
    out: dict[str, dict] = {}
    for fw in sorted({r["framework"] for r in sweeps}):
        rows = [r for r in sweeps if r["framework"] == fw]
        out[fw] = {}
        for axis, pts in (("batch_size", [r for r in rows if r["hidden"] == width0]),
                          ("hidden", [r for r in rows if r["batch_size"] == 64])):
            pts = sorted(pts, key=lambda r: r[axis])
            out[fw][axis] = next((r[axis] for i, r in enumerate(pts)
                                  if all(q["of_limit"]["median"] >= ARITHMETIC_BOUND for q in pts[i:])), None)
    return out


# ---------------------------------------------------------------- one device, the whole run


def measure_device(kind: str, s: Settings, w: Workload) -> dict:
    """Thread choice, rounds, summary and sweeps of one device kind."""
    try:
        variants.jax_device(kind)
    except RuntimeError:
        raise BenchError(f"--device {kind}: JAX sees no GPU (install jax[cuda12] on a machine with CUDA)") from None
    bar = tqdm(desc=f"{kind}", file=sys.stderr, leave=False, dynamic_ncols=True, unit="call")

    def progress(text: str) -> None:
        bar.set_postfix_str(text)
        bar.update()

    thread_study = []
    threads = s.threads
    if threads == 0 and kind == "cpu":
        threads, thread_study = choose_threads(w, 2 if s.quick else 3, progress)
    elif threads == 0:
        threads = torch.get_num_threads()
    units, meta, mem = plan(kind, s, threads, w)
    timings, log = schedule.run_rounds(units, s.rounds, progress=progress)
    result = summarise(kind, timings, meta, w, threads, mem)
    result["thread_study"] = thread_study
    result["order"] = [[key for phase, r, key in log if phase == "round" and r == i] for i in range(s.rounds)]
    result["sweeps"] = sweep(kind, s, threads, w, result["variants"], progress) if s.sweep else []
    result["arithmetic_bound_from"] = arithmetic_bound_from(result["sweeps"], w.hidden[0])
    bar.close()
    return result


def environment(s: Settings, w: Workload) -> dict:
    """The machine, the versions and the run's settings, for the JSON and the README."""
    meta = {
        "cpu_model": limits.cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": sys.version.split()[0],
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "flax": flax.__version__,
                     "optax": optax.__version__, "numpy": np.__version__},
        "torch_interop_threads": torch.get_num_interop_threads(),
        "xla_cpu_threads": "XLA's own pool, all cores (fixed per process)",
        "model": w.model, "hidden": list(w.hidden), "batch_size": w.batch_size, "samples": w.n, "steps": w.steps,
        "flops_per_sample": w.flops_per_sample, "rounds": s.rounds, "quick": s.quick,
        "noisy_rel_iqr": schedule.NOISY_IQR,
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": list(os.getloadavg()),
    }
    if "cuda" in s.kinds:
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["versions"]["cuda"] = torch.version.cuda
    return meta


def run(s: Settings) -> dict:
    """The whole benchmark as a JSON-able dict."""
    if "cuda" in s.kinds and not torch.cuda.is_available():
        raise BenchError(f"--device {s.device}: CUDA is not available to torch {torch.__version__} on this machine")
    try:
        n = 3000 + 32 if s.quick else s.samples or None  # quick keeps a partial batch
        w = load_workload(s.data_dir, n, s.batch_size, s.model)
    except DataError as e:
        raise BenchError(str(e)) from None
    out = {"meta": environment(s, w), "devices": {}}
    for kind in s.kinds:
        out["devices"][kind] = measure_device(kind, s, w)
    out["meta"]["load_average_at_end"] = list(os.getloadavg())
    return out


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> Settings:
    """The command line as validated ``Settings``; a bad flag exits 2 with one line."""
    known = ",".join(variants.names())
    p = Parser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="cpu", help="where to run")
    p.add_argument("--rounds", type=positive_int, default=DEFAULT_ROUNDS,
                   help="interleaved rounds, one epoch of every variant each; ratios are medians over them")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch intra-op threads (0: measure 1, 2, 4, ... on CPU and take the fastest; "
                        "torch's default on GPU)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="minibatch size")
    p.add_argument("--precision", default="fp32,tf32", help="GPU precision modes, comma-separated (CPU: fp32 only)")
    p.add_argument("--variants", default=known, help="variants to time, comma-separated (GPU-only ones skipped on CPU)")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp", help="the model every variant trains")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="the batch-size and width sweeps (on by default; --no-sweep skips them)")
    p.add_argument("--samples", type=non_negative_int, default=0,
                   help="time epochs over the first N training samples (0: all 60,000), for models too slow "
                        "to time whole epochs in every round")
    p.add_argument("--quick", action="store_true", help="smoke test: 1/20 of the data, at most 3 rounds (off by default)")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--out-dir", type=out_dir, default=str(RESULTS), help="where the JSON and PNG files go")
    a = p.parse_args(argv)
    precisions = tuple(dict.fromkeys(m.strip() for m in a.precision.split(",") if m.strip()))
    if not precisions or not set(precisions) <= {"fp32", "tf32"}:
        p.error(f"--precision {a.precision!r}: use fp32 and/or tf32")
    names = tuple(dict.fromkeys(v.strip() for v in a.variants.split(",") if v.strip()))
    unknown = [v for v in names if v not in variants.VARIANTS]
    if unknown or not names:
        p.error(f"--variants: unknown {unknown[0] if unknown else 'empty list'!r} (known: {known})")
    if a.device == "cpu" and all(variants.VARIANTS[v].gpu_only for v in names):
        p.error(f"--variants {a.variants}: GPU-only variants, nothing to time on --device cpu")
    rounds = min(a.rounds, 3) if a.quick else a.rounds
    return Settings(a.device, rounds, a.threads, a.batch_size, precisions, names, a.model, a.sweep, a.quick,
                    a.data_dir, a.out_dir, a.samples)


def main(argv=None) -> int:
    s = parse_args(argv)
    prog = "python -m benchmarks.run"
    try:
        out = run(s)
    except BenchError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    out_dir = Path(s.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench_{'' if s.model == 'mlp' else s.model + '_'}{s.device}{'_quick' if s.quick else ''}"
    out["charts"] = [os.path.relpath(p, out_dir) for p in report.charts(out, stem)]
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(report.markdown(out))
    print(f"\nwrote {stem.with_suffix('.json')} and {', '.join(out['charts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
