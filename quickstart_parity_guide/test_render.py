"""The study guide's HTML page and notebooks: current, two columns in a real browser, every notebook executed.

The browser is Debian's chromium (``make test`` installs it when it can); without it the browser test
skips with the reason. The notebooks run in a kernel of this interpreter (``quickstart_parity_guide.render.execute``).
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from functools import partial

import nbformat
import pytest
from PIL import Image

from quickstart_parity_guide import guide as study
from quickstart_parity_guide import render
from quickstart_parity_guide.cells import number_lines, parse_numbers
from tests.helpers import at_once

WINDOW = (1366, 768)  # a laptop screen
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  f"--window-size={WINDOW[0]},{WINDOW[1]}"]

# Injected into a copy of the page: measures every pair once the page has loaded, and writes the verdict
# into the DOM, where `chromium --dump-dom` reads it back.
LAYOUT_JS = r"""
window.addEventListener("load", () => {
  const problems = [];
  const box = e => e.getBoundingClientRect();
  const pairs = [...document.querySelectorAll(".pair")];
  let numbered = 0;
  for (const p of pairs) {
    const sides = [...p.querySelectorAll(":scope > .side")];
    if (sides.length < 2 || !sides[0].matches(".torch") || !sides[1].matches(".jax")) {
      problems.push(`${p.id}: not torch then JAX (${sides.length} sides)`); continue;
    }
    const b = sides.map(box);
    b.forEach((x, i) => {
      if (i && !(b[i - 1].right <= x.left))
        problems.push(`${p.id}: side ${i - 1} ends at x=${b[i - 1].right}, side ${i} starts at x=${x.left}`);
      if (Math.abs(x.top - b[0].top) > 1) problems.push(`${p.id}: tops differ (side 0 y=${b[0].top}, side ${i} y=${x.top})`);
      if (x.width < 300 || Math.abs(x.width - b[0].width) > 1)
        problems.push(`${p.id}: column widths ${b.map(y => y.width)}`);
      const pre = sides[i].querySelector("pre.code");
      if (pre && !pre.textContent.includes(p.id)) problems.push(`${p.id}: side ${i}'s block does not show ${p.id}`);
    });
    const bottom = Math.max(...b.map(x => x.bottom));
    const whats = [...p.querySelectorAll(":scope > .what")], nums = [...p.querySelectorAll(":scope > .num")];
    if (nums.length !== whats.length * sides.length)
      problems.push(`${p.id}: ${nums.length} values for ${whats.length} numbers`);
    for (let r = 0; r < whats.length; r++) {
      const row = nums.slice(r * sides.length, (r + 1) * sides.length).map(box);
      row.forEach((x, i) => {
        if (Math.abs(x.left - b[i].left) > 1 || Math.abs(x.top - row[0].top) > 1 || x.top < bottom)
          problems.push(`${p.id}: number ${r}, side ${i} is not under its code in the same row`);
      });
    }
    if (whats.length) numbered++;
  }
  const blocks = [...document.querySelectorAll("pre.code")];
  let rendered = 0;
  for (const pre of blocks) {
    const b = box(pre);
    if (b.width > 0 && b.height > 0 && pre.textContent.trim() && pre.scrollWidth <= pre.clientWidth) rendered++;
    else problems.push(`code block in ${pre.closest(".pair").id}: ${b.width}x${b.height}, scrollWidth ${pre.scrollWidth}`);
  }
  const first = box(pairs[0].querySelector(".side.torch")), firstJ = box(pairs[0].querySelector(".side.jax"));
  const out = document.createElement("pre");
  out.id = "layout-verdict";
  out.textContent = JSON.stringify({
    pairs: pairs.length, numbered, blocks: blocks.length, rendered, problems,
    viewport: document.documentElement.clientWidth, page_width: document.documentElement.scrollWidth,  // less the scrollbar
    torch_column: [first.left, first.right], jax_column: [firstJ.left, firstJ.right]});
  document.body.appendChild(out);
});
"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not found: the browser test needs Debian's chromium (apt-get install chromium; "
                    "`make test` installs it when run as root)")
    return path


def _run_chromium(chromium: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              check=False, capture_output=True, text=True, timeout=180)


def test_page_and_notebooks_are_current(guide):
    stale = render.stale(guide)
    assert not stale, f"out of date: {stale}: run python -m quickstart_parity_guide"


def test_page_is_self_contained():
    page = render.HTML_PAGE.read_text()
    assert "<script" not in page
    # nothing fetched: no external stylesheet, font, image or script (links to other pages are fine)
    assert not re.search(r"""(src=|@import|url\()\s*["']?(https?:)?//""", page)
    assert page.count('<div class="pair"') == sum(len(c.functions) for c in study.CHAPTERS)


def test_two_columns_in_chromium(tmp_path):
    chromium = _chromium()
    probe = tmp_path / "probe.html"  # a copy of the page with the measuring script
    probe.write_text(render.HTML_PAGE.read_text().replace("</body>", f"<script>{LAYOUT_JS}</script>\n</body>"))
    dom = _run_chromium(chromium, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-verdict">(.*?)</pre>', dom.stdout, re.DOTALL)
    assert found, f"chromium wrote no verdict (exit {dom.returncode}): {dom.stderr[-2000:]}"
    verdict = json.loads(html.unescape(found.group(1)))

    shot = tmp_path / "side_by_side.png"  # the page itself, as a reader's laptop shows its top
    run = _run_chromium(chromium, f"--screenshot={shot}", render.HTML_PAGE.as_uri())
    assert shot.exists(), f"no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    with Image.open(shot) as image:
        assert image.size == WINDOW
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, f"the screenshot is nearly blank: {len(colours)} colours"

    page = render.HTML_PAGE.read_text()
    functions = sum(len(c.functions) for c in study.CHAPTERS)
    assert verdict["problems"] == [], verdict
    assert verdict["pairs"] == functions, verdict
    assert verdict["blocks"] == page.count('<pre class="code">') and verdict["rendered"] == verdict["blocks"], verdict
    assert verdict["numbered"] > 0, verdict
    assert verdict["page_width"] <= verdict["viewport"], f"the page scrolls sideways: {verdict}"
    torch_col, jax_col = verdict["torch_column"], verdict["jax_column"]  # the first chapter has two sides
    assert torch_col[1] <= verdict["viewport"] / 2 <= jax_col[0], f"columns not split at the middle: {verdict}"


def _numbers_output(nb) -> str:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("print_numbers(")]
    assert len(cells) == 1, "expected one print_numbers cell"
    return "".join(o.get("text", "") for o in cells[0].outputs if o.output_type == "stream" and o.name == "stdout")


NOTEBOOK_TEST = "test_notebook_runs_and_prints_the_guides_numbers"


@pytest.fixture(scope="module")
def executed(request) -> dict:
    """The committed notebook of every selected chapter, executed, two at a time: each runs in a kernel of
    its own that mostly keeps one core busy (imports, compiling), so two fill this machine's cores.
    ``{module: the executed notebook, or the exception its run raised}``."""
    wanted = [item.callspec.params["chapter"] for item in request.session.items
              if getattr(item, "originalname", None) == NOTEBOOK_TEST]

    def run(chapter):
        path = render.NOTEBOOKS / f"{chapter.module}.ipynb"
        try:
            return render.execute(nbformat.read(path, as_version=4))  # raises on the first cell that fails
        except Exception as e:  # noqa: BLE001 -- raised again by that chapter's test
            return e

    return at_once({chapter.module: partial(run, chapter) for chapter in wanted})


@pytest.mark.parametrize("chapter", study.CHAPTERS, ids=lambda c: c.module)
def test_notebook_runs_and_prints_the_guides_numbers(chapter, guide, executed):
    path = render.NOTEBOOKS / f"{chapter.module}.ipynb"
    assert path.exists(), f"{path} is missing: run python -m quickstart_parity_guide"
    nb = executed[chapter.module]
    if isinstance(nb, Exception):
        raise nb
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a code cell did not run"
    printed = parse_numbers(_numbers_output(nb))
    labels = [label for label, _ in chapter.sides]
    numbers = next(b.numbers for b in guide if b.chapter is chapter)  # chapter.numbers(data_dir), computed once
    expected = parse_numbers("\n".join(number_lines(numbers, labels)))
    assert [row[0] for row in printed] == [row[0] for row in expected]
    for got, want in zip(printed, expected, strict=True):
        assert got == want, f"{want[0]}: the notebook printed {got[1]}, the guide has {want[1]}"


def test_committed_notebooks_hold_their_outputs():
    """GitHub shows the committed notebooks: each code cell ran, and the numbers are printed."""
    for chapter in study.CHAPTERS:
        nb = nbformat.read(render.NOTEBOOKS / f"{chapter.module}.ipynb", as_version=4)
        assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), chapter.module
        assert parse_numbers(_numbers_output(nb)), chapter.module


def test_an_edited_cell_changes_the_printed_numbers():
    """The numbers come from the cells as run (``%%run_in``), not from the files: edit one, the output follows."""
    nb = nbformat.read(render.NOTEBOOKS / "transforms.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith("%%run_in reference_torch.basics.transforms")
                and "def one_hot" in c.source)
    cell.source += "\n\n\ndef one_hot(label):\n    return torch.full((10,), 7.0)\n"
    rows = dict(parse_numbers(_numbers_output(render.execute(nb))))
    key = next(k for k in rows if k.startswith("one_hot(3)"))  # the row's label names its inputs after it
    assert rows[key][0] == ("PyTorch", "[7., 7., 7., 7., 7., 7., 7., 7., 7., 7.] (float32)")
    assert rows[key][1][1].startswith("[0., 0., 0., 1.")


def test_number_lines_round_trip_and_reject_other_output():
    rows = [("`f(x)`: a", 1.0, [1, 2]), ("b", "x: y", True)]
    assert parse_numbers("\n".join(number_lines(rows, ["PyTorch", "JAX"]))) == [
        ("f(x): a", (("PyTorch", "1.0000"), ("JAX", "[1, 2] (int64)"))), ("b", (("PyTorch", "x: y"), ("JAX", "True")))]
    with pytest.raises(ValueError):
        parse_numbers("one line\n  PyTorch: 1\n")  # one side only
    with pytest.raises(ValueError):
        parse_numbers("  PyTorch: 1\n  JAX: 1\n")  # no heading line
