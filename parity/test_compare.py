"""``parity.compare`` on hand-made inputs: every comparison fails when it should and passes when it should,
reports every leaf (one result per leaf, so a skipped last leaf shows), treats NaN and inf as failures, tells
rtol from atol; and the uniform-initialisation check flags each kind of wrong draw."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from parity import harness as H
from parity.compare import (
    assert_trees_close,
    check_structure,
    compare_activations,
    compare_trees,
    flatten,
    flax_activations,
    layer_order,
    leaf_diff,
    torch_activations,
    uniform_init_violations,
)
from reference_torch.model import NeuralNetwork as TorchNeuralNetwork

NONFINITE = [np.nan, np.inf, -np.inf]


# --- leaf_diff ----------------------------------------------------------------------------------

def test_leaf_diff_passes_within_and_fails_beyond():
    e = np.array([1.0, -2.0, 3.0])
    assert leaf_diff("w", e + 1e-7, e, rtol=0, atol=1e-6).ok
    assert not leaf_diff("w", e + 1e-5, e, rtol=0, atol=1e-6).ok
    d = leaf_diff("w", np.array([1.0, -2.0, 3.5]), e, rtol=0, atol=0.1)
    assert not d.ok and d.name == "w" and d.max_abs == pytest.approx(0.5) and d.max_rel == pytest.approx(0.5 / 3)


def test_leaf_diff_bound_is_inclusive():
    # |a - e| == atol + rtol * |e| exactly (all powers of two): allowed, as assert_allclose allows it.
    assert leaf_diff("w", np.array([1.5]), np.array([1.0]), rtol=0.25, atol=0.25).ok
    assert not leaf_diff("w", np.array([1.5 + 2**-20]), np.array([1.0]), rtol=0.25, atol=0.25).ok


def test_rtol_and_atol_are_told_apart():
    # A large reference value: the relative part carries the bound; swapped, the bound collapses.
    big_e, big_a = np.array([1000.0]), np.array([1000.5])
    assert leaf_diff("w", big_a, big_e, rtol=1e-3, atol=1e-6).ok
    assert not leaf_diff("w", big_a, big_e, rtol=1e-6, atol=1e-3).ok
    # A zero reference value: only atol can allow a difference.
    zero_e, zero_a = np.array([0.0]), np.array([5e-4])
    assert leaf_diff("w", zero_a, zero_e, rtol=1e-6, atol=1e-3).ok
    assert not leaf_diff("w", zero_a, zero_e, rtol=1e-3, atol=1e-6).ok
    # rtol scales with the reference (expected), not with actual.
    assert not leaf_diff("w", np.array([2.0]), np.array([1.0]), rtol=0.6, atol=0).ok
    assert leaf_diff("w", np.array([1.0]), np.array([2.0]), rtol=0.6, atol=0).ok


def test_leaf_diff_shape_mismatch_raises():
    with pytest.raises(AssertionError, match=r"w: shape \(3,\) != reference shape \(2,\)"):
        leaf_diff("w", np.zeros(3), np.zeros(2), rtol=1, atol=1)


@pytest.mark.parametrize("bad", NONFINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["actual", "expected", "both"])
def test_nonfinite_always_fails(bad, where):
    """Decided: NaN or inf anywhere fails, even the same inf in the same place on both sides
    (a diverged run is not agreement); generous tolerances do not change that."""
    good = np.array([1.0, 2.0, 3.0])
    with_bad = good.copy()
    with_bad[2] = bad  # the last element: a check that stops early would miss it
    a, e = (with_bad, good) if where == "actual" else (good, with_bad) if where == "expected" else (with_bad, with_bad)
    d = leaf_diff("w", a, e, rtol=1e9, atol=1e9)
    assert not d.ok and d.nonfinite == 1 and "non-finite" in str(d)
    with pytest.raises(AssertionError, match="leaf w differs"):
        assert_trees_close({"w": a}, {"w": e}, rtol=1e9, atol=1e9)


def test_empty_leaf_is_ok():
    assert leaf_diff("w", np.zeros(0), np.zeros(0), rtol=0, atol=0).ok


# --- trees -------------------------------------------------------------------------------------

def _tree(values=(1.0, 2.0, 3.0, 4.0)):
    return {"a": {"kernel": np.full((2, 2), values[0]), "bias": np.full(2, values[1])},
            "b": [np.full(3, values[2]), np.full(1, values[3])]}


def test_flatten_names_every_leaf_in_order():
    assert list(flatten(_tree())) == ["a/kernel", "a/bias", "b/0", "b/1"]


def test_compare_trees_one_result_per_leaf_in_reference_order():
    e = _tree()
    a = {"b": e["b"], "a": e["a"]}  # another key order: the reference's order wins
    diffs = compare_trees(a, e, rtol=0, atol=0)
    assert [d.name for d in diffs] == ["a/kernel", "a/bias", "b/0", "b/1"]
    assert all(d.ok for d in diffs)


@pytest.mark.parametrize("leaf", range(4))
def test_every_leaf_is_compared(leaf):
    """One leaf off at a time, the last included: exactly that leaf fails, and assert names it."""
    values = [1.0, 2.0, 3.0, 4.0]
    wrong = list(values)
    wrong[leaf] += 1e-3
    diffs = compare_trees(_tree(wrong), _tree(values), rtol=1e-6, atol=1e-6)
    assert [d.ok for d in diffs] == [i != leaf for i in range(4)]
    name = ["a/kernel", "a/bias", "b/0", "b/1"][leaf]
    with pytest.raises(AssertionError, match=f"params: leaf {name} differs"):
        assert_trees_close(_tree(wrong), _tree(values), rtol=1e-6, atol=1e-6, what="params")


def test_assert_trees_close_returns_every_leaf_when_close():
    diffs = assert_trees_close(_tree(), _tree(), rtol=0, atol=0)
    assert len(diffs) == 4 and all(d.ok and d.max_abs == 0 for d in diffs)


def test_check_structure_names_missing_and_extra():
    e = flatten(_tree())
    check_structure(dict(e), e)
    missing = {k: v for k, v in e.items() if k != "b/1"}
    with pytest.raises(AssertionError, match="missing 'b/1'"):
        check_structure(missing, e)
    with pytest.raises(AssertionError, match="unexpected 'c' and 1 more"):
        check_structure({**e, "c": 0, "d": 0}, e)
    with pytest.raises(AssertionError, match="tree structures differ"):
        compare_trees(missing, e, rtol=1, atol=1)  # compare_trees checks the structure first


@pytest.mark.parametrize("count", [1, 2, 3])
def test_check_structure_counts_the_rest(count):
    """The message names the first missing and first extra leaf and counts the others, exactly."""
    e = {f"e{i}": 0 for i in range(4)}
    actual = {**{k: 0 for k in list(e)[count:]}, **{f"x{i}": 0 for i in range(count)}}
    more = f" and {count - 1} more" if count > 1 else ""
    with pytest.raises(AssertionError) as info:
        check_structure(actual, e)
    assert str(info.value) == f"tree structures differ: missing 'e0'{more}; unexpected 'x0'{more}"


# --- activations and the first divergent layer ---------------------------------------------------

def _acts(hidden=(4,), offsets=None):
    rng = np.random.default_rng(0)
    acts = {name: rng.standard_normal((2, 4)) for name in layer_order(hidden)}
    for name, off in (offsets or {}).items():
        acts[name] = acts[name] + off
    return acts


def test_layer_order():
    assert layer_order((4,)) == ["flatten", "linear_relu_stack_0", "linear_relu_stack_1", "linear_relu_stack_2", "logits"]


def test_compare_activations_clean_and_first_divergence():
    ref = _acts()
    diffs, first = compare_activations(ref, _acts(), (4,), rtol=1e-6, atol=1e-6)
    assert first is None and [d.name for d in diffs] == layer_order((4,)) and all(d.ok for d in diffs)
    diffs, first = compare_activations(ref, _acts(offsets={"linear_relu_stack_1": 1e-3, "logits": 1e-3}), (4,), 1e-6, 1e-6)
    assert first == "linear_relu_stack_1"
    assert [d.ok for d in diffs] == [True, True, False, True, False]


@pytest.mark.parametrize("bad", [1e-3, np.nan, np.inf])
def test_last_layer_divergence_is_found(bad):
    _, first = compare_activations(_acts(), _acts(offsets={"logits": bad}), (4,), rtol=1e-6, atol=1e-6)
    assert first == "logits"


def test_torch_and_flax_activations_name_every_layer_and_agree():
    """Both sides' activations of a tiny MLP with the same weights: every layer in layer_order, the values the
    layers compute (flatten: the input; the last layer: the logits), equal to float32 rounding."""
    torch.manual_seed(0)
    model = TorchNeuralNetwork((4,))
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    t = torch_activations(model, torch.from_numpy(x))
    f = flax_activations(H.torch_to_flax(model.state_dict()), (4,), x)
    assert set(t) == set(f) == set(layer_order((4,)))
    np.testing.assert_array_equal(t["flatten"], x.reshape(3, 784))
    np.testing.assert_array_equal(t["linear_relu_stack_2"], t["logits"])
    assert (t["linear_relu_stack_1"] >= 0).all() and (t["linear_relu_stack_0"] < 0).any()  # the ReLU's output
    for name in layer_order((4,)):
        np.testing.assert_allclose(f[name], t[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_compare_activations_needs_every_layer():
    flax_acts = {k: v for k, v in _acts().items() if k != "linear_relu_stack_2"}
    with pytest.raises(AssertionError, match="missing 'linear_relu_stack_2'"):
        compare_activations(_acts(), flax_acts, (4,), 1e-6, 1e-6)


# --- uniform initialisation -----------------------------------------------------------------------

def _uniform_layer(rng, fan_in, fan_out, scale=1.0):
    b = 1 / math.sqrt(fan_in)
    return {"kernel": rng.uniform(-b, b, (fan_in, fan_out)) * scale, "bias": rng.uniform(-b, b, fan_out) * scale}


def test_uniform_init_accepts_torch_like_draws():
    rng = np.random.default_rng(0)
    assert uniform_init_violations({"l0": _uniform_layer(rng, 784, 512), "l1": _uniform_layer(rng, 512, 10)}) == []


def test_uniform_init_flags_each_kind_of_wrong_draw():
    rng = np.random.default_rng(0)
    b = 1 / math.sqrt(784)
    cases = {
        "normal with the same variance": ({"kernel": rng.normal(0, b / math.sqrt(3), (784, 512)),
                                           "bias": rng.uniform(-b, b, 512)}, "l/kernel: |w| max"),
        "zero bias": ({"kernel": rng.uniform(-b, b, (784, 512)), "bias": np.zeros(512)}, "l/bias: variance 0"),
        "half the range": (_uniform_layer(rng, 784, 512, 0.5), "l/kernel: variance"),
        "shifted mean": ({"kernel": rng.uniform(-b, b, (784, 512)) * 0.9 + 0.05 * b,
                          "bias": rng.uniform(-b, b, 512)}, "l/kernel: mean"),
        # NaN compares False with every bound: a check written as ``> bound`` alone would pass it
        "one NaN weight": ({"kernel": np.where(np.arange(784 * 512).reshape(784, 512) == 7, np.nan,
                                               rng.uniform(-b, b, (784, 512))),
                            "bias": rng.uniform(-b, b, 512)}, "l/kernel: 1 non-finite values"),
        "an infinite bias": ({"kernel": rng.uniform(-b, b, (784, 512)),
                              "bias": np.append(rng.uniform(-b, b, 511), np.inf)}, "l/bias: 1 non-finite values"),
    }
    for what, (layer, expected) in cases.items():
        problems = uniform_init_violations({"l": layer})
        assert any(p.startswith(expected) for p in problems), (what, problems)
    # The last layer is checked too.
    params = {"l0": _uniform_layer(rng, 784, 512),
              "l1": {"kernel": _uniform_layer(rng, 512, 10)["kernel"], "bias": np.zeros(10)}}
    assert "l1/bias: all 10 values equal 0" in uniform_init_violations(params)
