"""Negative controls: inject the bugs a port typically has and show the suite's comparisons catch
each one, with the same functions and tolerances the positive tests use."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_impl.model import NeuralNetwork as FlaxNeuralNetwork
from parity import harness as H
from parity import tolerances as T
from parity.checker import check_port
from parity.compare import assert_trees_close, uniform_init_violations
from parity.tolerances import loss_atol
from quickstart_parity_common.convert import flax_path

GRAD_RTOL, GRAD_ATOL = T.GRADS.rtol, T.GRADS.atol
LOSS_RTOL = T.LOSS_RTOL.rtol

STEPS = 50  # a prefix of the first epoch is enough for every control


def first_divergent(sd, params, x):
    """The port checker's forward pass (eval): (first divergent layer or None, {Flax layer name: Check})."""
    report = check_port(H.torch_model(sd), FlaxNeuralNetwork(), {"params": params}, (x, np.zeros(len(x), np.int64)), steps=0)
    forward = {"/".join(flax_path(c.name)): c for c in report.checks if c.phase == "forward (eval)" and c.name != "logits"}
    assert not report.problems, report.problems
    first = report.first_divergence("forward (eval)")
    return (None if first is None else "/".join(flax_path(first.name))), forward


def test_control_is_clean(real, init_sd):
    """Without a bug, the same comparison finds no divergent layer (so the controls below mean something)."""
    assert first_divergent(init_sd, H.torch_to_flax(init_sd), real[1].x[:64])[0] is None


def test_missing_transpose_in_square_layer(real, init_sd):
    params = H.torch_to_flax(init_sd)
    params["linear_relu_stack_2"]["kernel"] = np.asarray(init_sd["linear_relu_stack.2.weight"])  # [out, in] as is
    first, diffs = first_divergent(init_sd, params, real[1].x[:64])
    assert first == "linear_relu_stack_2", first  # caught at exactly the faulty layer
    assert diffs["linear_relu_stack_0"].ok


def test_dropped_bias(real, init_sd):
    params = H.torch_to_flax(init_sd)
    params["linear_relu_stack_0"]["bias"] = np.zeros_like(params["linear_relu_stack_0"]["bias"])
    first, _ = first_divergent(init_sd, params, real[1].x[:64])
    assert first == "linear_relu_stack_0", first


def test_loss_divided_by_10(real, init_sd):
    x, y = real[0].x[:64], real[0].y[:64]
    _, t_loss, t_grads = H.torch_loss_and_grads(init_sd, x, y, loss_scale=0.1)
    _, j_loss, j_grads = H.jax_loss_and_grads(H.torch_to_flax(init_sd), x, y)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(j_loss, t_loss, rtol=LOSS_RTOL, atol=0)

    with pytest.raises(AssertionError, match="leaf linear_relu_stack.0.weight differs"):
        assert_trees_close(j_grads, t_grads, rtol=GRAD_RTOL, atol=GRAD_ATOL, what="gradients")
    # And in training: the per-step losses diverge at the very first step.
    split = H.Split(real[0].x[: STEPS * 64], real[0].y[: STEPS * 64])
    t_losses, _ = H.torch_train(init_sd, split, loss_scale=0.1)
    j_losses, _ = H.jax_train(H.torch_to_flax(init_sd), split)
    bad = np.flatnonzero(~(np.abs(t_losses - j_losses) <= loss_atol(np.arange(1, STEPS + 1))))  # NaN is bad
    assert bad.size and bad[0] == 0


def test_flax_default_init(init_sd):
    class FlaxDefaultMLP(nn.Module):  # the port's bug: Dense with Flax's lecun_normal + zero bias
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(512, name="linear_relu_stack_0")(x))
            x = nn.relu(nn.Dense(512, name="linear_relu_stack_2")(x))
            return nn.Dense(10, name="linear_relu_stack_4")(x)

    params = FlaxDefaultMLP().init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]
    problems = uniform_init_violations(params)
    assert any("linear_relu_stack_0/kernel: variance" in p for p in problems), problems
    assert any("bias: variance 0" in p for p in problems), problems
    assert uniform_init_violations(H.torch_to_flax(init_sd)) == []


def test_shuffled_batch_order(real, init_sd):
    train = real[0]
    n = STEPS * 64
    perm = np.random.default_rng(0).permutation(n)
    t_losses, _ = H.torch_train(init_sd, H.Split(train.x[:n], train.y[:n]))
    j_losses, _ = H.jax_train(H.torch_to_flax(init_sd), H.Split(train.x[perm], train.y[perm]))
    bad = np.flatnonzero(~(np.abs(t_losses - j_losses) <= loss_atol(np.arange(1, STEPS + 1))))  # NaN is bad
    assert bad.size and bad[0] == 0, "a shuffled order must show in the per-step losses at once"
