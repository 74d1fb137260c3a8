"""python -m parity.calibrate: measure each side's float32 error against float64, the source of
every tolerance in ``parity/tolerances.py``.

Both float32 runs start from the same weights (the tutorial's seed-0 init) and are compared with
torch float64 (which agrees with JAX x64 to ~1e-15, ``test_float64.py``). For each quantity it
records the max abs error of torch32 and jax32 against float64, of torch32 against jax32, and the
largest |value| (``scale``, what an ``rtol`` multiplies). ``--json`` writes the numbers with their
provenance (command, machine, versions, threads); the committed ``parity/calibration.json`` is the
file the tolerance pins read.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import jax
import numpy as np
import torch

from . import harness as H
from .compare import flax_activations, torch_activations

CALIBRATION = Path(__file__).with_name("calibration.json")
LOSS_STEPS = (1, 10, 100, 938)


def _max(a, b) -> float:
    if isinstance(a, dict):
        return max(_max(a[k], b[k]) for k in b)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _scale(x) -> float:
    if isinstance(x, dict):
        return max(_scale(v) for v in x.values())
    return float(np.max(np.abs(np.asarray(x, np.float64))))


def record(t32, j32, f64) -> dict[str, float]:
    """One row: each float32 side against float64, torch32 against jax32, and the values' scale."""
    return {"torch32-f64": _max(t32, f64), "jax32-f64": _max(j32, f64), "torch32-jax32": _max(t32, j32),
            "scale": _scale(f64)}


def measure(data_dir: str = "data", epoch: bool = True) -> dict[str, dict[str, float]]:
    """{quantity: record(...)} on the real data; ``epoch=False`` stops after one SGD step (seconds)."""
    train, test = H.real_data(data_dir)
    sd = H.init_state_dict(0)
    params = H.torch_to_flax(sd)
    rng = np.random.default_rng(0)
    batches = {"real batch": (test.x[:64], test.y[:64]),
               "random batch": (rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64))}
    out: dict[str, dict[str, float]] = {}

    for label, (x, y) in batches.items():
        t = H.torch_loss_and_grads(sd, x, y)
        j = H.jax_loss_and_grads(params, x, y)
        f = H.torch_loss_and_grads(sd, x, y, dtype=torch.float64)
        for i, what in enumerate(("logits", "loss", "grads")):
            out[f"{what} ({label})"] = record(t[i], j[i], f[i])
        out[f"activations ({label})"] = record(
            torch_activations(H.torch_model(sd), torch.from_numpy(x)), flax_activations(params, (512, 512), x),
            torch_activations(H.torch_model(sd, torch.float64), torch.from_numpy(x).double()))

    one = H.Split(train.x[:64], train.y[:64])
    _, t_model = H.torch_train(sd, one)
    _, j_state = H.jax_train(params, one)
    _, f_model = H.torch_train(sd, one, dtype=torch.float64)
    out["params after 1 step"] = record(H.state_dict_numpy(t_model), H.params_as_torch_numpy(j_state.params),
                                        H.state_dict_numpy(f_model))

    if epoch:
        t_losses, t_model = H.torch_train(sd, train)
        j_losses, j_state = H.jax_train(params, train)
        f_losses, f_model = H.torch_train(sd, train, dtype=torch.float64)
        for k in LOSS_STEPS:
            out[f"loss, steps 1-{k}"] = record(t_losses[:k], j_losses[:k], f_losses[:k])
        out["params after 1 epoch"] = record(H.state_dict_numpy(t_model), H.params_as_torch_numpy(j_state.params),
                                             H.state_dict_numpy(f_model))
        te = [H.torch_evaluate(t_model, test), H.jax_evaluate(j_state, test), H.torch_evaluate(f_model, test)]
        out["test Avg loss"] = record(te[0][1], te[1][1], te[2][1])
        with torch.no_grad():
            t_logits = t_model(torch.from_numpy(test.x)).numpy()
            f_logits = f_model(torch.from_numpy(test.x).double()).numpy()
        j_logits = np.asarray(j_state.apply_fn({"params": j_state.params}, test.x))
        out["test logits after 1 epoch"] = record(t_logits, j_logits, f_logits)
    return out


def provenance(argv: list[str]) -> dict[str, str | int]:
    """Where and how the numbers were measured."""
    return {"command": "python -m parity.calibrate " + " ".join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "torch_threads": torch.get_num_threads(),
            "versions": f"torch {torch.__version__}, jax {jax.__version__}, numpy {np.__version__}, "
                        f"python {sys.version.split()[0]}"}


def load(path: str | Path = CALIBRATION) -> dict:
    """The committed calibration: {"provenance": {...}, "numbers": {quantity: record}}."""
    return json.loads(Path(path).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.calibrate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--json", default="", help="also write the numbers and their provenance to this file ('' to skip)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    numbers = measure(args.data_dir)
    print(f"| {'quantity':<32} | torch32 vs f64 | jax32 vs f64 | torch32 vs jax32 | max |value| |")
    print(f"|{'-' * 34}|----------------|--------------|------------------|-------------|")
    for name, row in numbers.items():
        print(f"| {name:<32} | {row['torch32-f64']:>14.3e} | {row['jax32-f64']:>12.3e} | "
              f"{row['torch32-jax32']:>16.3e} | {row['scale']:>11.3e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"provenance": provenance(argv), "numbers": numbers}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
