"""python -m benchmarks.quickstart: both quickstart CLIs run as a user runs them, their results kept as JSON.

Runs ``python -m reference_torch`` and then ``python -m jax_impl`` (one after the other, never at
once), keeps each one's printed output in ``<out>/quickstart_<side>.log`` and writes
``<out>/quickstart_<device>.json``: the machine, the versions, the commands, and each epoch's test
accuracy and Avg loss read back from the tutorial's printed lines. ``make results`` renders the
quickstart table of docs/results.md from that JSON, so no accuracy or loss there is typed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quickstart_parity_common.cli import HelpFormatter, Parser, out_dir, positive_int

from .limits import cpu_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIDES = ("reference_torch", "jax_impl")
# quickstart_parity_common.report.test_line: "Test Error: \n Accuracy: 49.5%, Avg loss: 2.162514 \n"
TEST_LINE = re.compile(r"Accuracy: *([0-9.]+)%, Avg loss: *([0-9.]+|nan|inf)")


def parse_epochs(text: str) -> list[dict]:
    """Every "Accuracy: ..%, Avg loss: .." line of a quickstart's output, in order, as numbers."""
    return [{"epoch": i + 1, "accuracy_pct": float(a), "avg_loss": float(b)}
            for i, (a, b) in enumerate(TEST_LINE.findall(text))]


def versions() -> dict[str, str]:
    """The installed versions, read from package metadata (neither framework is imported here)."""
    out = {}
    for name in ("torch", "jax", "flax", "optax", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def run_side(side: str, args: list[str], log: Path, progress=print, save: Path | None = None) -> dict:
    """``python -m <side> <args> [--save save]`` in a subprocess, its stdout and stderr kept in ``log``;
    raises RuntimeError with the last line of its output when it fails. The recorded command names
    the save file without its (temporary) folder."""
    shown = [*args, "--save", save.name] if save else args
    cmd = [sys.executable, "-m", side, *args, *(["--save", str(save)] if save else [])]
    progress(f"running python -m {side} {' '.join(shown)} ...")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        last = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise RuntimeError(f"python -m {side} exited with {proc.returncode}: {last[-1] if last else ''}")
    epochs = parse_epochs(proc.stdout)
    if not epochs:
        raise RuntimeError(f"python -m {side} printed no test line (see {log})")
    progress(f"  {side}: {len(epochs)} epochs, last accuracy {epochs[-1]['accuracy_pct']}% in {wall:.0f} s")
    return {"command": "python -m " + " ".join([side, *shown]), "epochs": epochs, "wall_s": wall,
            "log": log.name}


def record(epochs: int, device: str, data_dir: str, out_dir: Path, progress=print) -> dict:
    """Both quickstarts, then the JSON (``out_dir/quickstart_<device>.json``); returns what it wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": sys.version.split()[0], "versions": versions(), "device": device,
        "timed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sides": {},
    }
    with tempfile.TemporaryDirectory() as tmp:  # the saved models are not results
        for side, suffix in zip(SIDES, (".pth", ".msgpack"), strict=True):
            args = ["--epochs", str(epochs), "--device", device, "--data-dir", data_dir]
            result["sides"][side] = run_side(side, args, out_dir / f"quickstart_{side}.log", progress,
                                             save=Path(tmp) / f"model{suffix}")
    path = out_dir / f"quickstart_{device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    progress(f"wrote {path}")
    return result


def main(argv=None) -> int:
    p = Parser(prog="python -m benchmarks.quickstart", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs of each quickstart")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the device both sides train on")
    p.add_argument("--data-dir", default="data", help="FashionMNIST folder (torchvision layout)")
    p.add_argument("--out-dir", default="", help="folder for the logs and quickstart_<device>.json "
                   "('': benchmarks/results/<device>)")
    a = p.parse_args(argv)
    try:  # the default folder too, before the two runs
        out_dir(a.out_dir or str(RESULTS / a.device))
    except argparse.ArgumentTypeError as e:
        p.error(f"argument --out-dir: {e}")
    try:
        record(a.epochs, a.device, a.data_dir, Path(a.out_dir or RESULTS / a.device))
    except (OSError, RuntimeError) as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
