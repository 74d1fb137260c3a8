"""``parity.names``: the naming styles ports use, matched strictest first, as a one-to-one mapping."""
from __future__ import annotations

import pytest

from parity import names as N


@pytest.mark.parametrize("torch_path, flax_path, level", [
    ("transformer.h.0.attn", "transformer/h/0/attn", "exact"),        # Linen nested names, HF's Flax GPT-2
    ("linear_relu_stack.0", "linear_relu_stack_0", "index"),           # Sequential index joined with _
    ("layers.3.norm", "layers_3/norm", "index"),
    ("fc_2", "fc_2", "exact"),                                         # a torch name with _<digit> is not split when exact
    ("stages.0.layers.0.layer.0.convolution", "stages/0/layers/0/layer/layer_0/convolution", "collapsed"),  # HF ResNet
    ("layer1.0.conv1", "layer1/layers/0/conv1", "sequential"),         # nnx.Sequential's layers
])
def test_each_style_matches_at_its_level(torch_path, flax_path, level):
    assert N.match([torch_path], [flax_path]) == {torch_path: (flax_path, level)}


def test_strictest_level_wins_and_matches_are_one_to_one():
    # "fc.2" would match "fc_2" at the index level, but "fc_2" exists exactly: the exact pair is taken first
    got = N.match(["fc_2", "fc.2"], ["fc_2", "fc/2"])
    assert got == {"fc_2": ("fc_2", "exact"), "fc.2": ("fc/2", "exact")}
    # two torch paths that reduce to one key are ambiguous at that level: neither is matched by it
    assert N.match(["a.0", "a_0"], ["a/x"]) == {}


def test_unmatched_stay_unmatched():
    assert N.match(["norm"], ["layer_norm"]) == {}
    assert N.match(["encoder.0"], ["decoder_0"]) == {}


@pytest.mark.parametrize("rule, expect", [
    ({"classifier.1": "classifier"}, "classifier"),
    ([(r"^classifier\.1$", "classifier")], "classifier"),
    (lambda p: p.replace(".1", ""), "classifier"),
])
def test_user_rules(rule, expect):
    assert N.match(["classifier.1"], ["classifier"], rule)["classifier.1"][0] == expect


def test_prefix_rule_is_longest_first_and_whole_segments():
    rule = {"a": "x", "a.b": "y"}
    assert N.apply_rule("a.b.c", rule) == "y.c"
    assert N.apply_rule("ab.c", rule) == "ab.c"  # "a" is not a prefix of the segment "ab"


def test_rule_returning_no_str_is_refused():
    with pytest.raises(TypeError, match="expected a str"):
        N.match(["a"], ["a"], lambda p: None)


def test_ignored_globs_match_a_module_or_its_parents():
    ignore = {"*.act": "a function", "lm_head": "tied"}
    assert N.ignored("h.0.mlp.act", ignore) == "a function"
    assert N.ignored("lm_head.inner", ignore) == "tied"
    assert N.ignored("h.0.mlp.c_fc", ignore) is None
