"""Every tolerance the parity tests and ``python -m parity`` use, in one place, each with its source.

A tolerance is either calibrated (its source is a quantity measured by ``python -m parity.calibrate``,
committed with its provenance in ``parity/calibration.json``) or derived from a formula (float32's
unit roundoff, a statistical bound). For a calibrated one, ``margin`` states how far above the
measurement it may sit: ``atol + rtol * scale <= margin * measured``, where ``measured`` is the float32
rounding band (the largest of torch32 vs float64, JAX32 vs float64 and torch32 vs JAX32) and ``scale``
the largest |value| the ``rtol`` multiplies. ``parity/test_tolerances.py`` pins every entry: a tolerance
that drifts looser than its margin fails there. Margins are at most ``MAX_MARGIN``: room for other
CPUs' kernels and thread counts, never room for a bug (the negative controls sit far above).
The rules: docs/design.md, "Precision and tolerances".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23: float32's spacing at 1
MAX_MARGIN = 20.0
STEPS_PER_EPOCH = 938  # 60,000 / 64, the last batch of 32 included
# The models these tolerances were calibrated on (python -m parity.calibrate trains the MLP): python -m parity
# judges them with them (side_by_side.run); every other registered pair derives its tolerances from its own
# float64 runs in the same command (cnn_side_by_side.run).
CALIBRATED_MODELS = ("mlp",)


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` (``np.testing.assert_allclose``'s rule)."""

    rtol: float
    atol: float
    source: str  # the calibrated quantities (keys of calibration.json) or the formula, in words
    calibrated: tuple[str, ...] = ()  # calibration.json keys; empty for a formula
    margin: float = 0.0  # for a calibrated tolerance: its bound over the measured band, at most this

    def bound(self, scale: float) -> float:
        """The largest difference allowed for values of size ``scale``."""
        return self.atol + self.rtol * scale


# --- one batch, the same weights (test_forward_backward.py, test_negative_controls.py) ----------
ACTIVATIONS = Tolerance(1e-5, 2e-6, "every layer's output, real and random batch",
                        ("activations (real batch)", "activations (random batch)"), 15.0)
LOGITS = Tolerance(1e-5, 1e-6, "logits, real and random batch", ("logits (real batch)", "logits (random batch)"), 20.0)
# The batch loss: float32 holds a loss near 2.3 to ~2.4e-7 (one ulp); the measured gap is below one
# ulp, so the bound is set in ulps, not from the measurement: rtol 1e-6 ~ 8 EPS32.
LOSS_RTOL = Tolerance(1e-6, 0.0, "formula: 8 float32 ulps (EPS32) relative, the batch loss")
# Gradients away from ReLU kinks: calibrated on the random batch, where no ReLU input happens to
# flip; on the real batch one may, and the test masks such rows (and prints them: test_forward_backward.py).
# rtol was 1e-5 until the pins showed it 44x above the band at the gradients' scale.
GRADS = Tolerance(1e-6, 1e-7, "gradients of every parameter, random batch", ("grads (random batch)",), 15.0)
# |float64 ReLU input| below KINK may round to the other side of 0 in float32. Formula: the worst-case
# rounding of a 784-term dot product, 784 * EPS32 * max|w| * max|x| = 784 * 1.19e-7 * (1/28) * 1 = 3.3e-6;
# KINK is 3x that (a ReLU input that far from 0 keeps its side).
KINK = 1e-5
KINK_FORMULA = 784 * EPS32 * (1 / math.sqrt(784)) * 1.0

# The tutorial's chapters (test_autograd.py, test_basics.py): tiny tensors, set by formula.
AUTOGRAD = Tolerance(1e-6, 1e-7, "formula: ~8 EPS32 relative; a 5-input layer's sums round by a few ulps")
LAYERS = Tolerance(1e-5, 1e-6, "formula: as ACTIVATIONS, a 784-term dot product per unit (3 images)")

# --- training (test_training.py, test_negative_controls.py, python -m parity) ------------------
ONE_STEP = Tolerance(1e-6, 1.5e-8, "params after one SGD step", ("params after 1 step",), 20.0)
ONE_EPOCH = Tolerance(1e-4, 1e-5, "params after one epoch", ("params after 1 epoch",), 10.0)
EVAL_LOSS = Tolerance(0.0, 1e-5, "test Avg loss after one epoch", ("test Avg loss",), 10.0)
EPOCH_LOGITS = Tolerance(0.0, 2e-4, "logits of the 10,000 test images after one epoch", ("test logits after 1 epoch",), 10.0)

# Per-step loss: 1e-6 + 1e-5 * sqrt(step / 938), i.e. growing like the rounding's random walk.
LOSS_STEP_BASE, LOSS_STEP_GROWTH = 1e-6, 1e-5
LOSS_STEP_MARGIN = 10.0  # over "loss, steps 1-k" at k = 1, 10, 100, 938
# Parameters after ``e`` epochs: 1e-5 * e**1.5. Calibrated at e = 1 ("params after 1 epoch", margin
# below); later epochs from ``python -m parity --epochs 5`` on CPU: the rounding differences grow
# faster than linearly (docs/results.md). Much longer runs belong to the float64 oracle.
PARAM_BASE = 1e-5
PARAM_MARGIN = 10.0
# Test accuracy: the two sides may classify differently only test images whose top-2 logits are
# closer than the logits gap (near-ties; one image after epoch 1 at seed 0, see test_training.py).
ACCURACY_IMAGES = 5
ACCURACY_MEASURED = 1  # images classified differently after epoch 1 (python -m parity --epochs 1)

# --- float64 oracle (test_float64.py, test_optimizer.py) ---------------------------------------
# Formula: float64 runs agree to ~1e3 float64 ulps (test_float64.py prints the gap); 1e-12 is still
# 1e6 below float32's band, so a side that fell back to float32 anywhere fails.
F64_ATOL = 1e-12
# Each side's float32 error against float64 is the same size: a side in TF32 or bf16 would be
# ~1000x off; a factor 4 leaves room for other CPUs' kernels (a ratio, not a tolerance).
SAME_SIZE = 4.0

# --- GPU (test_gpu.py and python -m parity --device cuda) ---------------------------------------
# Calibrated on an H100 (benchmarks/results/h100/: gpu_tests.log and parity_gpu_{strict,default}.json,
# torch 2.11.0+cu130, jax 0.11.2; two runs on two machines gave the same gaps to 3 digits). strict =
# true float32 on both sides; default = JAX may use TF32 on the tensor cores, torch does not.
GPU_MEASURED = {
    # logits and last-layer gradients on one test batch; per-step loss and parameter gaps after 1 epoch
    # and after 5 epochs (python -m parity --device cuda --epochs 5).
    "strict": {"logits": 4.8e-8, "grads": 1.1e-8, "loss_1": 1.67e-6, "params_1": 1.78e-6,
               "loss_5": 1.04e-5, "params_5": 2.03e-5},
    "default": {"logits": 9.4e-5, "grads": 1.0e-5, "loss_1": 1.74e-5, "params_1": 8.3e-6,
                "loss_5": 5.07e-5, "params_5": 1.01e-4},
}
GPU_MARGIN = 20.0  # the most any GPU bound may sit above its measurement (gpu_pins)
GPU = {
    "strict": {"logits": 5e-7, "grads": 1e-7, "loss_factor": 2.0, "params": 2e-5},
    "default": {"logits": 1e-3, "grads": 1e-4, "loss_factor": 20.0, "params": 1e-4},
}
# Multiplies param_atol in TF32 mode: 1e-5 * epochs**1.5 * 10 is 12x the 1-epoch and 11x the 5-epoch gap.
GPU_DEFAULT_PARAM_FACTOR = 10.0


def _tf32(mode: str, platform: str) -> bool:
    return mode == "default" and platform == "gpu"


def loss_atol(steps, mode: str = "strict", platform: str = "cpu") -> np.ndarray:
    """Allowed |torch - JAX| per-step training loss at each step (counting from 1, across epochs)."""
    base = LOSS_STEP_BASE + LOSS_STEP_GROWTH * np.sqrt(np.asarray(steps, np.float64) / STEPS_PER_EPOCH)
    return base * (GPU["default"]["loss_factor"] if _tf32(mode, platform) else 1.0)


def param_atol(epochs_done: int, mode: str = "strict", platform: str = "cpu") -> float:
    """Allowed max |torch - JAX| over all parameters after ``epochs_done`` epochs."""
    return PARAM_BASE * epochs_done**1.5 * (GPU_DEFAULT_PARAM_FACTOR if _tf32(mode, platform) else 1.0)


def eval_loss_atol(mode: str = "strict", platform: str = "cpu") -> float:
    """Allowed |torch - JAX| test Avg loss."""
    return EVAL_LOSS.atol * (GPU["default"]["loss_factor"] if _tf32(mode, platform) else 1.0)


def band(row: dict[str, float]) -> float:
    """The float32 rounding band of one calibration row."""
    return max(row["torch32-f64"], row["jax32-f64"], row["torch32-jax32"])


def pins(numbers: dict[str, dict[str, float]]) -> list[tuple[str, float, float, float]]:
    """(name, tolerance, measured band, margin) for every calibrated tolerance, against ``numbers``
    (calibration.json's): each must satisfy tolerance <= margin * measured band."""
    out = []
    for name, tol in globals().items():
        if isinstance(tol, Tolerance) and tol.calibrated:
            rows = [numbers[k] for k in tol.calibrated]
            scale = max(r["scale"] for r in rows)
            out.append((name, tol.bound(scale), max(band(r) for r in rows), tol.margin))
    for k in (1, 10, 100, STEPS_PER_EPOCH):
        out.append((f"loss_atol(step {k})", float(loss_atol(k)), band(numbers[f"loss, steps 1-{k}"]), LOSS_STEP_MARGIN))
    out.append(("param_atol(1 epoch)", param_atol(1), band(numbers["params after 1 epoch"]), PARAM_MARGIN))
    out.append(("ACCURACY_IMAGES", float(ACCURACY_IMAGES), float(ACCURACY_MEASURED), 5.0))
    return out


def formula_pins() -> list[tuple[str, float, float]]:
    """(name, tolerance, formula's value) for the tolerances set by a formula: tolerance <= value."""
    return [
        ("LOSS_RTOL", LOSS_RTOL.rtol, 10 * EPS32),
        ("AUTOGRAD", AUTOGRAD.rtol, 10 * EPS32),
        ("LAYERS", LAYERS.bound(1.0), ACTIVATIONS.bound(1.0)),
        ("F64_ATOL", F64_ATOL, 1e-5 * LOSS_STEP_BASE),  # 1e5 below float32's smallest per-step bound
        ("KINK", KINK, 4 * KINK_FORMULA),
    ]


def gpu_pins() -> list[tuple[str, float, float, float]]:
    """(name, tolerance, H100 measurement, ceiling = measurement x GPU_MARGIN): measurement <= tolerance <= ceiling."""
    pins = []
    for mode, m in GPU_MEASURED.items():
        t = GPU[mode]
        pins += [(f"GPU {mode} logits", t["logits"], m["logits"]), (f"GPU {mode} grads", t["grads"], m["grads"]),
                 (f"GPU {mode} params (1 epoch)", t["params"], m["params_1"])]
        for epochs in (1, 5):
            base = float(loss_atol(np.array([epochs * STEPS_PER_EPOCH]))[0])
            pins.append((f"GPU {mode} loss bound ({epochs} epochs)", base * t["loss_factor"], m[f"loss_{epochs}"]))
    for epochs in (1, 5):
        pins.append((f"GPU default param_atol ({epochs} epochs)", param_atol(epochs, "default", "gpu"),
                     GPU_MEASURED["default"][f"params_{epochs}"]))
    return [(name, tol, measured, measured * GPU_MARGIN) for name, tol, measured in pins]
