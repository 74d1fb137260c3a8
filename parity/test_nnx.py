"""The Flax NNX twin (``jax_impl/nnx_model.py``) trains as torch does, from the same weights on the
same real batches, at the tolerances ``parity/test_training.py`` holds the Linen side to."""
import jax
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import nnx_model as N
from parity import harness as H
from parity import tolerances as T
from parity.compare import assert_trees_close
from parity.tolerances import loss_atol

STEP_RTOL, STEP_ATOL = T.ONE_STEP.rtol, T.ONE_STEP.atol
EPOCH_RTOL, EPOCH_ATOL = T.ONE_EPOCH.rtol, T.ONE_EPOCH.atol
EVAL_LOSS_ATOL = T.EVAL_LOSS.atol
LOGITS_ATOL = T.EPOCH_LOGITS.atol

STEPS = 300  # a few hundred real steps: the point is equality, not accuracy (1,000 test images are evaluated)


def _nnx_model(init_sd) -> N.NeuralNetwork:
    return N.load_params(N.NeuralNetwork(H.hidden_of(init_sd), rngs=nnx.Rngs(0)), H.torch_to_flax(init_sd))


@pytest.fixture(scope="module")
def trained(real, init_sd):
    train, _ = real
    part = H.Split(train.x[:STEPS * 64], train.y[:STEPS * 64])
    t_losses, t_model = H.torch_train(init_sd, part)
    model = _nnx_model(init_sd)
    optimizer = N.create_optimizer(model)
    j_losses = N.train_epoch(model, optimizer, (part.x, part.y))
    return t_losses, t_model, j_losses.astype(np.float64), model


def test_nnx_holds_the_torch_weights_and_paths(init_sd):
    model = _nnx_model(init_sd)
    assert jax.tree_util.tree_structure(N.params_of(model)) == jax.tree_util.tree_structure(H.torch_to_flax(init_sd))
    for k, v in H.params_as_torch_numpy(N.params_of(model)).items():
        assert np.array_equal(v, init_sd[k]), k  # bit for bit
    with pytest.raises(ValueError, match="linear_relu_stack_2/kernel"):
        N.load_params(N.NeuralNetwork((512, 256), rngs=nnx.Rngs(0)), H.torch_to_flax(init_sd))


def test_nnx_init_draws_torch_distribution():
    """A fresh NNX model draws every layer from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nn.Linear does."""
    params = H.params_as_torch_numpy(N.params_of(N.NeuralNetwork(rngs=nnx.Rngs(0))))
    for k, v in params.items():
        fan_in = 784 if ".0." in k else 512
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(v).max() <= bound, k
        if v.size >= 512:  # enough draws to see the distribution's edge and spread
            assert np.abs(v).max() > 0.95 * bound, k
            assert abs(v.std() - bound / np.sqrt(3)) < 0.05 * bound, k  # the uniform's standard deviation


def test_nnx_one_step(real, init_sd):
    train, _ = real
    t_losses, t_model = H.torch_train(init_sd, H.Split(train.x[:64], train.y[:64]))
    model = _nnx_model(init_sd)
    metrics = N.train_step(model, N.create_optimizer(model), (train.x[:64], train.y[:64]))
    np.testing.assert_allclose(float(metrics["loss"]), t_losses[0], rtol=1e-6, atol=0)
    assert_trees_close(H.params_as_torch_numpy(N.params_of(model)), H.state_dict_numpy(t_model),
                       rtol=STEP_RTOL, atol=STEP_ATOL, what="NNX params after one step")


def test_nnx_per_step_losses(trained):
    t, _, j, _ = trained
    assert t.shape == j.shape == (STEPS,)
    gap, bound = np.abs(t - j), loss_atol(np.arange(1, STEPS + 1))
    worst = int(np.argmax(gap / bound))
    print(f"NNX vs torch, {STEPS} steps: max per-step loss gap {gap.max():.3e}; tightest step {worst + 1}: "
          f"{gap[worst]:.3e} <= {bound[worst]:.3e}")
    assert np.all(gap <= bound), f"step {worst + 1}: |torch - nnx| = {gap[worst]:.3e} > {bound[worst]:.3e}"
    assert t[-50:].mean() < t[:50].mean() - 0.02  # it trained: the comparison is not of two frozen models


def test_nnx_params_and_evaluation(trained, real):
    _, t_model, _, model = trained
    diffs = assert_trees_close(H.params_as_torch_numpy(N.params_of(model)), H.state_dict_numpy(t_model),
                               rtol=EPOCH_RTOL, atol=EPOCH_ATOL, what=f"NNX params after {STEPS} steps")
    print("; ".join(map(str, diffs)))
    _, test = real
    part = H.Split(test.x[:1000], test.y[:1000])
    t_acc, t_loss = H.torch_evaluate(t_model, part)
    j_acc, j_loss = N.evaluate(model, (part.x, part.y))
    print(f"1,000 test images: torch accuracy {t_acc:.3f} Avg loss {t_loss:.7f}; NNX {j_acc:.3f} {j_loss:.7f}")
    assert abs(t_loss - j_loss) <= EVAL_LOSS_ATOL
    # As test_training: predictions may differ only on near-ties (top-2 margin below the logits gap).
    with torch.no_grad():
        t_logits = t_model(torch.from_numpy(part.x)).numpy()
    j_logits = np.asarray(model(part.x))
    logits_gap = np.abs(t_logits - j_logits).max()
    assert logits_gap <= LOGITS_ATOL
    top2 = np.sort(t_logits, axis=1)[:, -2:]
    differ = np.flatnonzero(t_logits.argmax(1) != j_logits.argmax(1))
    assert np.all(top2[differ, 1] - top2[differ, 0] <= 2 * logits_gap)
    assert round(abs(t_acc - j_acc) * len(part.y)) <= len(differ)
