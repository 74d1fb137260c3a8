"""Both quickstarts trained side by side from the same weights on the same batches (``python -m parity``).

Small pieces, each returning its value: ``setup`` builds one runner per side (``harness.TorchRunner``,
``harness.JaxRunner``: the same ones the tests train with), ``train_side`` runs one epoch of one side,
``verdict`` compares the two sides' epoch (every tolerance from ``parity/tolerances.py``), and
``make_report`` / ``write_report`` / ``plot`` report it.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import matplotlib
import numpy as np
import torch

from jax_impl import checkpoint as jcheckpoint
from quickstart_parity_common.cli import DeviceError
from reference_torch import checkpoint as tcheckpoint
from reference_torch import train as ttrain

from . import harness as H
from . import tolerances as T
from .compare import compare_trees
from .precision import describe, precision

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt

DEVICES = ("cpu", "cuda", "auto")


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
    save: str = ""
    hidden: tuple[int, ...] = (512, 512)
    precision: str = "default"
    threads: int = 0
    out_dir: str = "runs"
    model: str = "mlp"  # quickstart_parity_pairs.PAIRS: tolerances.CALIBRATED_MODELS run here, others cnn_side_by_side
    verbose: bool = True


@dataclass
class EpochResult:
    """One side after one epoch: its per-step losses, test metrics, parameters (torch naming) and time."""

    losses: np.ndarray
    accuracy: float
    avg_loss: float
    params: dict[str, np.ndarray]
    seconds: float


@dataclass
class Setup:
    """Everything a side-by-side run needs, built once."""

    torch_runner: H.TorchRunner
    jax_runner: H.JaxRunner
    test: H.Split
    platform: str  # "cpu" or "gpu"
    torch_device: str
    jax_device: str
    mode_line: str  # what each library does for float32 matmuls (precision.describe)


def devices(name: str) -> tuple[torch.device, jax.Device, str]:
    """(torch device, JAX device, platform) for ``--device`` cpu, cuda or auto (a GPU if both have one)."""
    if name not in DEVICES:
        raise DeviceError(f"--device {name}: unknown device (use {', '.join(DEVICES)})")
    if name == "cpu":
        return torch.device("cpu"), jax.devices("cpu")[0], "cpu"
    tdev = ttrain.resolve_device("cuda" if name == "cuda" else "auto")
    if tdev.type != "cuda":
        return torch.device("cpu"), jax.devices("cpu")[0], "cpu"
    try:
        jdev = jax.devices("gpu")[0]
    except RuntimeError:
        raise DeviceError("--device cuda: torch sees CUDA but JAX has no GPU backend (install jax[cuda12])") from None
    return tdev, jdev, "gpu"


def setup(cfg: SideBySideConfig) -> Setup:
    """Data, devices and both runners from the same initial weights (``torch.manual_seed(seed)``)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    tdev, jdev, plat = devices(cfg.device)
    train, test = H.real_data(cfg.data_dir)
    sd = H.init_state_dict(cfg.seed, cfg.hidden)
    kw = dict(batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    t_name = torch.cuda.get_device_name(tdev) if tdev.type == "cuda" else platform.processor() or platform.machine() or "cpu"
    return Setup(H.TorchRunner(sd, train, device=tdev, **kw), H.JaxRunner(H.torch_to_flax(sd), train, device=jdev, **kw),
                 test, plat, f"{tdev} ({t_name})", jdev.device_kind, describe(cfg.precision, plat))


def train_side(runner, test: H.Split) -> EpochResult:
    """One timed epoch of one side, then its test metrics and parameters."""
    start = time.perf_counter()
    losses = runner.epoch()  # returned on the host: the epoch has finished
    seconds = time.perf_counter() - start
    accuracy, avg_loss = runner.evaluate(test)
    return EpochResult(losses, accuracy, avg_loss, runner.params(), seconds)


def _nonfinite(name: str, values) -> str | None:
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64).ravel()))
    return f"{name} is NaN or inf ({bad.size} values, first at index {int(bad[0])})" if bad.size else None


def verdict(epoch: int, first_step: int, t: EpochResult, j: EpochResult, n_test: int,
            mode: str = "strict", plat: str = "cpu") -> tuple[dict, list[str]]:
    """(the epoch's table row, its failures) for torch ``t`` against JAX ``j``.

    Every check is written as ``gap <= tolerance`` and ``np.isfinite``, so a NaN anywhere fails:
    non-finite values, the per-step loss gap, the parameter gap (each leaf), the test Avg loss gap,
    and the test images classified differently.
    """
    failures = [f"epoch {epoch}: {msg}" for msg in (
        _nonfinite(f"{side} {what}", values)
        for side, r in (("torch", t), ("JAX", j))
        for what, values in (("per-step loss", r.losses), ("test Avg loss", r.avg_loss),
                             ("parameters", np.concatenate([v.ravel() for v in r.params.values()])))) if msg]

    if t.losses.shape != j.losses.shape:
        failures.append(f"epoch {epoch}: torch ran {len(t.losses)} steps, JAX {len(j.losses)}")
    steps = first_step + np.arange(len(t.losses))
    step_gap = np.abs(t.losses - j.losses) if t.losses.shape == j.losses.shape else np.full(len(t.losses), np.nan)
    step_tol = T.loss_atol(steps, mode, plat)
    beyond = np.flatnonzero(~(step_gap <= step_tol))
    if beyond.size:
        k = int(beyond[0])
        failures.append(f"epoch {epoch} step {steps[k]}: per-step loss gap {step_gap[k]:.3e} > {step_tol[k]:.3e}")

    p_tol = T.param_atol(epoch, mode, plat)
    leaves = compare_trees(j.params, t.params, rtol=0.0, atol=p_tol)
    param_gap = max(d.max_abs for d in leaves)
    for d in leaves:
        if not d.ok:
            failures.append(f"epoch {epoch}: parameter {d.name} gap {d.max_abs:.3e} > {p_tol:.1e}")

    loss_gap, l_tol = abs(t.avg_loss - j.avg_loss), T.eval_loss_atol(mode, plat)
    if not loss_gap <= l_tol:
        failures.append(f"epoch {epoch}: test Avg loss gap {loss_gap:.3e} > {l_tol:.1e}")
    images = abs(t.accuracy - j.accuracy) * n_test  # a count, up to float rounding: hence the + 0.5
    if not images <= T.ACCURACY_IMAGES + 0.5:
        failures.append(f"epoch {epoch}: accuracy {100 * t.accuracy:.2f}% vs {100 * j.accuracy:.2f}%: "
                        f"{images:.0f} test images apart > {T.ACCURACY_IMAGES}")

    row = {"epoch": epoch, "torch_accuracy": t.accuracy, "jax_accuracy": j.accuracy, "torch_avg_loss": t.avg_loss,
           "jax_avg_loss": j.avg_loss, "max_step_loss_diff": float(np.max(step_gap)) if step_gap.size else 0.0,
           "max_param_diff": float(param_gap), "torch_epoch_s": t.seconds, "jax_epoch_s": j.seconds}
    return row, failures


TABLE_HEADER = ("| epoch | torch acc | jax acc | torch Avg loss | jax Avg loss | max step-loss diff "
                "| max param diff | torch s | jax s |")


def table_row(row: dict) -> str:
    """One epoch's line of the printed table."""
    return (f"| {row['epoch']:>5} | {100 * row['torch_accuracy']:>8.1f}% | {100 * row['jax_accuracy']:>6.1f}% "
            f"| {row['torch_avg_loss']:>14.6f} | {row['jax_avg_loss']:>12.6f} | {row['max_step_loss_diff']:>18.3e} "
            f"| {row['max_param_diff']:>14.3e} | {row['torch_epoch_s']:>7.2f} | {row['jax_epoch_s']:>5.2f} |")


def report_head(cfg: SideBySideConfig, mode_line: str, plat: str, torch_device: str, jax_device: str) -> dict:
    """What every ``python -m parity`` report opens with (``make_report``, ``cnn_side_by_side.run``): the
    configuration, the precision mode, the devices and the versions."""
    return {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "precision": mode_line,
        "platform": plat,
        "torch_device": torch_device,
        "jax_device": jax_device,
        "versions": {"torch": torch.__version__, "jax": jax.__version__, "python": sys.version.split()[0],
                     "numpy": np.__version__},
        "cpu": platform.processor() or platform.machine(),
    }


def make_report(cfg: SideBySideConfig, s: Setup, rows: list[dict], failures: list[str],
                t_curve: np.ndarray, j_curve: np.ndarray) -> dict:
    """The JSON report: ``report_head``, each epoch's row and the verdict."""
    return {
        **report_head(cfg, s.mode_line, s.platform, s.torch_device, s.jax_device),
        "epochs": rows,
        "max_step_loss_diff": float(np.max(np.abs(t_curve - j_curve))) if t_curve.size else 0.0,
        "max_param_diff": rows[-1]["max_param_diff"] if rows else 0.0,
        "failures": failures,
        "ok": not failures,
    }


def write_report(report: dict, t_curve: np.ndarray, j_curve: np.ndarray, steps_per_epoch: int,
                 out_dir: str) -> tuple[Path, Path]:
    """The report as JSON and the loss curves as PNG under ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"parity_{report['platform']}_{report['config']['precision']}"
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    cfg = report["config"]
    plot(t_curve, j_curve, steps_per_epoch, png_path, report["precision"], cfg["batch_size"],
         T.loss_atol(np.arange(1, len(t_curve) + 1), cfg["precision"], report["platform"]))
    return json_path, png_path


def save_models(s: Setup, path: str) -> tuple[Path, Path]:
    """``--save PATH``: torch's trained state_dict to PATH, JAX's params to PATH with suffix .msgpack."""
    t_path = Path(path)
    j_path = t_path.with_suffix(".msgpack")
    if t_path == j_path:
        raise ValueError(f"--save {path}: name the torch checkpoint (e.g. model.pth); JAX's goes next to it as .msgpack")
    tcheckpoint.save(s.torch_runner.model, t_path)
    jcheckpoint.save(s.jax_runner.state.params, j_path)
    return t_path, j_path


def run(cfg: SideBySideConfig) -> dict:
    """Train both sides ``cfg.epochs`` epochs; returns the report (also written as JSON + PNG)."""
    out = print if cfg.verbose else (lambda *a, **k: None)
    s = setup(cfg)
    rows, failures, t_all, j_all = [], [], [], []
    with precision(cfg.precision):
        out(s.mode_line)
        out(f"devices: torch {s.torch_device}, jax {s.jax_device}; threads: torch {torch.get_num_threads()}")
        out(TABLE_HEADER)
        out("|" + "|".join("-" * len(c) for c in TABLE_HEADER.split("|")[1:-1]) + "|")
        first_step = 1
        for epoch in range(1, cfg.epochs + 1):
            t = train_side(s.torch_runner, s.test)
            j = train_side(s.jax_runner, s.test)
            row, epoch_failures = verdict(epoch, first_step, t, j, len(s.test.y), cfg.precision, s.platform)
            first_step += len(t.losses)
            rows.append(row)
            failures += epoch_failures
            t_all.append(t.losses)
            j_all.append(j.losses)
            out(table_row(row))
    t_curve, j_curve = np.concatenate(t_all), np.concatenate(j_all)
    report = make_report(cfg, s, rows, failures, t_curve, j_curve)
    json_path, png_path = write_report(report, t_curve, j_curve, len(t_all[0]), cfg.out_dir)
    report["plot"] = str(png_path)
    if cfg.save:
        t_path, j_path = save_models(s, cfg.save)
        out(f"Saved the trained models: torch {t_path}, JAX {j_path}")
    out(f"max per-step loss difference {report['max_step_loss_diff']:.3e}, max parameter difference "
        f"{report['max_param_diff']:.3e} after {cfg.epochs} epochs")
    out(f"report: {json_path}, plot: {png_path}")
    out("PASS: torch and JAX agree within tolerance" if report["ok"] else "FAIL: " + "; ".join(failures))
    return report


def plot(t_curve: np.ndarray, j_curve: np.ndarray, steps_per_epoch: int, path: Path, subtitle: str,
         batch_size: int = 64, tolerance: np.ndarray | None = None) -> Path:
    """Two panels sharing the step axis: both per-step loss curves above; below, |torch - JAX| on a
    log axis with its running max and the per-step ``tolerance`` the verdict used."""
    steps = np.arange(1, len(t_curve) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=(3, 2))
    top.plot(steps, t_curve, lw=0.8, label="torch (reference_torch)", color="tab:red")
    top.plot(steps, j_curve, lw=0.8, ls="--", label="JAX (jax_impl)", color="tab:blue")
    top.set_ylabel("training loss (per step)")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    diff = np.abs(t_curve - j_curve)
    bottom.semilogy(steps, np.where(diff > 0, diff, np.nan), lw=0.5, color="tab:green", alpha=0.5, label="|torch - JAX|")
    bottom.semilogy(steps, np.fmax.accumulate(diff), lw=1.2, color="darkgreen", label="running max")
    if tolerance is not None:
        bottom.semilogy(steps, tolerance, lw=1.0, ls=":", color="black", label="tolerance")
    bottom.set_ylabel("|torch - JAX| per-step loss")
    epochs = len(t_curve) // max(steps_per_epoch, 1)
    bottom.set_xlabel(f"training step (batch of {batch_size}" + ("; grey lines: epoch ends)" if epochs > 1 else ")"))
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    for ax in (top, bottom):
        for e in range(1, epochs):
            ax.axvline(e * steps_per_epoch, color="0.85", lw=0.8)
    fig.suptitle("Per-step training loss, torch vs JAX from the same weights on the same batches", fontsize=11)
    top.set_title(subtitle, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
