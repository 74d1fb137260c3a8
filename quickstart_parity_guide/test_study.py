"""The committed study guide is what ``python -m quickstart_parity_guide`` generates from the current code."""
import importlib

import numpy as np
import pytest

from quickstart_parity_guide.guide import CHAPTERS, EXERCISES, GUIDE, INPUTS_MARK, ROW_INPUTS, generate


def test_guide_is_current(data_dir, guide):
    assert GUIDE.exists(), "docs/side_by_side.md is missing: run python -m quickstart_parity_guide"
    fix = "run python -m quickstart_parity_guide"
    assert GUIDE.read_text() == generate(data_dir, guide), f"docs/side_by_side.md is out of date: {fix}"


def test_guide_covers_every_chapter():
    text = GUIDE.read_text()
    for chapter in CHAPTERS:
        assert f"## {chapter.title}" in text
        for name in chapter.functions:
            assert f"### `{name}`" in text


def test_every_row_says_what_it_feeds_in(guide):
    """The JAX functions shown draw their own inputs from JAX keys; a row fed torch's draws must say so,
    or a reader running the JAX side alone gets other numbers and no reason why."""
    for b in guide:
        for what, *_ in b.numbers:
            assert INPUTS_MARK in what and what.rstrip().endswith(")"), f"{b.chapter.title}: {what!r} names no inputs"
    assert set(ROW_INPUTS) == {c.module for c in CHAPTERS}


# Spellings that still run (so no warning says so) but that the JAX docs call legacy or superseded: a
# reader copies what the guide shows.
LEGACY = {"jax.random.PRNGKey(": "jax.random.key", "optax.global_norm(": "optax.tree.norm",
          "tree_flatten_with_path(": "jax.tree.flatten_with_path + keystr", ".devices()))": "x.device",
          "opt_state[0].trace": "optax.tree_utils.tree_get(opt_state, 'trace')", "x.at[...].add(": "x + 5"}


# Warnings a library raises about its own internals, whatever the caller writes; each with its reason.
NOT_OURS = {"`torch.jit.script` is deprecated": "torch's forward-mode AD scripts its own decompositions on the first "
                                                "jvp (torch/_decomp/decompositions_for_jvp.py); no guide code calls "
                                                "torch.jit"}


def test_shown_code_raises_no_deprecation_warning(guide):
    """Computing every chapter's numbers runs the code each chapter shows: no DeprecationWarning,
    PendingDeprecationWarning or FutureWarning may come out of it."""
    for b in guide:
        ours = [w for w in b.deprecations if not any(text in w for text in NOT_OURS)]
        assert not ours, f"{b.chapter.title}: {ours}"


def test_shown_code_uses_current_apis(guide):
    for b in guide:
        for name, sources in b.pairs:
            for src in filter(None, sources):
                for old, new in LEGACY.items():
                    assert old not in src, f"{b.chapter.title}, {name}: {old} (use {new})"


TUTORIAL_ORDER = ["tensors", "datasets", "transforms", "layers", "autograd", "optimization", "save_load"]


def test_chapters_follow_the_tutorials_order():
    """pytorch.org's Learn the Basics: Tensors, Datasets & DataLoaders, Transforms, Build the Neural
    Network, Automatic Differentiation, Optimization, Save & Load; the guide's own chapters after."""
    modules = [c.module for c in CHAPTERS]
    assert modules[:len(TUTORIAL_ORDER)] == TUTORIAL_ORDER


@pytest.mark.parametrize("module", sorted(EXERCISES))
def test_exercise_answers_are_right(module):
    chapter = next(c for c in CHAPTERS if c.module == module)
    for ex in chapter.exercises:
        scope = {"np": np, "t": importlib.import_module(f"reference_torch.basics.{module}"),
                 "j": importlib.import_module(f"jax_impl.basics.{module}")}
        exec(compile(ex.answer, f"<{module} exercise>", "exec"), scope)  # noqa: S102 -- the guide's own answer code
        assert eval(ex.check, scope) is True, f"{module}: {ex.question}"  # noqa: S307 -- the guide's own check


def test_a_wrong_answer_fails_its_check():
    ex = EXERCISES["jit"][0]
    scope = {"np": np, "j": importlib.import_module("jax_impl.basics.jit")}
    exec(ex.answer.replace("-x)", "x)"), scope)  # noqa: S102 -- a deliberately wrong answer
    assert eval(ex.check, scope) is False  # noqa: S307 -- the guide's own check
