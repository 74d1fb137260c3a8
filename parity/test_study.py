"""The committed study guide is what ``python -m parity.study`` generates from the current code."""
from parity.study import CHAPTERS, GUIDE, generate


def test_guide_is_current(data_dir, guide):
    assert GUIDE.exists(), "docs/side_by_side.md is missing: run python -m parity.study"
    assert GUIDE.read_text() == generate(data_dir, guide), "docs/side_by_side.md is out of date: run python -m parity.study"


def test_guide_covers_every_chapter():
    text = GUIDE.read_text()
    for chapter in CHAPTERS:
        assert f"## {chapter.title}" in text
        for name in chapter.functions:
            assert f"### `{name}`" in text
