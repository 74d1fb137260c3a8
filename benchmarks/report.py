"""Tables, charts and the generated blocks of the README and docs/ pages, from the JSON the runs write.

``python -m benchmarks.report`` (``make results``; the pages ``README.md docs/results.md
docs/porting.md`` unless ``--page`` names others) rewrites, in every page, the blocks it holds:
between ``<!-- bench:cpu -->`` and ``<!-- /bench:cpu -->`` (and the ``cuda`` and CNN pairs) from
``benchmarks/results/bench_cpu.json`` and ``bench_cuda.json``, the quickstart table
(``results:quickstart:cpu``) from ``benchmarks.quickstart``'s JSON, the GPU parity table
(``results:parity:cuda``) from ``python -m parity --device cuda``'s reports, and the README's
headline ratios (``results:headline``) from the two benchmark runs: no number there is
typed. Links in a block are relative to the page that holds it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .schedule import ARITHMETIC_BOUND  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = {"torch": "tab:red", "jax": "tab:blue"}


# ---------------------------------------------------------------- formatting


def fmt_ratio(r: dict, digits: int = 2) -> str:
    """``median× (min–max)`` of a paired speed-up."""
    return f"{r['median']:.{digits}f}× ({r['min']:.{digits}f}–{r['max']:.{digits}f})"


def fmt_share(r: dict) -> str:
    """A share of the limit: median (min–max; IQR), flagged where it is noisy or above 100%."""
    text = (f"{100 * r['median']:.0f}% ({100 * r['min']:.0f}–{100 * r['max']:.0f}%; "
            f"IQR {100 * r['q1']:.0f}–{100 * r['q3']:.0f}%)")
    if r.get("over_limit"):
        return f"{text} **noisy: above the limit**"
    return f"{text} **noisy**" if r["noisy"] else text


def fmt_spread_s(r: dict) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})"


def machine_line(meta: dict, kind: str) -> str:
    """Which machine and software measured it, and how busy it was."""
    v = meta["versions"]
    where = meta.get("gpu") if kind == "cuda" else f"{meta['cpu_model']} ({meta['cpu_count']} cores)"
    text = (f"{where}; torch {v['torch']}, jax {v['jax']}, flax {v['flax']}, optax {v['optax']}"
            + (f", CUDA {v['cuda']}" if "cuda" in v else "") + f"; timed {meta['timed_at']}")
    if "load_average_at_start" in meta:
        text += (f"; 1-minute load average {meta['load_average_at_start'][0]:.1f} at the start, "
                 f"{meta['load_average_at_end'][0]:.1f} at the end")
    return text


# ---------------------------------------------------------------- tables


def variant_table(dev: dict) -> list[str]:
    """One row per variant: epoch time with its spread, the user's 5-epoch wait, paired ratios."""
    lines = ["| variant | precision | torch threads | epoch s, median (min–max) | 5 epochs as a user waits s "
             "| 5 steady epochs s | samples/s | share of the limit, median (min–max; IQR) "
             "| × tutorial | × tutorial at 1 thread | peak host RSS MiB (added) |"
             + (" peak device MiB |" if dev["device"] == "cuda" else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if dev["device"] == "cuda" else "")]
    for r in dev["variants"]:
        lines.append(
            f"| {r['label']} | {r['precision']} | {r['torch_threads'] or '-'} | {fmt_spread_s(r['epoch'])} "
            f"| {r['five_epochs_end_to_end_s']:.1f} | {r['five_epochs_steady_s']:.1f} | {r['samples_per_s']:,.0f} "
            f"| {fmt_share(r['of_limit'])} | {fmt_ratio(r['vs_tutorial']) if 'vs_tutorial' in r else '-'} "
            f"| {fmt_ratio(r['vs_tutorial_1thread']) if 'vs_tutorial_1thread' in r else '-'} | {fmt_memory(r)} |"
            + (f" {fmt_device_memory(r)} |" if dev["device"] == "cuda" else ""))
    return lines


def fmt_memory(r: dict) -> str:
    """Peak host RSS of the process while the variant was built and warmed up, and what it added; '-' when
    the run did not record it (runs before memory was measured, or an OS that cannot reset the peak)."""
    m = r.get("memory") or {}
    if "peak_rss" not in m:
        return "-"
    return f"{m['peak_rss'] / 2**20:,.0f} (+{m['peak_rss_increase'] / 2**20:,.0f})"


def fmt_device_memory(r: dict) -> str:
    m = r.get("memory") or {}
    if "device_peak" not in m:
        return "-"
    added = m.get("device_peak_increase", m.get("device_in_use_increase"))
    return f"{m['device_peak'] / 2**20:,.0f}" + (f" (+{added / 2**20:,.0f})" if added is not None else "")


def pair_table(dev: dict) -> list[str]:
    lines = ["| comparison | speed-up, median of paired rounds (min–max) | IQR | |", "|---|---|---|---|"]
    for p in dev["pairs"]:
        flag = "**noisy**" if p["noisy"] else ""
        lines.append(f"| {p['faster']} over {p['baseline']} | {fmt_ratio(p)} | {p['q1']:.2f}–{p['q3']:.2f} | {flag} |")
    return lines


def limit_lines(dev: dict) -> list[str]:
    out = []
    for precision, lim in dev["limit"].items():
        g = lim["gflops"]
        text = (f"limit ({dev['device']}, {precision}): {g['median']:.1f} GFLOP/s "
                f"({g['min']:.1f}–{g['max']:.1f} over the rounds) — {lim['method']}")
        if lim.get("datasheet_gflops"):
            text += f"; data-sheet dense peak of {lim['datasheet']}: {lim['datasheet_gflops']:,.0f} GFLOP/s (context only)"
        out.append(text)
    return out


def markdown(out: dict) -> str:
    """The whole run as markdown: per device the variants, the pairs, the limit, threads, sweeps."""
    meta = out["meta"]
    lines = [f"{meta['samples']:,} samples per epoch, batch {meta['batch_size']}, {meta['rounds']} interleaved rounds; "
             f"noisy = IQR of the paired ratio above {100 * meta['noisy_rel_iqr']:.0f}% of its median"]
    for kind, dev in out["devices"].items():
        lines += ["", f"## {kind}: {machine_line(meta, kind)}", ""] + variant_table(dev) + [""] + pair_table(dev) + [""]
        lines += limit_lines(dev)
        for row in dev["thread_study"]:
            e = row["epoch_equivalent_s"]
            chosen = "  <- chosen" if row["threads"] == dev["torch_threads"] else ""
            lines.append(f"torch-eager with {row['threads']} thread(s): {fmt_spread_s(e)} s/epoch "
                         f"(first {row['probe_steps']} steps, scaled){chosen}")
        if dev["sweeps"]:
            lines += ["", f"sweep ({kind}): samples/s, median (min–max)",
                      "| variant | batch | hidden | samples/s | GFLOP/s |", "|---|---|---|---|---|"]
            lines += [f"| {r['variant']} | {r['batch_size']} | {r['hidden']} | {r['samples_per_s']['median']:,.0f} "
                      f"({r['samples_per_s']['min']:,.0f}–{r['samples_per_s']['max']:,.0f}) | {r['gflops']:.1f} |"
                      for r in dev["sweeps"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- charts


def _rows(out: dict) -> list[dict]:
    many = len(out["devices"]) > 1
    rows = []
    for kind, dev in out["devices"].items():
        for r in dev["variants"]:
            tag = f"{r['key']}" + (f" [{kind}]" if many else "")
            rows.append({**r, "tag": tag})
    return rows


def _title(out: dict) -> str:
    meta = out["meta"]
    where = " / ".join(filter(None, [meta["cpu_model"] if "cpu" in out["devices"] else None, meta.get("gpu")]))
    return (f"{meta['model'].upper()} training epoch: {meta['samples']:,} samples, batch {meta['batch_size']}, "
            f"median of {meta['rounds']} interleaved rounds (whiskers: min–max)\n{where}"
            + ("  [--quick subset]" if meta["quick"] else ""))


def charts(out: dict, stem: Path) -> list[str]:
    """``<stem>_epoch.png`` (epoch time and share of the limit per variant) and, with sweeps,
    ``<stem>_sweep.png``. Returns the paths."""
    paths = [str(stem.with_name(stem.name + "_epoch.png"))]
    rows = _rows(out)
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(13, 0.5 * len(rows) + 2.2), sharey=True)
    y = list(range(len(rows)))
    colors = [COLORS[r["framework"]] for r in rows]
    med = [r["epoch"]["median"] for r in rows]
    err = [[m - r["epoch"]["min"] for m, r in zip(med, rows, strict=True)],
           [r["epoch"]["max"] - m for m, r in zip(med, rows, strict=True)]]
    ax_t.barh(y, med, xerr=err, color=colors, capsize=3, ecolor="black")
    for i, r in enumerate(rows):
        ax_t.text(r["epoch"]["max"], i, f"  {r['epoch']['median']:.2f} s", va="center", fontsize=8)
    ax_t.set_xlim(0, max(r["epoch"]["max"] for r in rows) * 1.25)
    ax_t.set_xlabel("seconds per epoch (linear axis from 0)")
    ax_t.set_yticks(y, [r["tag"] for r in rows])
    ax_t.invert_yaxis()

    share = [100 * r["of_limit"]["median"] for r in rows]
    s_err = [[s - 100 * r["of_limit"]["min"] for s, r in zip(share, rows, strict=True)],
             [100 * r["of_limit"]["max"] - s for s, r in zip(share, rows, strict=True)]]
    bars = ax_l.barh(y, share, xerr=s_err, color=colors, capsize=3, ecolor="black")
    for bar, r in zip(bars, rows, strict=True):
        if r["of_limit"]["over_limit"] or r["of_limit"]["noisy"]:
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    for i, r in enumerate(rows):
        label = f"  {100 * r['of_limit']['median']:.0f}%"
        if r["of_limit"]["over_limit"]:
            label += " noisy (>100%)"
        elif r["of_limit"]["noisy"]:
            label += " noisy"
        ax_l.text(100 * r["of_limit"]["max"], i, label, va="center", fontsize=8)
    ax_l.axvline(100, color="grey", ls=":", lw=1)
    ax_l.set_xlim(0, max(110, max(100 * r["of_limit"]["max"] for r in rows) * 1.3))
    ax_l.set_xlabel("share of the measured matmul limit, % (paired per round)")
    handles = [Patch(color=c, label=fw) for fw, c in COLORS.items() if any(r["framework"] == fw for r in rows)]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="noisy (IQR or >100%)"))
    # Below both panels: inside either it covers a bar's label whichever corner it takes.
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(_title(out), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    sweeps = [r for dev in out["devices"].values() for r in dev["sweeps"]]
    if sweeps:
        paths.append(str(stem.with_name(stem.name + "_sweep.png")))
        shares = all("of_limit" in r for r in sweeps)  # runs before the per-point limit have throughput only
        fig, grid = plt.subplots(2 if shares else 1, 2, figsize=(13, 8.6 if shares else 4.8), squeeze=False)
        width0 = out["meta"]["hidden"][0]
        panels = (("batch_size", lambda r: r["hidden"] == width0, f"batch size (hidden {width0}; log2 axis)"),
                  ("hidden", lambda r: r["batch_size"] == 64, "hidden width (batch 64; log2 axis)"))
        measures = [("samples_per_s", 1, "training samples / s (linear axis from 0)")]
        if shares:
            measures.append(("of_limit", 100, "share of this point's measured limit, % (median, min–max)"))
        for row_i, (field, scale, ylabel) in enumerate(measures):
            for col, (xkey, keep, xlabel) in enumerate(panels):
                ax = grid[row_i][col]
                series = sorted({(r["device"], r["framework"], r["variant"]) for r in sweeps})
                for kind, fw, name in series:
                    pts = sorted((r[xkey], r[field]) for r in sweeps
                                 if keep(r) and (r["device"], r["framework"], r["variant"]) == (kind, fw, name))
                    if not pts:
                        continue
                    xs = [p[0] for p in pts]
                    ms = [scale * p[1]["median"] for p in pts]
                    ax.errorbar(xs, ms,
                                yerr=[[m - scale * p[1]["min"] for m, p in zip(ms, pts, strict=True)],
                                      [scale * p[1]["max"] - m for m, p in zip(ms, pts, strict=True)]],
                                fmt="-o" if kind == "cpu" else "--s", color=COLORS[fw], capsize=3,
                                label=f"{name} ({kind})")
                if field == "of_limit":
                    ax.axhline(100 * ARITHMETIC_BOUND, color="grey", ls=":", lw=1)
                    ax.text(ax.get_xlim()[0], 100 * ARITHMETIC_BOUND, f" {100 * ARITHMETIC_BOUND:.0f}%: bound by "
                            "arithmetic above", fontsize=7, va="bottom", color="grey")
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted({r[xkey] for r in sweeps if keep(r)}),
                              [str(x) for x in sorted({r[xkey] for r in sweeps if keep(r)})])
                ax.minorticks_off()
                ax.set_ylim(bottom=0)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=8)
        rounds = max(r["rounds"] for r in sweeps)
        fig.suptitle("Throughput and share of the limit of the fastest variant per framework against batch size and width: "
                     f"median of {rounds} interleaved rounds per point (whiskers: min–max)"
                     + ("  [--quick subset]" if out["meta"]["quick"] else ""), fontsize=9)
        fig.tight_layout()
        fig.savefig(paths[1], dpi=110)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------- README


def section(data: dict, kind: str, json_path: str, charts_dir: str = "benchmarks/results") -> str:
    """A page's benchmark block for one device, from a run's JSON (``charts_dir``: the charts' folder
    as the page links it)."""
    if "devices" not in data:
        return legacy_section(data, kind, json_path, charts_dir)
    meta, dev = data["meta"], data["devices"][kind]
    lines = [f"Measured on **{machine_line(meta, kind)}** with `{meta['command']}` "
             f"([JSON]({json_path})): {meta['samples']:,} samples per epoch, batch {meta['batch_size']}, "
             f"torch with {dev['torch_threads']} intra-op thread(s), {meta['rounds']} interleaved rounds after every "
             f"warm-up. Each ratio is taken within a round and given as the median over the rounds with its "
             f"min–max; a share whose interquartile range exceeds {100 * meta['noisy_rel_iqr']:.0f}% of its median is "
             f"marked noisy. \"5 epochs as a user waits\" is set-up + the first epoch (compilation included) + "
             f"4 median epochs." + (" The measured thread count is 1, so the tutorial at 1 thread and at the "
                                     "chosen count are one and the same unit." if dev["torch_threads"] == 1 else ""), ""]
    lines += variant_table(dev) + [""] + pair_table(dev) + [""]
    lines += [f"- {line}" for line in limit_lines(dev)]
    for row in dev["thread_study"]:
        chosen = " (chosen)" if row["threads"] == dev["torch_threads"] else ""
        lines.append(f"- torch-eager at {row['threads']} thread(s): {fmt_spread_s(row['epoch_equivalent_s'])} s/epoch"
                     f" from its first {row['probe_steps']} steps{chosen}")
    lines.append("")
    lines += sweep_lines(dev, meta)
    lines += [f"![epoch time and share of the limit]({charts_dir}/{c})" for c in data.get("charts", [])]
    return "\n".join(lines)


def sweep_lines(dev: dict, meta: dict) -> list[str]:
    """The sweeps as a table (epoch-equivalent time and share of each point's own limit), and where each
    framework's step becomes bound by arithmetic."""
    rows = [r for r in dev.get("sweeps", []) if "of_limit" in r]
    if not rows:
        return []
    lines = [f"Sweeps ({len(rows) // max(1, len({r['framework'] for r in rows}))} points per framework, "
             f"{rows[0]['rounds']} interleaved rounds each, the point's own limit probes in the same rounds):", "",
             "| variant | batch | hidden | s per 60,000 samples | GFLOP/s | share of the point's limit |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['batch_size']} | {r['hidden']} | {r['epoch_s_equivalent']:.2f} | {r['gflops']:.1f} "
              f"| {fmt_share(r['of_limit'])} |" for r in rows]
    bound = dev.get("arithmetic_bound_from") or {}
    words = {"batch_size": f"batch size (width {meta['hidden'][0]})", "hidden": "width (batch 64)"}
    for fw, axes in bound.items():
        said = [f"from {words[a]} {v}" if v is not None else f"nowhere in the {words[a]} sweep" for a, v in axes.items()]
        lines.append(f"- {fw}: bound by arithmetic (at or above {100 * ARITHMETIC_BOUND:.0f}% of the limit from that "
                     f"point on) {' and '.join(said)}")
    return lines + [""]


def legacy_section(data: dict, kind: str, json_path: str, charts_dir: str = "benchmarks/results") -> str:
    """A run written before interleaved rounds: one sequence of epochs per variant, no spread."""
    meta = data["meta"]
    lines = [f"Measured on **{machine_line(meta, kind)}** ([JSON]({json_path})) by the earlier benchmark, which "
             f"timed each variant's {meta['steady_epochs']} epochs back to back (no interleaving, no spread): "
             f"re-run `python -m benchmarks.run --device {kind}` to replace it. "
             + ("Shares are of the data-sheet dense peak of the row's precision (FP32 or TF32 tensor cores), "
                "not of a measured limit." if kind == "cuda" else "Shares are of the matmul limit measured once in "
                "that run."), "",
             f"| variant | precision | warm-up s | epoch s (median) | 5 epochs as a user waits s | samples/s "
             f"| {'of data-sheet peak' if kind == 'cuda' else 'of the limit'} |",
             "|---|---|---|---|---|---|---|"]
    for r in data["variants"]:
        if r["device"] != kind:
            continue
        frac = r.get("fraction_of_limit")
        lines.append(f"| {r['variant']} | {r['precision']['mode']} | {r['warmup_s']:.2f} | {r['median_epoch_s']:.3f} "
                     f"| {r.get('build_s', 0) + r['warmup_s'] + 4 * r['median_epoch_s']:.2f} | {r['samples_per_s']:,.0f} "
                     f"| {'n/a' if frac is None else f'{100 * frac:.2f}%'} |")
    lines.append("")
    lines += [f"![epoch time per variant]({charts_dir}/{c})" for c in data.get("charts", [])]
    return "\n".join(lines)


def quickstart_section(data: dict, json_path: str) -> str:
    """The README's quickstart table, from ``python -m benchmarks.quickstart``'s JSON."""
    t, j = data["sides"]["reference_torch"], data["sides"]["jax_impl"]
    v = data["versions"]
    lines = [f"`{t['command']}` and `{j['command']}` on **{data['cpu_model']} ({data['cpu_count']} cores); torch "
             f"{v['torch']}, jax {v['jax']}, flax {v['flax']}, optax {v['optax']}; run {data['timed_at']}** "
             f"([JSON]({json_path}), logs: [torch]({Path(json_path).parent / t['log']}), "
             f"[JAX]({Path(json_path).parent / j['log']})). Each side draws its own seed-0 initial weights "
             "(torch's generator, JAX's key), so the columns differ by the initialisation; `python -m parity` "
             "starts both from the same weights.", "",
             "| epoch | torch accuracy | torch Avg loss | JAX accuracy | JAX Avg loss |", "|---|---|---|---|---|"]
    for a, b in zip(t["epochs"], j["epochs"], strict=True):
        lines.append(f"| {a['epoch']} | {a['accuracy_pct']:.1f}% | {a['avg_loss']:.6f} "
                     f"| {b['accuracy_pct']:.1f}% | {b['avg_loss']:.6f} |")
    return "\n".join(lines)


def parity_gpu_section(runs: dict[str, dict], paths: dict[str, str]) -> str:
    """The README's GPU parity lines, from ``python -m parity --device cuda``'s JSON reports (one per precision)."""
    lines = ["| precision | device | epochs | accuracy torch / JAX (last epoch) | largest accuracy gap (any epoch) "
             "| largest per-step loss gap | largest parameter gap | verdict |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in runs.items():
        last = r["epochs"][-1]
        acc_gap = max(abs(e["torch_accuracy"] - e["jax_accuracy"]) for e in r["epochs"])
        lines.append(f"| [{mode}]({paths[mode]}) | {r['torch_device']} | {last['epoch']} "
                     f"| {100 * last['torch_accuracy']:.2f}% / {100 * last['jax_accuracy']:.2f}% "
                     f"| {100 * acc_gap:.2f} points "
                     f"| {r['max_step_loss_diff']:.1e} | {r['max_param_diff']:.1e} "
                     f"| {'PASS' if r['ok'] else 'FAIL: ' + '; '.join(r['failures'])} |")
    return "\n".join(lines)


def torch_profile_section(out: dict) -> str:
    """``python -m benchmarks.profile_torch``'s JSON as markdown: the ladder, the profiler's split, the OpenMP settings."""
    m = out["meta"]
    lines = [f"torch {m['torch']} eager step, batch {m['batch_size']}, {m['torch_threads']} thread(s), {m['cpu_model']} "
             f"({m['cpu_count']} cores); {m['rounds']} interleaved rounds of {m['steps']} steps", "",
             "| rung | ms/step, median (min–max) | extra over the rung above | share of the matmul probe |",
             "|---|---|---|---|"]
    prev = None
    for row in out["ladder"]:
        ms = row["ms_per_step"]
        extra = "" if prev is None or row["rung"] == "manual" else f"{ms['median'] - prev:+.2f} ms"
        lines.append(f"| {row['rung']} | {ms['median']:.2f} ({ms['min']:.2f}–{ms['max']:.2f}) | {extra} | "
                     f"{row['of_limit']:.0%} |")
        if row["rung"] != "manual":
            prev = ms["median"]
    p = out["profile"]
    lines += ["", f"torch.profiler, self CPU ms per step over {p['steps']} steps (profiled wall "
                  f"{p['wall_ms_per_step_profiled']:.2f} ms/step; {p['outside_phases_ms_per_step']:.2f} ms outside the "
                  "five phases)", "", "| op group | ms/step |", "|---|---|"]
    lines += [f"| {g} | {v:.3f} |" for g, v in p["groups_self_ms_per_step"].items()]
    lines += ["", "| phase (all under it) | ms/step |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in p["phases_ms_per_step"].items()]
    if out.get("openmp_settings"):
        lines += ["", "The whole step in a fresh process per OpenMP setting (interleaved rounds):", "",
                  "| setting | ms/step, median (min–max) |", "|---|---|"]
        lines += [f"| {e['setting']} | {e['ms_per_step']['median']:.2f} ({e['ms_per_step']['min']:.2f}–"
                  f"{e['ms_per_step']['max']:.2f}) |" for e in out["openmp_settings"]]
    return "\n".join(lines)


# The README's headline ratios (faster, baseline), looked up in each device's paired rounds (fp32 on the GPU);
# then the fastest variant of each framework against the other's, whichever they are in that run (runs recorded
# before variants carried ``tutorial`` as data are read by the tutorial's name).
HEADLINE = (("torch-eager", "torch-tutorial"),)


def headline_section(runs: dict[str, tuple[dict, str]]) -> str:
    """One line per device (``{kind: (run JSON, its link)}``): the machine and the HEADLINE ratios it measured."""
    lines = []
    for kind, (data, link) in runs.items():
        meta, dev = data["meta"], data["devices"][kind]
        pairs = {(p["faster"].removesuffix("/fp32"), p["baseline"].removesuffix("/fp32")): p for p in dev["pairs"]}
        found = [f"{a} {fmt_ratio(pairs[a, b])} over {b}" for a, b in HEADLINE if (a, b) in pairs]
        fastest = sorted((min((r for r in dev["variants"] if r["framework"] == fw and r["precision"] == "fp32"
                               and not r.get("tutorial", r["variant"] == "torch-tutorial")),
                              key=lambda r: r["epoch"]["median"], default=None) for fw in COLORS),
                         key=lambda r: r["epoch"]["median"] if r else 0)
        if all(fastest) and (best := pairs.get((fastest[0]["key"].removesuffix("/fp32"),
                                                 fastest[1]["key"].removesuffix("/fp32")))):
            found.append(f"the fastest of each framework, {best['faster'].removesuffix('/fp32')} "
                         f"{fmt_ratio(best)} over {best['baseline'].removesuffix('/fp32')}")
        where = meta["gpu"] if kind == "cuda" else f"{meta['cpu_model']}, {meta['cpu_count']} cores"
        lines.append(f"- **{kind.upper()}** ({where}; [JSON]({link})): {'; '.join(found)} "
                     "(median of paired rounds, min–max).")
    return "\n".join(lines)


# (marker name, device kind, JSON file, required): ``<!-- bench:NAME -->`` blocks, in one of the pages.
BLOCKS = (("cpu", "cpu", "bench_cpu.json", True), ("cuda", "cuda", "bench_cuda.json", True),
          ("cnn:cpu", "cpu", "bench_cnn_cpu.json", False), ("cnn:cuda", "cuda", "bench_cnn_cuda.json", False))


# The pages holding generated blocks, as ``make results`` rewrites them from the repository's root.
PAGES = ("README.md", "docs/results.md", "docs/porting.md")


def rewrite_pages(pages: list[Path], results: Path = RESULTS) -> dict[Path, list[str]]:
    """Replace, in each page, every generated block it holds whose JSON exists; returns the names
    rewritten per page. The MLP's ``bench:cpu`` and ``bench:cuda`` markers must be in one of the pages
    (the CNN's are optional)."""
    texts = {page: page.read_text() for page in pages}
    for name, _, _, required in BLOCKS:
        begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        if required and not any(begin in t and end in t for t in texts.values()):
            raise ValueError(f"{', '.join(map(str, pages))}: markers {begin} ... {end} not found")
    done: dict[Path, list[str]] = {}
    for page, text in texts.items():
        done[page] = []
        for name, kind, file, _ in BLOCKS:
            path = results / file
            begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
            if begin in text and end in text and path.exists():
                text = _replace_block(text, begin, end, section(json.loads(path.read_text()), kind, _rel(path, page),
                                                                _rel(results, page)))
                done[page].append(name)
        extra = {"results:quickstart:cpu": _quickstart_block, "results:parity:cuda": _parity_gpu_block,
                 "results:headline": _headline_block, "results:torch_profile:cpu": _torch_profile_block}
        for name, make in extra.items():
            begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
            if begin in text and end in text and (block := make(page, results)) is not None:
                text = _replace_block(text, begin, end, block)
                done[page].append(name)
        page.write_text(text)
    return done


def rewrite_readme(readme: Path, results: Path = RESULTS) -> list[str]:
    """``rewrite_pages`` of the one page ``readme``."""
    return rewrite_pages([readme], results)[readme]


def _replace_block(text: str, begin: str, end: str, block: str) -> str:
    new = f"{begin}\n{block}\n{end}"  # a function, not a template: the block's backslashes stay as written
    return re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: new, text, flags=re.S)


def _rel(path: Path, page: Path) -> str:
    """``path`` as a link from ``page``: relative (``../benchmarks/...`` from docs/), in ``/`` form."""
    return Path(os.path.relpath(path.resolve(), page.resolve().parent)).as_posix()


def _quickstart_block(readme: Path, results: Path) -> str | None:
    path = results / "cpu" / "quickstart_cpu.json"
    return quickstart_section(json.loads(path.read_text()), _rel(path, readme)) if path.exists() else None


def _torch_profile_block(page: Path, results: Path) -> str | None:
    """Every ``torch_profile_<N>t.json`` (one per thread count), each with its link."""
    paths = sorted((results / "cpu").glob("torch_profile_*t.json"))
    return "\n\n".join(f"[JSON]({_rel(p, page)}): " + torch_profile_section(json.loads(p.read_text()))
                       for p in paths) if paths else None


def _headline_block(page: Path, results: Path) -> str | None:
    runs = {kind: results / f"bench_{kind}.json" for kind in ("cpu", "cuda")}
    runs = {k: (json.loads(p.read_text()), _rel(p, page)) for k, p in runs.items() if p.exists()}
    return headline_section({k: r for k, r in runs.items() if "devices" in r[0]}) if runs else None


def _parity_gpu_block(readme: Path, results: Path) -> str | None:
    paths = {mode: results / "h100" / f"parity_gpu_{mode}.json" for mode in ("strict", "default")}
    if not all(p.exists() for p in paths.values()):
        return None
    return parity_gpu_section({m: json.loads(p.read_text()) for m, p in paths.items()},
                              {m: _rel(p, readme) for m, p in paths.items()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--page", "--readme", dest="pages", nargs="+", default=list(PAGES),
                   help="the pages whose generated blocks are rewritten (--readme: the earlier name)")
    p.add_argument("--results", default=str(RESULTS), help="folder holding bench_cpu.json and bench_cuda.json")
    a = p.parse_args(argv)
    try:
        done = rewrite_pages([Path(page) for page in a.pages], Path(a.results))
    except (OSError, ValueError, KeyError) as e:
        print(f"{p.prog}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for page, names in done.items():
        print(f"{page}: rewrote the blocks {', '.join(names) or 'none (no JSON found)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
