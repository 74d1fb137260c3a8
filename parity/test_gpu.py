"""GPU parity (marked ``gpu``; skipped with the reason where CUDA is absent), in both precision modes.

Tolerances (``parity/tolerances.py``, GPU): calibrated on an H100 in both modes (strict: true
float32 on both sides; default: JAX may use TF32), each bound within ``GPU_MARGIN`` of what that
run measured (``parity/test_tolerances.py`` pins them).
"""
import jax
import numpy as np
import pytest

from parity import harness as H
from parity.compare import assert_trees_close
from parity.precision import describe, precision
from parity.tolerances import GPU as TOL
from parity.tolerances import loss_atol

pytestmark = pytest.mark.gpu


@pytest.fixture(params=["strict", "default"])
def mode(request):
    with precision(request.param):
        print(describe(request.param, "gpu"))
        yield request.param


def _jax_gpu():
    return jax.devices("gpu")[0]


def test_gpu_forward_and_gradients(mode, real, init_sd):
    x, y = real[1].x[:64], real[1].y[:64]
    t_logits, _, t_grads = H.torch_loss_and_grads(init_sd, x, y, device="cuda")
    j_logits, _, j_grads = H.jax_loss_and_grads(H.torch_to_flax(init_sd), x, y, device=_jax_gpu())
    gap = np.abs(t_logits - j_logits).max()
    print(f"[{mode}] logits max abs gap {gap:.3e}")
    assert gap <= TOL[mode]["logits"]
    # ReLU kinks as in test_forward_backward: compare gradients of the last layer, which no kink feeds.
    for k in ("linear_relu_stack.4.weight", "linear_relu_stack.4.bias"):
        g = np.abs(t_grads[k] - j_grads[k]).max()
        print(f"[{mode}] {k} gradient max abs gap {g:.3e}")
        assert g <= TOL[mode]["grads"], k


def test_gpu_first_epoch(mode, real, init_sd):
    train = real[0]
    t_losses, t_model = H.torch_train(init_sd, train, device="cuda")
    j_losses, j_state = H.jax_train(H.torch_to_flax(init_sd), train, device=_jax_gpu())
    gap = np.abs(t_losses - j_losses)
    print(f"[{mode}] per-step loss max abs gap {gap.max():.3e}")
    assert np.all(gap <= TOL[mode]["loss_factor"] * loss_atol(np.arange(1, 939)))
    diffs = assert_trees_close(H.params_as_torch_numpy(j_state.params), H.state_dict_numpy(t_model),
                               rtol=0, atol=TOL[mode]["params"], what=f"[{mode}] params after one epoch")
    print(f"[{mode}] " + "; ".join(map(str, diffs)))
