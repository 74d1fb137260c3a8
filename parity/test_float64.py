"""The float64 oracle: torch float64 and JAX x64 (own process) agree to ``F64_ATOL`` over the first
epoch; in float32 each side's error against float64 is within ``SAME_SIZE`` of the other's, and the
torch-JAX gap is at most twice the larger of the two (the tests print all three).
"""
import numpy as np
import pytest
import torch

from parity import harness as H
from parity.tolerances import F64_ATOL, SAME_SIZE  # noqa: F401 - SAME_SIZE imported from here by test_optimizer


@pytest.fixture(scope="module")
def float64_runs(real, init_sd, data_dir):
    train, _ = real
    t_losses, t_model = H.torch_train(init_sd, train, dtype=torch.float64)
    j_losses, j_params = H.jax_x64_train(init_sd, steps=938, data_dir=data_dir)
    return t_losses, H.state_dict_numpy(t_model), j_losses, j_params


def test_torch_float64_equals_jax_x64(float64_runs):
    t_losses, t_params, j_losses, j_params = float64_runs
    assert t_losses.dtype == j_losses.dtype == np.float64 and len(t_losses) == len(j_losses) == 938
    loss_gap = np.abs(t_losses - j_losses).max()
    param_gap = max(np.abs(t_params[k] - j_params[k]).max() for k in t_params)
    print(f"float64: max per-step loss gap {loss_gap:.3e}, max param gap {param_gap:.3e}")
    assert j_params[next(iter(j_params))].dtype == np.float64
    assert loss_gap <= F64_ATOL and param_gap <= F64_ATOL


def test_float32_gap_bounded_by_each_sides_error(float64_runs, first_epoch):
    f_losses, f_params, _, _ = float64_runs
    t32, j32 = first_epoch["torch_losses"], first_epoch["jax_losses"]
    tp = H.state_dict_numpy(first_epoch["torch_model"])
    jp = H.params_as_torch_numpy(first_epoch["jax_state"].params)
    rows = {
        "per-step loss": (np.abs(t32 - f_losses).max(), np.abs(j32 - f_losses).max(), np.abs(t32 - j32).max()),
        "params": tuple(max(np.abs(a[k] - b[k]).max() for k in f_params) for a, b in ((tp, f_params), (jp, f_params),
                                                                                      (tp, jp))),
    }
    for what, (err_t, err_j, gap) in rows.items():
        print(f"{what}: torch32 vs f64 {err_t:.3e}, jax32 vs f64 {err_j:.3e}, torch32 vs jax32 {gap:.3e}")
        assert err_j <= SAME_SIZE * err_t and err_t <= SAME_SIZE * err_j, what
        assert gap <= 2 * max(err_t, err_j), what
        assert gap > 0, f"{what}: float32 runs are bit-identical; the float64 comparison proves nothing new"
