"""Both quickstarts trained side by side from the same weights on the same batches (``python -m parity``)."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reference_torch import train as ttrain

from . import harness as H
from .precision import describe, precision


@dataclass
class SideBySideConfig:
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    data_dir: str = "data"
    hidden: tuple[int, ...] = (512, 512)
    precision: str = "default"
    threads: int = 0
    out_dir: str = "runs"
    verbose: bool = True


def loss_tolerance(step: np.ndarray, mode: str, platform_name: str) -> np.ndarray:
    """Allowed |torch - jax| per-step loss (step counts from 1, across epochs).

    CPU and GPU strict: 1e-6 + 1e-5 * sqrt(step / 938), calibrated on CPU float32 (``parity/conftest.py``).
    GPU default mode (JAX in TF32): 2000x that, from TF32's unit roundoff (not yet measured on a GPU).
    """
    base = 1e-6 + 1e-5 * np.sqrt(np.asarray(step, np.float64) / 938)
    return base * (2000.0 if (mode == "default" and platform_name == "gpu") else 1.0)


def param_tolerance(epochs_done: int, mode: str, platform_name: str) -> float:
    """Allowed max |torch - jax| over all parameters after ``epochs_done`` epochs.

    CPU float32, measured with ``python -m parity --epochs 5`` (README): 2.65e-6 after 1 epoch,
    1.2e-5 after 3, 2.4e-5 (torch on 1 thread) to 4.1e-5 (2 threads) after 5: rounding differences
    grow faster than linearly; the bound 1e-5 * epochs**1.5 is 3.8x, 4.5x and 2.7x above those.
    Much longer runs should be judged against a float64 run instead (``test_float64.py``).
    GPU default mode: 500x (TF32, uncalibrated).
    """
    return 1e-5 * epochs_done**1.5 * (500.0 if (mode == "default" and platform_name == "gpu") else 1.0)


def _devices(name: str):
    import jax

    if name == "cpu":
        return torch.device("cpu"), jax.devices("cpu")[0], "cpu"
    tdev = ttrain.resolve_device("cuda" if name == "cuda" else "auto")
    if tdev.type != "cuda":
        return torch.device("cpu"), jax.devices("cpu")[0], "cpu"
    try:
        jdev = jax.devices("gpu")[0]
    except RuntimeError:
        raise ttrain.DeviceError("--device cuda: torch sees CUDA but JAX has no GPU backend (install jax[cuda12])") from None
    return tdev, jdev, "gpu"


def run(cfg: SideBySideConfig) -> dict:
    """Train both sides ``cfg.epochs`` epochs; returns the report (also written as JSON + PNG)."""
    import jax

    from jax_impl import train as jtrain

    out = print if cfg.verbose else (lambda *a, **k: None)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    tdev, jdev, plat = _devices(cfg.device)
    train, test = H.real_data(cfg.data_dir)
    sd = H.init_state_dict(cfg.seed, cfg.hidden)

    with precision(cfg.precision):
        mode_line = describe(cfg.precision, plat)
        out(mode_line)
        out(f"devices: torch {tdev} ({torch.cuda.get_device_name(tdev) if tdev.type == 'cuda' else platform.processor() or 'cpu'}), "
            f"jax {jdev.device_kind}; threads: torch {torch.get_num_threads()}")
        model = H.torch_model(sd, device=tdev)
        loss_fn = nn.CrossEntropyLoss()
        optimizer = ttrain.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
        t_loader = H.torch_loader(train, cfg.batch_size, device=tdev)
        state = jtrain.create_train_state(jax.device_put(H.torch_to_flax(sd), jdev), cfg.lr, cfg.hidden,
                                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        j_data = (jax.device_put(train.x, jdev), jax.device_put(train.y, jdev))

        header = ("| epoch | torch acc | jax acc | torch Avg loss | jax Avg loss | max step-loss diff "
                  "| max param diff | torch s | jax s |")
        out(header)
        out("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
        rows, t_all, j_all, failures = [], [], [], []
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            t_losses = ttrain.train_epoch(t_loader, model, loss_fn, optimizer, log=None).double().numpy()
            t_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            state, j_losses = jtrain.train_epoch(state, j_data, cfg.batch_size, log=None)
            j_s = time.perf_counter() - t0
            t_all.append(t_losses)
            j_all.append(j_losses.astype(np.float64))
            t_acc, t_avg = H.torch_evaluate(model, test, cfg.batch_size)
            j_acc, j_avg = H.jax_evaluate(state, test, cfg.batch_size, device=jdev)
            steps = np.arange(1, len(t_losses) + 1) + (epoch - 1) * len(t_losses)
            step_gap = np.abs(t_losses - j_all[-1])
            param_gap = max(np.abs(a - b).max() for a, b in zip(H.state_dict_numpy(model).values(),
                                                                  H.params_as_torch_numpy(state.params).values()))
            tol = loss_tolerance(steps, cfg.precision, plat)
            beyond = np.flatnonzero(step_gap > tol)
            if beyond.size:
                k = int(beyond[0])
                failures.append(f"epoch {epoch} step {k + 1}: per-step loss gap {step_gap[k]:.3e} > {tol[k]:.3e}")
            if param_gap > param_tolerance(epoch, cfg.precision, plat):
                failures.append(f"epoch {epoch}: parameter gap {param_gap:.3e} > {param_tolerance(epoch, cfg.precision, plat):.1e}")
            row = {"epoch": epoch, "torch_accuracy": t_acc, "jax_accuracy": j_acc, "torch_avg_loss": t_avg,
                   "jax_avg_loss": j_avg, "max_step_loss_diff": float(step_gap.max()), "max_param_diff": float(param_gap),
                   "torch_epoch_s": t_s, "jax_epoch_s": j_s}
            rows.append(row)
            out(f"| {epoch:>5} | {100 * t_acc:>8.1f}% | {100 * j_acc:>6.1f}% | {t_avg:>14.6f} | {j_avg:>12.6f} "
                f"| {row['max_step_loss_diff']:>18.3e} | {param_gap:>14.3e} | {t_s:>7.2f} | {j_s:>5.2f} |")

    t_curve, j_curve = np.concatenate(t_all), np.concatenate(j_all)
    report = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "precision": mode_line,
        "platform": plat,
        "torch_device": str(tdev) if tdev.type != "cuda" else torch.cuda.get_device_name(tdev),
        "jax_device": jdev.device_kind,
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "python": sys.version.split()[0],
                     "numpy": np.__version__},
        "cpu": platform.processor() or platform.machine(),
        "epochs": rows,
        "max_step_loss_diff": float(np.abs(t_curve - j_curve).max()),
        "max_param_diff": rows[-1]["max_param_diff"] if rows else 0.0,
        "failures": failures,
        "ok": not failures,
    }
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"parity_{plat}_{cfg.precision}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    report["plot"] = str(plot(t_curve, j_curve, len(t_all[0]) if t_all else 0, stem.with_suffix(".png"), mode_line))
    out(f"max per-step loss difference {report['max_step_loss_diff']:.3e}, max parameter difference "
        f"{report['max_param_diff']:.3e} after {cfg.epochs} epochs")
    out(f"report: {stem.with_suffix('.json')}, plot: {report['plot']}")
    out("PASS: torch and JAX agree within tolerance" if report["ok"] else "FAIL: " + "; ".join(failures))
    return report


def plot(t_curve: np.ndarray, j_curve: np.ndarray, steps_per_epoch: int, path: Path, title: str) -> Path:
    """Both per-step loss curves, and their difference on a second (log) axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(t_curve) + 1)
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(steps, t_curve, lw=0.8, label="torch (reference_torch)", color="tab:red")
    ax.plot(steps, j_curve, lw=0.8, ls="--", label="JAX (jax_impl)", color="tab:blue")
    ax.set_xlabel("training step (batch of 64)")
    ax.set_ylabel("training loss")
    for e in range(1, len(t_curve) // max(steps_per_epoch, 1)):
        ax.axvline(e * steps_per_epoch, color="0.85", lw=0.8)
    ax2 = ax.twinx()
    diff = np.abs(t_curve - j_curve)
    ax2.semilogy(steps, np.where(diff > 0, diff, np.nan), lw=0.5, color="tab:green", alpha=0.4, label="|torch - JAX|")
    ax2.semilogy(steps, np.maximum.accumulate(diff), lw=1.2, color="darkgreen", label="running max |torch - JAX|")
    ax2.set_ylabel("|torch - JAX| per-step loss")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
