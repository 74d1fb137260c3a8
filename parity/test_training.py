"""One SGD step, then the whole first epoch on the real data in file order: both sides agree.

Tolerances and their calibrated sources: ``parity/tolerances.py``.
"""
import numpy as np
import torch

from parity import harness as H
from parity import tolerances as T
from parity.compare import assert_trees_close
from parity.tolerances import loss_atol

STEP_RTOL, STEP_ATOL = T.ONE_STEP.rtol, T.ONE_STEP.atol
EPOCH_RTOL, EPOCH_ATOL = T.ONE_EPOCH.rtol, T.ONE_EPOCH.atol
EVAL_LOSS_ATOL = T.EVAL_LOSS.atol
LOGITS_ATOL = T.EPOCH_LOGITS.atol


def test_one_sgd_step(real, init_sd):
    train, _ = real
    one = H.Split(train.x[:64], train.y[:64])
    t_losses, t_model = H.torch_train(init_sd, one)
    j_losses, j_state = H.jax_train(H.torch_to_flax(init_sd), one)
    np.testing.assert_allclose(j_losses, t_losses, rtol=T.LOSS_RTOL.rtol, atol=0)
    diffs = assert_trees_close(H.params_as_torch_numpy(j_state.params), H.state_dict_numpy(t_model),
                               rtol=STEP_RTOL, atol=STEP_ATOL, what="params after one step")
    print("; ".join(map(str, diffs)))
    # The step moved the parameters by far more than the tolerance: the test can see a wrong step.
    moved = max(np.abs(H.state_dict_numpy(t_model)[k] - init_sd[k]).max() for k in init_sd)
    assert moved > 100 * STEP_ATOL


def test_first_epoch_per_step_losses(first_epoch):
    t, j = first_epoch["torch_losses"], first_epoch["jax_losses"]
    assert t.shape == j.shape == (938,)
    gap = np.abs(t - j)
    bound = loss_atol(np.arange(1, 939))
    worst = int(np.argmax(gap / bound))
    print(f"per-step loss: max |torch - jax| {gap.max():.3e} (step {int(gap.argmax()) + 1}); tightest step {worst + 1}: "
          f"{gap[worst]:.3e} <= {bound[worst]:.3e}")
    assert np.all(gap <= bound), f"step {worst + 1}: |torch - jax| = {gap[worst]:.3e} > {bound[worst]:.3e}"


def test_first_epoch_params(first_epoch):
    diffs = assert_trees_close(H.params_as_torch_numpy(first_epoch["jax_state"].params),
                               H.state_dict_numpy(first_epoch["torch_model"]),
                               rtol=EPOCH_RTOL, atol=EPOCH_ATOL, what="params after one epoch")
    print("; ".join(map(str, diffs)))


def test_first_epoch_evaluation(first_epoch, real):
    _, test = real
    t_acc, t_loss = H.torch_evaluate(first_epoch["torch_model"], test)
    j_acc, j_loss = H.jax_evaluate(first_epoch["jax_state"], test)
    print(f"torch: accuracy {t_acc:.4f}, Avg loss {t_loss:.7f}; jax: accuracy {j_acc:.4f}, Avg loss {j_loss:.7f}")
    assert abs(t_loss - j_loss) <= EVAL_LOSS_ATOL
    assert 0.45 <= t_acc <= 0.60

    # Accuracy may differ only through near-ties: every test image the two classify differently
    # must have a top-2 logit margin below the logits gap, which is itself bounded.
    with torch.no_grad():
        t_logits = first_epoch["torch_model"](torch.from_numpy(test.x)).numpy()
    state = first_epoch["jax_state"]
    j_logits = np.asarray(state.apply_fn({"params": state.params}, test.x))
    logits_gap = np.abs(t_logits - j_logits).max()
    assert logits_gap <= LOGITS_ATOL
    top2 = np.sort(t_logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    differ = np.flatnonzero(t_logits.argmax(1) != j_logits.argmax(1))
    print(f"logits gap {logits_gap:.2e}; {len(differ)} predictions differ, margins {margin[differ]}")
    assert np.all(margin[differ] <= 2 * logits_gap)
    assert round(abs(t_acc - j_acc) * len(test.y)) <= len(differ)
