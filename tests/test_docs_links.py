"""Every relative link in README.md and docs/*.md leads somewhere: the file or folder exists, and an
``#anchor`` is a heading of the page it points to (GitHub's anchors). Links inside code are not links."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from quickstart_parity_guide.guide import anchor
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")


def links(text: str) -> list[str]:
    """The targets of the markdown links and images of ``text``, code blocks and inline code left out."""
    text = _CODE.sub("", _FENCE.sub("", text))
    return _LINK.findall(text)


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub gives ``page``: a repeated heading gets ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    out = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = anchor(m.group(1).replace("`", ""))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def broken(page: Path) -> list[str]:
    bad = []
    for target in links(page.read_text()):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("/"):
            continue  # a web address or an absolute path: not the repository's to check
        path, _, frag = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{page.relative_to(REPO)}: {target}: no such file")
        elif frag and (dest.suffix != ".md" or frag not in anchors(dest)):
            bad.append(f"{page.relative_to(REPO)}: {target}: no heading #{frag} in {dest.relative_to(REPO)}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_link_check_catches_what_it_should(tmp_path, monkeypatch):
    """A missing file, a missing anchor and a link in code are each told apart."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading\n\n## A `code` heading\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-code-heading) [dup](other.md#a-code-heading-1) [self](#page)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) ![img](pic.png) [web](https://example.com/x)\n"
                    "`[in code](nothing.md)`\n\n```\n[fenced](nothing.md)\n```\n")
    assert broken(page) == ["page.md: missing.md: no such file",
                            "page.md: other.md#nowhere: no heading #nowhere in other.md",
                            "page.md: pic.png: no such file"]
