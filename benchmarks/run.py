"""python -m benchmarks.run --device cpu|cuda|all: every variant of the quickstart's training, timed
fairly, against the device's limit, with sweeps over batch size and width.

Fair timing: every variant starts from the same weights and trains on the same batches; the first
epoch (compilation, graph capture, caches) is reported on its own as warm-up; steady state is the
median of the following epochs; every clock read follows a device sync (``torch.cuda.synchronize``,
reading the loss back from JAX). Precision and torch's thread count are pinned and recorded.
"""
from __future__ import annotations

import argparse
import json
import os

# --device all times torch and JAX in one process on one GPU: JAX must not preallocate 75% of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import limits
from parity.harness import Split

from .variants import GPU_ONLY, JAX_VARIANTS, TORCH_VARIANTS, Workload, flops_per_sample, jax_variant, torch_variant

RESULTS = Path(__file__).resolve().parent / "results"
SWEEP_BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)
SWEEP_WIDTHS = (512, 1024, 2048, 4096)


class BenchError(Exception):
    """A benchmark cannot run as asked (absent device, bad option)."""


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        class Plain:
            def update(self, n=1): pass
            def set_postfix_str(self, s): print(f"{desc}: {s}", file=sys.stderr)
            def close(self): pass
        return Plain()


def time_variant(make_epoch, epochs: int) -> dict:
    """Warm-up epoch (build + compile + first run) timed alone, then the median of ``epochs`` epochs."""
    t0 = time.perf_counter()
    epoch = make_epoch()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    epoch()
    warmup_s = time.perf_counter() - t0
    times, loss = [], float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss = epoch()
        times.append(time.perf_counter() - t0)
    return {"build_s": build_s, "warmup_s": warmup_s, "epoch_s": times, "median_epoch_s": statistics.median(times),
            "last_loss": loss}


def _jax_device(kind: str):
    import jax

    if kind == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        raise BenchError("--device cuda: JAX sees no GPU (install jax[cuda12] on a machine with CUDA)") from None


def precision_settings(kind: str, precision: str) -> dict:
    """Pin float32 matmul precision on both sides: ``fp32`` = IEEE float32, ``tf32`` = tensor-core TF32."""
    import jax

    torch_mode = "highest" if precision == "fp32" else "high"
    torch.set_float32_matmul_precision(torch_mode)
    jax_mode = "highest" if precision == "fp32" else "tensorfloat32"
    jax.config.update("jax_default_matmul_precision", jax_mode)
    return {"mode": precision, "torch_float32_matmul_precision": torch_mode, "jax_default_matmul_precision": jax_mode,
            "effective": "IEEE float32 matmuls" if precision == "fp32" or kind == "cpu" else "TF32 tensor cores"}


def run_device(kind: str, args, workload: Workload, tutorial_data, out: dict) -> None:
    """All variants and sweeps on one device kind ('cpu' or 'cuda'), results appended to ``out``."""
    tdev = torch.device(kind)
    jdev = _jax_device(kind)
    variants = [v for v in args.variants if kind == "cuda" or v not in GPU_ONLY]
    fps = flops_per_sample()
    if kind == "cpu" and args.threads == 0:
        args.threads, out["thread_study"] = choose_threads(workload, args.quick)
    elif args.threads == 0:
        args.threads = torch.get_num_threads()
    out["meta"]["torch_threads"] = args.threads
    limit = limits.cpu_limit(args.batch_size, args.threads, quick=args.quick) if kind == "cpu" else limits.gpu_limit()
    out["limits"][kind] = limit
    precisions = args.precision if kind == "cuda" else ["fp32"]
    bar = _progress(len(variants) * len(precisions), f"{kind} variants")
    for precision in precisions:
        prec = precision_settings(kind, precision)
        for name in variants:
            bar.set_postfix_str(f"{name} ({precision})")
            threads = args.threads if name.startswith("torch") else None
            if threads:
                torch.set_num_threads(threads)
            if name.startswith("torch"):
                r = time_variant(lambda: torch_variant(name, workload, tdev, tutorial_data), args.epochs)
            else:
                r = time_variant(lambda: jax_variant(name, workload, jdev), args.epochs)
            sps = workload.n / r["median_epoch_s"]
            gflops = sps * fps / 1e9
            peak = limit["fp32_gflops"] if precision == "fp32" else limit.get("tf32_gflops") or limit["fp32_gflops"]
            out["variants"].append({
                "variant": name, "framework": name.split("-")[0], "device": kind, "precision": prec,
                "torch_threads": torch.get_num_threads() if name.startswith("torch") else None,
                "samples": workload.n, "steps_per_epoch": workload.steps, **r,
                "five_epoch_s": 5 * r["median_epoch_s"], "samples_per_s": sps, "gflops": gflops,
                "fraction_of_limit": gflops / peak if peak else None,
                **({"fraction_of_fp32_peak": gflops / limit["fp32_gflops"] if limit["fp32_gflops"] else None,
                    "fraction_of_tf32_peak": gflops / limit["tf32_gflops"] if limit["tf32_gflops"] else None}
                   if kind == "cuda" else {}),
            })
            bar.update()
    bar.close()
    if args.sweep:
        out["sweeps"][kind] = sweep(kind, args, out, workload, tdev, jdev)


def choose_threads(workload: Workload, quick: bool) -> tuple[int, list[dict]]:
    """torch's intra-op thread count for the CPU runs, by measurement (never trust a default):
    torch-eager over the first 150 steps with 1, 2, 4, ... threads up to the core count."""
    cores = os.cpu_count() or 1
    candidates = sorted({1, cores, *(2**k for k in range(1, 8) if 2**k < cores)})
    n = min(workload.n, (40 if quick else 150) * workload.batch_size)
    sub = Workload(Split(workload.split.x[:n], workload.split.y[:n]), workload.state_dict, workload.batch_size)
    rows = []
    for threads in candidates:
        torch.set_num_threads(threads)
        r = time_variant(lambda: torch_variant("torch-eager", sub, torch.device("cpu")), 2)
        rows.append({"threads": threads, "epoch_equivalent_s": r["median_epoch_s"] * workload.n / n})
    best = min(rows, key=lambda r: r["epoch_equivalent_s"])["threads"]
    return best, rows


def _fastest(out: dict, kind: str, framework: str) -> str:
    rows = [r for r in out["variants"] if r["device"] == kind and r["framework"] == framework
            and r["precision"]["mode"] == "fp32" and r["variant"] not in ("torch-tutorial", "jax-notebook")]
    return min(rows, key=lambda r: r["median_epoch_s"])["variant"]


def sweep(kind: str, args, out: dict, workload: Workload, tdev, jdev) -> list[dict]:
    """Throughput of the fastest variant of each framework over batch size and hidden width."""
    from parity.harness import init_state_dict

    precision_settings(kind, "fp32")
    batches = SWEEP_BATCHES[:3] if args.quick else SWEEP_BATCHES
    widths = SWEEP_WIDTHS[:2] if args.quick else SWEEP_WIDTHS
    configs = [(b, 512) for b in batches] + [(64, h) for h in widths if h != 512]
    rows = []
    bar = _progress(2 * len(configs), f"{kind} sweep")
    for framework in ("torch", "jax"):
        name = _fastest(out, kind, framework)
        for batch, width in configs:
            fps = flops_per_sample((width, width))
            # A fixed amount of work per point: enough steps to time, few enough on a slow CPU.
            budget = (2e11 if kind == "cpu" else 5e12) / (fps * 3)
            n = int(min(len(workload.split.y), max(8 * batch, budget)) // batch * batch)
            w = Workload(Split(workload.split.x[:n], workload.split.y[:n]), init_state_dict(0, (width, width)), batch)
            bar.set_postfix_str(f"{name} batch {batch} width {width}")
            if framework == "torch":
                torch.set_num_threads(args.threads)
                r = time_variant(lambda: torch_variant(name, w, tdev), 2)
            else:
                r = time_variant(lambda: jax_variant(name, w, jdev), 2)
            sps = n / r["median_epoch_s"]
            rows.append({"framework": framework, "variant": name, "device": kind, "batch_size": batch,
                         "hidden": width, "samples": n, "samples_per_s": sps, "gflops": sps * fps / 1e9,
                         "warmup_s": r["warmup_s"]})
            bar.update()
    bar.close()
    return rows


def environment(args, kinds) -> dict:
    import flax
    import jax
    import optax

    meta = {
        "cpu_model": limits.cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": sys.version.split()[0],
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__},
        "torch_threads": args.threads, "xla_cpu_threads": "XLA's own pool (all cores)",
        "batch_size": args.batch_size, "steady_epochs": args.epochs, "quick": args.quick,
        "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if "cuda" in kinds:
        meta["gpu"] = torch.cuda.get_device_name(0)
        meta["versions"]["cuda"] = torch.version.cuda
    return meta


def markdown(out: dict) -> str:
    """The results as a markdown table (plus the limits and sweeps, briefly)."""
    lines = ["| device | variant | precision | torch threads | warm-up s | epoch s (median) | 5 epochs s "
             "| samples/s | GFLOP/s | of limit | last loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["variants"]:
        frac = f"{100 * r['fraction_of_limit']:.1f}%" if r["fraction_of_limit"] is not None else "n/a"
        lines.append(f"| {r['device']} | {r['variant']} | {r['precision']['mode']} | {r['torch_threads'] or '-'} "
                     f"| {r['warmup_s']:.2f} | {r['median_epoch_s']:.3f} | {r['five_epoch_s']:.2f} "
                     f"| {r['samples_per_s']:,.0f} | {r['gflops']:.1f} | {frac} | {r['last_loss']:.6f} |")
    for kind, lim in out["limits"].items():
        lines.append(f"\nlimit ({kind}): {lim['fp32_gflops'] or 'n/a'} GFLOP/s fp32 — {lim['method']}")
        if kind == "cpu":
            lines.append(f"  torch probe {lim['torch_probe_gflops']:.1f}, JAX probe {lim['jax_probe_gflops']:.1f}, "
                         f"1024^3 GEMM {lim['large_gemm_gflops']:.1f} GFLOP/s")
    for row in out.get("thread_study", []):
        lines.append(f"torch-eager with {row['threads']} thread(s): {row['epoch_equivalent_s']:.3f} s/epoch "
                     f"(150-step probe){'  <- chosen' if row['threads'] == out['meta']['torch_threads'] else ''}")
    for kind, rows in out["sweeps"].items():
        lines.append(f"\nsweep ({kind}): samples/s")
        lines.append("| framework | variant | batch | hidden | samples/s | GFLOP/s |")
        lines.append("|---|---|---|---|---|---|")
        lines += [f"| {r['framework']} | {r['variant']} | {r['batch_size']} | {r['hidden']} | {r['samples_per_s']:,.0f} "
                  f"| {r['gflops']:.1f} |" for r in rows]
    if "crossover" in out:
        lines.append("")
        lines += [f"GPU overtakes CPU ({fw}): {txt}" for fw, txt in out["crossover"].items()]
    return "\n".join(lines)


def crossover(out: dict) -> dict:
    """Per framework, the sweep points where the GPU's throughput exceeds the CPU's."""
    if not {"cpu", "cuda"} <= set(out["sweeps"]):
        return {}
    result = {}
    for fw in ("torch", "jax"):
        cpu = {(r["batch_size"], r["hidden"]): r["samples_per_s"] for r in out["sweeps"]["cpu"] if r["framework"] == fw}
        gpu = {(r["batch_size"], r["hidden"]): r["samples_per_s"] for r in out["sweeps"]["cuda"] if r["framework"] == fw}
        wins = [f"batch {b}/hidden {h} ({gpu[(b, h)] / cpu[(b, h)]:.1f}x)" for (b, h) in cpu if (b, h) in gpu and gpu[(b, h)] > cpu[(b, h)]]
        result[fw] = ", ".join(wins) if wins else "nowhere in the sweep"
    return result


def charts(out: dict, stem: Path) -> list[str]:
    """Epoch time per variant and device; the sweeps. Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    rows = out["variants"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    labels = [f"{r['variant']} [{r['device']}, {r['precision']['mode']}]" for r in rows]
    colors = ["tab:red" if r["framework"] == "torch" else "tab:blue" for r in rows]
    ax.barh(labels, [r["median_epoch_s"] for r in rows], color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per epoch (median, after warm-up; log scale)")
    for i, r in enumerate(rows):
        ax.text(r["median_epoch_s"], i, f" {r['median_epoch_s']:.3g}s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"Quickstart epoch (60k samples, batch {out['meta']['batch_size']}) — {out['meta']['cpu_model']}"
                 + (f" / {out['meta']['gpu']}" if "gpu" in out["meta"] else ""), fontsize=9)
    fig.tight_layout()
    paths.append(str(stem.with_name(stem.name + "_epoch.png")))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if out["sweeps"]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for kind, srows in out["sweeps"].items():
            for fw, color in (("torch", "tab:red"), ("jax", "tab:blue")):
                ls = "-" if kind == "cpu" else "--"
                b = sorted((r["batch_size"], r["samples_per_s"]) for r in srows if r["framework"] == fw and r["hidden"] == 512)
                h = sorted((r["hidden"], r["samples_per_s"]) for r in srows if r["framework"] == fw and r["batch_size"] == 64)
                if b:
                    axes[0].plot(*zip(*b), ls, marker="o", color=color, label=f"{fw} {kind}")
                if h:
                    axes[1].plot(*zip(*h), ls, marker="o", color=color, label=f"{fw} {kind}")
        for ax, xl in zip(axes, ("batch size (hidden 512)", "hidden width (batch 64)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel("training samples / s")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("How throughput grows with batch size and width (fastest variant per framework)", fontsize=10)
        fig.tight_layout()
        paths.append(str(stem.with_name(stem.name + "_sweep.png")))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="cpu", help="where to run")
    p.add_argument("--quick", action="store_true", help="a small subset in seconds (smoke test): 1/20 of the data")
    p.add_argument("--epochs", type=int, default=3, help="steady-state epochs per variant (median)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: measure 1, 2, 4, ... and take the fastest)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="fp32,tf32", help="GPU precision modes to time, comma-separated (CPU: fp32)")
    p.add_argument("--variants", default=",".join(TORCH_VARIANTS + JAX_VARIANTS), help="variants to time")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the batch-size and width sweeps")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out-dir", default=str(RESULTS), help="where the JSON and PNG files go")
    args = p.parse_args(argv)
    try:
        return _main(args, p.prog)
    except BenchError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2


def _main(args, prog: str) -> int:
    from common.data import DataError
    from parity.harness import init_state_dict, real_data

    args.precision = [m.strip() for m in args.precision.split(",") if m.strip()]
    if not set(args.precision) <= {"fp32", "tf32"}:
        raise BenchError(f"--precision {','.join(args.precision)}: use fp32 and/or tf32")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(TORCH_VARIANTS + JAX_VARIANTS)
    if unknown:
        raise BenchError(f"--variants: unknown {sorted(unknown)[0]} (known: {', '.join(TORCH_VARIANTS + JAX_VARIANTS)})")
    kinds = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in kinds and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: CUDA is not available to torch {torch.__version__} on this machine")
    if args.quick:
        args.epochs = min(args.epochs, 2)
    try:
        train, _ = real_data(args.data_dir)
    except DataError as e:
        raise BenchError(str(e)) from None
    n = 3000 + 32 if args.quick else len(train.y)  # quick keeps a last partial batch too
    workload = Workload(Split(train.x[:n], train.y[:n]), init_state_dict(0), args.batch_size)
    tutorial_data = None
    if "torch-tutorial" in args.variants:
        from reference_torch.data import get_datasets

        tutorial_data = get_datasets(args.data_dir, download=False)[0]

    out = {"meta": environment(args, kinds), "limits": {}, "variants": [], "sweeps": {}}
    for kind in kinds:
        run_device(kind, args, workload, tutorial_data, out)
    out["crossover"] = crossover(out)
    for kind in kinds:  # the headline: fastest five-epoch time per framework
        for fw in ("torch", "jax"):
            rows = [r for r in out["variants"] if r["device"] == kind and r["framework"] == fw]
            if rows:
                best = min(rows, key=lambda r: r["median_epoch_s"])
                out.setdefault("fastest", {})[f"{fw}-{kind}"] = {
                    "variant": best["variant"], "precision": best["precision"]["mode"],
                    "five_epoch_s": best["five_epoch_s"], "fraction_of_limit": best["fraction_of_limit"]}

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench_{args.device}{'_quick' if args.quick else ''}"
    out["charts"] = [os.path.relpath(pth, out_dir) for pth in charts(out, stem)]
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    print(f"\nwrote {stem.with_suffix('.json')} and {', '.join(out['charts'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
