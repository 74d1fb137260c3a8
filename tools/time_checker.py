"""python -m tools.time_checker: how long the port checker takes on the real pairs (a benchmark, not a test).

Times ``check_port`` on HF GPT-2 tiny (2 layers, width 64, Adam, 2 steps) and on torchvision's resnet18 against its
NNX port (1 SGD step): the first call in a fresh process (what a user waits: JAX compiles every op it meets), then
``--repeats`` more, and writes
``benchmarks/results/cpu/checker_cpu.json`` with the machine, the versions and every time. The tools folder, not
``benchmarks/``, since it times the referee itself (``benchmarks`` never imports ``parity``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _gpt2():
    from examples.ports import gpt2  # noqa: PLC0415 -- transformers loads only when this pair is timed
    from parity import Adam  # noqa: PLC0415

    model = gpt2.make_torch(0)
    module, variables = gpt2.make_flax(model)
    kwargs = dict(steps=2, flax_inputs=gpt2.flax_inputs, optimizer=Adam(1e-3), **gpt2.CHECK)
    return model, module, variables, gpt2.sample_inputs(0), kwargs


def _resnet18():
    from examples.ports import torchvision_resnet as tv  # noqa: PLC0415

    model = tv.make_torch(0)
    port, _ = tv.make_flax(model)
    kwargs = dict(steps=1, flax_inputs=tv.flax_inputs, **tv.CHECK)
    return model, port, None, tv.sample_inputs(0), kwargs


PAIRS = {"gpt2-tiny": _gpt2, "resnet18-nnx": _resnet18}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.time_checker", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cpu" / "checker_cpu.json"))
    a = p.parse_args(argv)
    if a.repeats < 1:
        print(f"{p.prog}: error: --repeats must be >= 1", file=sys.stderr)
        return 2
    from parity import check_port  # noqa: PLC0415 -- after the flags are checked

    results = {}
    for name, make in PAIRS.items():
        model, port, variables, batch, kwargs = make()
        start = time.perf_counter()
        check_port(model, port, variables, batch, **kwargs)  # the first call: JAX compiles each op it meets
        first = time.perf_counter() - start
        times, verdicts = [], []
        for _ in range(a.repeats):
            start = time.perf_counter()
            report = check_port(model, port, variables, batch, **kwargs)
            times.append(time.perf_counter() - start)
            verdicts.append(report.ok)
        results[name] = {"first_call_s": first, "seconds": times, "median_s": statistics.median(times),
                         "checks": len(report.checks), "ok": verdicts}
        print(f"{name}: first call {first:.1f} s, then median {statistics.median(times):.1f} s over {a.repeats} "
              f"({len(report.checks)} checks)", flush=True)
    from benchmarks.limits import cpu_model  # noqa: PLC0415 -- the machine's name as the benchmarks write it
    from benchmarks.quickstart import versions  # noqa: PLC0415

    meta = {"machine": f"{cpu_model()} ({os.cpu_count()} cores)", "platform": platform.platform(),
            "versions": versions(), "loadavg": os.getloadavg(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(a.out).write_text(json.dumps({"meta": meta, "pairs": results}, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
