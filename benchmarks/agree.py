"""python -m benchmarks.agree A.json B.json: do two benchmark runs tell the same story?

For every paired ratio both runs report (each comparison between variants, each variant's speed-up
over the tutorial and its share of the limit), the two medians and their spreads (min–max over the
rounds) side by side. Two runs *agree* on a ratio when each run's median lies inside the other's
min–max: the difference between the runs is then no larger than the round-to-round spread within
either. The weaker reading, that the two min–max ranges overlap, is shown beside it. Exit 0 when
they agree on every ratio (the strict reading), 1 otherwise (2 for a bad file, or two runs that
measured different things: another model, widths, batch size, sample count, round count or device,
or the same run twice).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from quickstart_parity_common.cli import Parser

# The settings two runs must share for their ratios to measure the same thing (benchmarks.run's meta).
COMPARABLE = ("model", "hidden", "batch_size", "samples", "rounds", "quick")


def ratios(run: dict) -> dict[str, dict]:
    """``{name: spread}`` of every paired ratio in a ``benchmarks.run`` JSON, all devices."""
    out = {}
    for kind, dev in run["devices"].items():
        for p in dev.get("pairs", []):
            out[f"{kind}: {p['what']}"] = p
        for r in dev.get("variants", []):
            for field, what in (("vs_tutorial", "over the tutorial"), ("of_limit", "share of the limit")):
                if r.get(field):
                    out[f"{kind}: {r['key']} {what}"] = r[field]
    return out


def agree(a: dict, b: dict) -> bool:
    """Each median inside the other's min–max (NaN or a missing field: no agreement)."""
    try:
        return bool(b["min"] <= a["median"] <= b["max"] and a["min"] <= b["median"] <= a["max"])
    except (KeyError, TypeError):
        return False


def overlap(a: dict, b: dict) -> bool:
    """The two min–max ranges share a point (NaN or a missing field: no)."""
    try:
        values = (a["min"], a["max"], b["min"], b["max"])
        # max()/min() with a NaN depend on argument order: refuse NaN first
        return all(math.isfinite(v) for v in values) and bool(max(a["min"], b["min"]) <= min(a["max"], b["max"]))
    except (KeyError, TypeError):
        return False


def compare(run_a: dict, run_b: dict) -> list[dict]:
    """One row per ratio present in both runs, in run A's order."""
    ra, rb = ratios(run_a), ratios(run_b)
    return [{"ratio": k, "a": ra[k], "b": rb[k], "agree": agree(ra[k], rb[k]), "overlap": overlap(ra[k], rb[k])}
            for k in ra if k in rb]


def incomparable(run_a: dict, run_b: dict, names: tuple[str, str]) -> str | None:
    """Why two runs' ratios cannot be compared (None if they can): one run twice agrees with itself
    whatever it measured, and runs of other settings differ for that reason, not by noise."""
    meta = [run.get("meta") for run in (run_a, run_b)]
    for name, m in zip(names, meta, strict=True):
        if not isinstance(m, dict):
            return f"{name}: no meta (not a benchmarks.run JSON)"
    if meta[0] == meta[1]:
        return f"{names[0]} and {names[1]} hold the same run (timed at {meta[0].get('timed_at')}): it agrees with itself"
    for field in COMPARABLE:
        if meta[0].get(field) != meta[1].get(field):
            return (f"not comparable: {field} is {meta[0].get(field)!r} in {names[0]} but {meta[1].get(field)!r} "
                    f"in {names[1]}")
    devices = [sorted(run["devices"]) for run in (run_a, run_b)]
    if devices[0] != devices[1]:
        return f"not comparable: devices {devices[0]} in {names[0]} but {devices[1]} in {names[1]}"
    return None


def table(rows: list[dict], names: tuple[str, str]) -> str:
    def cell(r):
        return f"{r['median']:.3g} ({r['min']:.3g}–{r['max']:.3g})"

    lines = [f"| ratio | {names[0]}: median (min–max) | {names[1]}: median (min–max) | agree | ranges overlap |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['ratio']} | {cell(r['a'])} | {cell(r['b'])} | {'yes' if r['agree'] else '**no**'} "
              f"| {'yes' if r['overlap'] else '**no**'} |" for r in rows]
    n, m = sum(r["agree"] for r in rows), sum(r["overlap"] for r in rows)
    lines.append(f"\n{n}/{len(rows)} paired ratios agree (each run's median inside the other's min–max over its rounds); "
                 f"{m}/{len(rows)} have overlapping min–max ranges")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = Parser(prog="python -m benchmarks.agree", description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="the first run's JSON (python -m benchmarks.run writes bench_<device>.json)")
    p.add_argument("b", help="the second run's JSON")
    args = p.parse_args(argv)
    runs = []
    for path in (args.a, args.b):
        try:
            runs.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as e:
            print(f"python -m benchmarks.agree: error: {path}: {e}", file=sys.stderr)
            return 2
    if Path(args.a).resolve() == Path(args.b).resolve():
        print(f"python -m benchmarks.agree: error: {args.a} twice: a run always agrees with itself", file=sys.stderr)
        return 2
    try:
        why = incomparable(*runs, (args.a, args.b))
        rows = [] if why else compare(*runs)
    except (KeyError, TypeError, AttributeError) as e:
        print(f"python -m benchmarks.agree: error: not a benchmarks.run JSON (missing {e})", file=sys.stderr)
        return 2
    if why:
        print(f"python -m benchmarks.agree: error: {why}", file=sys.stderr)
        return 2
    if not rows:
        print("python -m benchmarks.agree: error: the two runs share no paired ratio", file=sys.stderr)
        return 2
    print(table(rows, (Path(args.a).name, Path(args.b).name)))
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
