"""The committed study guide is what ``python -m quickstart_parity_guide`` generates from the current code."""
from quickstart_parity_guide.guide import CHAPTERS, GUIDE, generate


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
