"""The study guide's newer chapters, torch half next to JAX half: optimization, functional transforms,
jit, PRNG, pytrees and the quickstart three ways; plus the rule that a chapter pair exports the same names.

Tolerance sources: one SGD step and 20 steps follow parity/test_training.py (float32 on the same
batches, 1e-6 relative per step); the float64 per-example loop bounds float32 gradients at 1e-4
relative (a sum over 784 inputs in float32: ~1e-6 of the largest term, and a ReLU kink can move a
single unit's row far more: docs/results.md, and parity/test_forward_backward.py); everything else is exact
or small closed forms.
"""
import importlib
import inspect
import pkgutil

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

import jax_impl.basics
import reference_torch.basics
from jax_impl import nnx_model
from jax_impl import train as jtrain
from jax_impl.basics import functional as jf
from jax_impl.basics import jit as jj
from jax_impl.basics import optimization as jo
from jax_impl.basics import prng as jp
from jax_impl.basics import pytrees as jt
from parity import harness as H
from parity.compare import assert_trees_close
from parity.weights import flax_to_torch_numpy, torch_to_flax
from quickstart_parity_guide.guide import (
    CHAPTERS,
    _explicit_hvp,
    checkpoint_inputs,
    ddp_bucket_sizes,
    per_sample_as_torch,
    per_sample_grads_float64,
    real_batch,
)
from reference_torch.basics import autograd, quickstart
from reference_torch.basics import functional as tf
from reference_torch.basics import jit as tj
from reference_torch.basics import optimization as to
from reference_torch.basics import prng as tp
from reference_torch.basics import pytrees as tt
from reference_torch.model import NeuralNetwork

CHAPTER_MODULES = sorted(m.name for m in pkgutil.iter_modules(reference_torch.basics.__path__))


def _public(module) -> set[str]:
    """Functions and classes defined in ``module`` whose names do not start with ``_``."""
    return {n for n, o in vars(module).items() if not n.startswith("_") and (inspect.isfunction(o) or inspect.isclass(o))
            and o.__module__ == module.__name__}


# Names one side has and the other cannot, each with its reason (the guide shows "no counterpart").
ONE_SIDED = {
    "distributed": {"train_step_shard_map": "JAX writes the per-device program out by hand with shard_map; "
                                            "DDP's loop is that per-process program already"},
}


@pytest.mark.parametrize("name", CHAPTER_MODULES)
def test_every_public_name_exists_on_both_sides(name):
    t = importlib.import_module(f"reference_torch.basics.{name}")
    j = importlib.import_module(f"jax_impl.basics.{name}")
    differ = set(t.__all__) ^ set(j.__all__)
    assert differ == set(ONE_SIDED.get(name, {})), f"{name}: {sorted(differ)} on one side only"
    for side in (t, j):
        missing = _public(side) - set(side.__all__)
        assert not missing, f"{side.__name__} defines {sorted(missing)} but does not export it in __all__"
        assert all(hasattr(side, n) for n in side.__all__), side.__name__


def test_both_sides_have_the_same_chapter_modules():
    # jax_impl/basics/linen holds the Linen form of NNX chapters: a third column, not a chapter
    assert CHAPTER_MODULES == sorted(m.name for m in pkgutil.iter_modules(jax_impl.basics.__path__) if m.name != "linen")
    assert {c.module for c in CHAPTERS} == set(CHAPTER_MODULES)  # the guide shows every chapter
    for chapter in CHAPTERS:
        for _, module in chapter.sides:
            mod = importlib.import_module(module)
            for fn in chapter.functions:
                assert hasattr(mod, fn) or fn in ONE_SIDED.get(chapter.module, {}), f"{chapter.title}: {module} has no {fn}"


# --- optimization ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def init_sd():
    return H.init_state_dict(0)


def test_sgd_momentum_steps_and_buffers(init_sd, data_dir):
    x, y = real_batch(data_dir, 20 * 64)
    t, j = to.sgd_steps(init_sd, x, y, 20), jo.sgd_steps(torch_to_flax(init_sd), x, y, 20)
    np.testing.assert_allclose(j["losses"], t["losses"], rtol=1e-6, atol=1e-6)
    assert_trees_close(dict(flax_to_torch_numpy(j["params"])), t["params"], rtol=1e-4, atol=1e-6, what="params")
    assert_trees_close(dict(flax_to_torch_numpy(j["momentum"])), t["momentum"], rtol=1e-4, atol=1e-6, what="momentum")
    # The buffers are real: momentum made them larger than one step's gradient would be.
    assert max(np.abs(v).max() for v in t["momentum"].values()) > 1e-3
    moved = max(np.abs(t["params"][k] - init_sd[k]).max() for k in init_sd)
    assert moved > 100 * 1e-6


def test_forgotten_zero_grad_sums_in_torch_only(init_sd, data_dir):
    x, y = real_batch(data_dir, 128)
    t, j = to.forgotten_zero_grad(init_sd, x, y), jo.forgotten_zero_grad(torch_to_flax(init_sd), x, y)
    np.testing.assert_allclose(j["after_first"], t["after_first"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(t["after_second"], t["after_first"] + j["after_second"], rtol=1e-5, atol=1e-6)
    assert np.abs(t["after_second"] - j["after_second"]).max() > 1e-3  # torch's is visibly not batch 2's


# --- functional transforms --------------------------------------------------------------------------

def test_model_grad_matches_backward(init_sd, data_dir):
    x, y = real_batch(data_dir, 8)
    _, _, grads = H.torch_loss_and_grads(init_sd, x, y)
    assert_trees_close(tf.model_grad(init_sd, x, y), grads, rtol=1e-5, atol=1e-8, what="torch.func.grad")
    assert_trees_close(dict(flax_to_torch_numpy(jf.model_grad(torch_to_flax(init_sd), x, y))), grads,
                       rtol=1e-4, atol=1e-7, what="jax.grad")


def test_per_sample_grads_against_a_float64_loop(init_sd, data_dir):
    x, y = real_batch(data_dir, 8)
    ref = per_sample_grads_float64(init_sd, x, y)
    t = tf.per_sample_grads(init_sd, x, y)
    j = per_sample_as_torch(jf.per_sample_grads(torch_to_flax(init_sd), x, y))
    for k, v in ref.items():
        assert t[k].shape == j[k].shape == v.shape and v.shape[0] == 8, k
    assert_trees_close(t, ref, rtol=1e-4, atol=1e-7, what="torch vmap(grad) vs float64")
    assert_trees_close(j, ref, rtol=1e-4, atol=1e-7, what="jax vmap(grad) vs float64")
    # Per-example gradients differ from each other: this is not the batch gradient repeated.
    assert np.abs(ref["linear_relu_stack.4.bias"][0] - ref["linear_relu_stack.4.bias"][1]).max() > 1e-2


def test_jacobians_hvp_and_higher_order():
    i = autograd.tutorial_inputs(0)
    t, j = tf.jacobians(i["x"], i["w"], i["b"]), jf.jacobians(i["x"], i["w"], i["b"])
    for key in ("jacrev", "jacfwd", "hessian"):
        np.testing.assert_allclose(j[key], t[key], rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(t["jacfwd"], t["jacrev"], rtol=1e-6, atol=1e-8)
    s = 1 / (1 + np.exp(-(i["x"].astype(np.float64) @ i["w"] + i["b"])))
    np.testing.assert_allclose(t["jacrev"], (s * (1 - s))[:, None] * i["w"].T, rtol=1e-5)  # closed form
    np.testing.assert_allclose(np.diag(t["hessian"]), s * (1 - s) / 3, rtol=1e-5)
    v = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    for side in (tf, jf):
        np.testing.assert_allclose(side.hvp(i["x"], i["w"], i["b"], v), _explicit_hvp(i, v), rtol=1e-5, atol=1e-7)
    x = 1.0
    exact = {"first": 3 * x ** 2 * np.sin(x) + x ** 3 * np.cos(x),
             "second": 6 * x * np.sin(x) + 6 * x ** 2 * np.cos(x) - x ** 3 * np.sin(x)}
    for side in (tf, jf):
        got = side.higher_order(x)
        for k in exact:
            np.testing.assert_allclose(got[k], exact[k], rtol=1e-6, err_msg=f"{side.__name__} {k}")


def test_custom_gradient_fixes_the_nan():
    x = np.array([-5.0, 0.0, 10.0, 100.0], np.float32)
    t, j = tf.custom_grad(x), jf.custom_grad(x)
    for side in (t, j):
        assert np.isnan(side["autograd"]["grad"][-1])  # exp overflow: inf / inf
        np.testing.assert_allclose(side["custom"]["grad"], 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6)
        np.testing.assert_allclose(side["autograd"]["grad"][:3], side["custom"]["grad"][:3], rtol=1e-5)
    np.testing.assert_array_equal(t["custom"]["grad"], j["custom"]["grad"])


def test_checkpointing_same_gradients_fewer_saved_tensors():
    ws, h = checkpoint_inputs()
    t, j = tf.checkpointed(ws, h), jf.checkpointed(ws, h)
    for side in (t, j):
        for a, b in zip(side["checkpoint"]["grads"], side["plain"]["grads"], strict=True):
            np.testing.assert_array_equal(a, b)  # recomputation is the same arithmetic
        # Measured saving: the plain run keeps every segment's inner activations, checkpointing only
        # each segment's input; four (1024, 256) float32 segments, so at least 8 such tensors (8 MiB) fewer.
        assert side["plain"]["saved"] - side["checkpoint"]["saved"] >= 8
        assert side["plain"]["saved_bytes"] - side["checkpoint"]["saved_bytes"] >= 8 * 1024 * 256 * 4
    assert t["checkpoint"]["saved_bytes"] == j["checkpoint"]["saved_bytes"]  # the same residuals, both sides
    assert j["plain"]["compiled_temp_bytes"] > 0 and j["checkpoint"]["compiled_temp_bytes"] > 0
    for a, b in zip(t["plain"]["grads"], j["plain"]["grads"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)  # |g| up to ~34, summed over 1,024 rows


# --- jit, PRNG, pytrees ----------------------------------------------------------------------------

def test_grad_traces_every_call_jit_once_per_signature():
    t, j = tj.control_flow([2.0, -3.0, 2.0]), jj.control_flow([2.0, -3.0, 2.0])
    assert t["grads"] == j["grads"] == [4.0, -1.0, 4.0]
    assert j["grad_traces"] == 3  # jax.grad re-runs the Python (with concrete values) on every call
    assert j["compiled"] == "TracerBoolConversionError"  # jit's abstract tracer refuses the if
    assert t["compiled"].startswith("Unsupported")  # so does torch.compile once graph breaks are refused
    assert t["graph_breaks"].startswith("1 graph break")  # without fullgraph, the if falls back to Python
    assert t["cond_grads"] == j["cond_grads"] == [4.0, -1.0, 4.0]  # the branch as an operator compiles
    assert tj.tracing_counts([3, 3, 4, 3])["python_runs"] == 4
    assert jj.tracing_counts([3, 3, 4, 3]) == {"python_runs": 2, "traced_shapes": [3, 4]}
    ts, js = tj.static_argument([1, 2, 2, 3]), jj.static_argument([1, 2, 2, 3])
    assert ts["results"] == js["results"] == [6.0, 14.0, 14.0, 36.0]
    assert js["python_runs"] == 3  # one trace per distinct static value
    assert js == jj.static_argument([1, 2, 2, 3])  # no hidden cache across calls: same counts again


def test_donation_and_ready():
    t, j = tj.donation(), jj.donation()
    assert t["result_sum"] == j["result_sum"] == 2000.0
    assert t["input_usable"] and not j["input_usable"]
    np.testing.assert_allclose(tj.ready(), jj.ready(), rtol=1e-6)


def test_prng_properties():
    assert not tp.same_call_twice()["equal"] and jp.same_call_twice()["equal"]
    assert tp.reseed_repeats() and jp.reseed_repeats()
    assert tp.independent_streams()["all_distinct"] and jp.independent_streams()["all_distinct"]
    # Seeded per step, both replay any step directly; only torch's hand-made seed mix collides.
    assert tp.replay_step()["direct_equals_in_order"] and jp.replay_step()["direct_equals_in_order"]
    assert tp.replay_step()["collides"] and not jp.replay_step()["collides"]
    assert not np.array_equal(tp.replay_step(step=5)["in_order"], tp.replay_step(step=4)["in_order"])
    np.testing.assert_array_equal(jp.replay_step(step=5)["in_order"], jp.replay_step(step=5)["in_order"])


def test_pytrees_order_and_norms():
    torch.manual_seed(0)
    model = NeuralNetwork()
    params = torch_to_flax(model.state_dict())
    t_order, j_order = tt.parameter_order(model), jt.parameter_order(params)
    assert t_order[:2] == ["linear_relu_stack.0.weight", "linear_relu_stack.0.bias"]
    assert j_order[:2] == ["linear_relu_stack_0/bias", "linear_relu_stack_0/kernel"]  # sorted keys
    assert j_order == sorted(j_order)
    tv, jv = tt.flatten_to_vector(model), jt.flatten_to_vector(params)
    assert tv.shape == jv.shape == (669_706,)
    np.testing.assert_allclose(np.sort(tv), np.sort(jv), rtol=0, atol=0)  # same numbers, other order
    assert not np.array_equal(tv, jv)
    np.testing.assert_allclose(tt.global_norm(model), jt.global_norm(params), rtol=1e-5)
    np.testing.assert_allclose(tt.global_norm(model), np.sqrt((tv.astype(np.float64) ** 2).sum()), rtol=1e-5)
    scaled = jt.scale_all(params, 0.5)
    assert jax.tree_util.tree_structure(scaled) == jax.tree_util.tree_structure(params)
    assert_trees_close(dict(flax_to_torch_numpy(scaled)), tt.scale_all(model, 0.5), rtol=0, atol=0, what="scale_all")


def test_torch_linear_init_is_what_nn_linear_draws():
    torch.manual_seed(0)
    fresh = nn.Linear(784, 512)
    torch.manual_seed(0)
    layer = nn.Linear(784, 512)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    torch.manual_seed(0)
    quickstart.torch_linear_init(layer)
    assert torch.equal(layer.weight, fresh.weight) and torch.equal(layer.bias, fresh.bias)


def test_quickstart_step_three_ways(init_sd, data_dir):
    """One train_step of torch, Flax Linen and Flax NNX from the same weights on one real batch."""
    x, y = real_batch(data_dir, 64)
    model = H.torch_model(init_sd)
    t_loss = quickstart.train_step(model, torch.optim.SGD(model.parameters(), lr=1e-3),
                                   (torch.as_tensor(x), torch.as_tensor(y).long()))["loss"]
    state, metrics = jtrain.train_step(jtrain.create_train_state(torch_to_flax(init_sd)), (x, y))
    net = nnx_model.load_params(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0)), torch_to_flax(init_sd))
    n_metrics = nnx_model.train_step(net, nnx_model.create_optimizer(net), (x, y))
    for loss in (metrics["loss"], n_metrics["loss"]):
        np.testing.assert_allclose(float(loss), float(t_loss), rtol=1e-6)
    expected = H.state_dict_numpy(model)
    for what, params in (("Linen", state.params), ("NNX", nnx_model.params_of(net))):
        assert_trees_close(H.params_as_torch_numpy(params), expected, rtol=1e-6, atol=1.5e-8, what=what)


def test_ddp_rebuilds_its_buckets_after_the_first_step():
    """One 25 MiB bucket holds the MLP's gradients on the first step only; the rebuilt buckets start
    with a 1 MiB one, so later steps all-reduce twice (what the distributed chapter says)."""
    first, rebuilt = ddp_bucket_sizes()
    total = sum(p.numel() * 4 for p in NeuralNetwork().parameters())
    assert [int(b) for b in first.split(",")] == [total]
    sizes = [int(b) for b in rebuilt.split(",")]
    assert len(sizes) == 2 and sum(sizes) == total
    assert torch.distributed._DEFAULT_FIRST_BUCKET_BYTES <= sizes[0] < total


def test_the_written_out_nnx_loop_is_torchs_loop(init_sd, data_dir):
    """The optimization chapter's NNX ``train_epoch`` (plain SGD, the tutorial's) from torch's weights:
    the same per-step losses as torch's loop on the same batches."""
    x, y = real_batch(data_dir, 3 * 64 + 10)  # a partial last batch too
    net = nnx_model.load_params(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0)), torch_to_flax(init_sd))
    lines = []
    losses = jo.train_epoch(x, y, net, nnx_model.create_optimizer(net), log=lines.append)
    t_losses, _ = H.torch_train(init_sd, H.Split(x, y))
    np.testing.assert_allclose(losses, np.asarray(t_losses), rtol=1e-6, atol=1e-6)
    assert len(losses) == 4 and lines and lines[0].startswith("loss:")
    assert losses[-1] != losses[0]  # the parameters moved
