"""python -m parity.calibrate: measure each side's float32 error against float64, the source of
the tolerances written in the parity tests.

Both float32 runs start from the same weights (the tutorial's seed-0 init) and are compared with
torch float64 (which agrees with JAX x64 to ~1e-15, ``test_float64.py``). Prints the max abs error
of logits, loss, gradients, one SGD step and one whole epoch.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from . import harness as H


def _max(a, b) -> float:
    if isinstance(a, dict):
        return max(_max(a[k], b[k]) for k in b)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def measure(data_dir: str = "data", epoch: bool = True) -> dict[str, dict[str, float]]:
    """{quantity: {"torch32-f64", "jax32-f64", "torch32-jax32"}: max abs error}."""
    train, test = H.real_data(data_dir)
    sd = H.init_state_dict(0)
    params = H.torch_to_flax(sd)
    rng = np.random.default_rng(0)
    batches = {"real batch": (test.x[:64], test.y[:64]),
               "random batch": (rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64))}
    out: dict[str, dict[str, float]] = {}

    def record(name, t32, j32, f64):
        out[name] = {"torch32-f64": _max(t32, f64), "jax32-f64": _max(j32, f64), "torch32-jax32": _max(t32, j32)}

    for label, (x, y) in batches.items():
        t = H.torch_loss_and_grads(sd, x, y)
        j = H.jax_loss_and_grads(params, x, y)
        f = H.torch_loss_and_grads(sd, x, y, dtype=torch.float64)
        for i, what in enumerate(("logits", "loss", "grads")):
            record(f"{what} ({label})", t[i], j[i], f[i])

    one = H.Split(train.x[:64], train.y[:64])
    _, t_model = H.torch_train(sd, one)
    _, j_state = H.jax_train(params, one)
    _, f_model = H.torch_train(sd, one, dtype=torch.float64)
    record("params after 1 step", H.state_dict_numpy(t_model), H.params_as_torch_numpy(j_state.params), H.state_dict_numpy(f_model))

    if epoch:
        t_losses, t_model = H.torch_train(sd, train)
        j_losses, j_state = H.jax_train(params, train)
        f_losses, f_model = H.torch_train(sd, train, dtype=torch.float64)
        for k in (1, 10, 100, 938):
            record(f"loss, steps 1-{k}", t_losses[:k], j_losses[:k], f_losses[:k])
        record("params after 1 epoch", H.state_dict_numpy(t_model), H.params_as_torch_numpy(j_state.params), H.state_dict_numpy(f_model))
        te = [H.torch_evaluate(t_model, test), H.jax_evaluate(j_state, test), H.torch_evaluate(f_model, test)]
        record("test Avg loss", te[0][1], te[1][1], te[2][1])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.calibrate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    numbers = measure(args.data_dir)
    print(f"| {'quantity':<32} | torch32 vs f64 | jax32 vs f64 | torch32 vs jax32 |")
    print(f"|{'-' * 34}|----------------|--------------|------------------|")
    for name, row in numbers.items():
        print(f"| {name:<32} | {row['torch32-f64']:>14.3e} | {row['jax32-f64']:>12.3e} | {row['torch32-jax32']:>16.3e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(numbers, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
