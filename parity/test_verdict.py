"""``python -m parity``'s verdict (``side_by_side.verdict``) on hand-made epoch results: each failure named,
NaN and inf failing wherever they appear."""
from __future__ import annotations

import numpy as np
import pytest

from parity import side_by_side as S
from parity import tolerances as T

NONFINITE = [np.nan, np.inf, -np.inf]


# --- the CLI's verdict ----------------------------------------------------------------------------

N_TEST = 10_000
STEPS = 20


def _result(**change) -> S.EpochResult:
    losses = np.linspace(2.3, 2.0, STEPS)
    params = {"linear_relu_stack.0.weight": np.full((3, 4), 0.1), "linear_relu_stack.0.bias": np.full(3, 0.01),
              "linear_relu_stack.2.weight": np.full((2, 3), -0.2), "linear_relu_stack.2.bias": np.full(2, 0.02)}
    fields = dict(losses=losses, accuracy=0.5, avg_loss=1.5, params=params, seconds=1.0)
    fields.update(change)
    return S.EpochResult(**fields)


def _verdict(j: S.EpochResult, epoch: int = 1, first_step: int = 1, t: S.EpochResult | None = None):
    return S.verdict(epoch, first_step, t or _result(), j, N_TEST)


def test_verdict_passes_identical_sides():
    row, failures = _verdict(_result())
    assert failures == [] and row["max_step_loss_diff"] == 0 and row["max_param_diff"] == 0


@pytest.mark.parametrize("step", [0, STEPS // 2, STEPS - 1])
def test_verdict_loss_gap(step):
    """The per-step loss branch uses tolerances.loss_atol: half of it passes, twice it fails, at any step."""
    tol = T.loss_atol(np.arange(1, STEPS + 1))
    for factor, fails in ((0.5, False), (2.0, True)):
        losses = _result().losses.copy()
        losses[step] += factor * tol[step]
        _, failures = _verdict(_result(losses=losses))
        assert bool(failures) == fails, failures
    assert failures == [f"epoch 1 step {step + 1}: per-step loss gap {2 * tol[step]:.3e} > {tol[step]:.3e}"]


def test_verdict_step_count_mismatch():
    """A side that dropped (or added) a step fails, whatever its losses."""
    _, failures = _verdict(_result(losses=_result().losses[:-1]))
    assert failures and failures[0] == f"epoch 1: torch ran {STEPS} steps, JAX {STEPS - 1}"
    assert any("per-step loss gap nan" in f for f in failures)  # and the gap check fails on its own


def test_verdict_loss_steps_count_across_epochs():
    # In epoch 3 the step numbers continue: the tolerance at step 2k+1 is looser than at step 1.
    first = 2 * STEPS + 1
    gap = 1.5 * T.loss_atol(1)
    assert gap < T.loss_atol(first)
    losses = _result().losses + gap
    assert _verdict(_result(losses=losses), epoch=3, first_step=first)[1] == []
    assert _verdict(_result(losses=losses), epoch=1, first_step=1)[1]


@pytest.mark.parametrize("leaf", ["linear_relu_stack.0.weight", "linear_relu_stack.2.bias"])
def test_verdict_param_gap(leaf):
    """Each leaf is checked against tolerances.param_atol(epoch), the last one included."""
    for epoch in (1, 3):
        tol = T.param_atol(epoch)
        for factor, fails in ((0.5, False), (2.0, True)):
            params = {k: v.copy() for k, v in _result().params.items()}
            params[leaf].flat[-1] += factor * tol
            _, failures = _verdict(_result(params=params), epoch=epoch)
            assert bool(failures) == fails, failures
        assert failures == [f"epoch {epoch}: parameter {leaf} gap {2 * tol:.3e} > {tol:.1e}"]


def test_verdict_eval_loss_gap():
    tol = T.eval_loss_atol()
    assert _verdict(_result(avg_loss=1.5 + 0.5 * tol))[1] == []
    failures = _verdict(_result(avg_loss=1.5 + 2 * tol))[1]
    assert len(failures) == 1 and "test Avg loss gap" in failures[0]


def test_verdict_accuracy():
    ok = _result(accuracy=0.5 + T.ACCURACY_IMAGES / N_TEST)
    assert _verdict(ok)[1] == []
    failures = _verdict(_result(accuracy=0.5 + (T.ACCURACY_IMAGES + 1) / N_TEST))[1]
    assert len(failures) == 1 and f"{T.ACCURACY_IMAGES + 1} test images apart" in failures[0]


@pytest.mark.parametrize("side", ["torch", "JAX"])
@pytest.mark.parametrize("what", ["per-step loss", "test Avg loss", "parameters", "accuracy"])
@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
def test_verdict_nonfinite(side, what, bad):
    """A NaN or inf in any result of either side fails, and the verdict says so."""
    if what == "per-step loss":
        losses = _result().losses.copy()
        losses[-1] = bad
        broken = _result(losses=losses)
    elif what == "test Avg loss":
        broken = _result(avg_loss=bad)
    elif what == "parameters":
        params = {k: v.copy() for k, v in _result().params.items()}
        params["linear_relu_stack.2.bias"][-1] = bad
        broken = _result(params=params)
    else:
        broken = _result(accuracy=bad)
    t, j = (broken, _result()) if side == "torch" else (_result(), broken)
    _, failures = _verdict(j, t=t)
    assert failures, f"{side} {what} = {bad} passed"
    if what != "accuracy":  # accuracy is a count: the NaN shows as a mismatch
        assert any(f"{side} {what} is NaN or inf" in f for f in failures), failures


def test_verdict_nan_on_both_sides_fails():
    losses = _result().losses.copy()
    losses[3] = np.nan
    assert _verdict(_result(losses=losses), t=_result(losses=losses))[1]
