"""The committed study guide is what ``python -m quickstart_parity_guide`` generates from the current code."""
from quickstart_parity_guide.guide import CHAPTERS, GUIDE, INPUTS_MARK, ROW_INPUTS, generate


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


def test_shown_code_raises_no_deprecation_warning(guide):
    """Computing every chapter's numbers runs the code each chapter shows: no DeprecationWarning,
    PendingDeprecationWarning or FutureWarning may come out of it."""
    for b in guide:
        assert not b.deprecations, f"{b.chapter.title}: {b.deprecations}"


def test_shown_code_uses_current_apis(guide):
    for b in guide:
        for name, sources in b.pairs:
            for src in filter(None, sources):
                for old, new in LEGACY.items():
                    assert old not in src, f"{b.chapter.title}, {name}: {old} (use {new})"
