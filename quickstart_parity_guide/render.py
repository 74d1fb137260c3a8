"""The study guide as a two-column HTML page and as one Jupyter notebook per chapter.

Both are rendered from ``quickstart_parity_guide.guide.build`` (the same chapters, sources and numbers as
``docs/side_by_side.md``); ``python -m quickstart_parity_guide`` writes all three, and ``test_render.py``
checks the committed files are current, opens the page in a headless chromium and executes every
notebook.

- ``docs/side_by_side.html``: torch on the left, JAX on the right, one grid row per function so each
  pair starts on the same line, the numbers each pair produces right under it. Self-contained: inline
  CSS, images as data URIs, no script, nothing fetched.
- ``docs/notebooks/<module>.ipynb``: the chapter's explanation, then per function a torch cell and a
  JAX cell (``%%run_in <module>`` runs each inside its own basics module, see ``quickstart_parity_guide/cells.py``),
  then a cell printing the numbers.
"""
from __future__ import annotations

import ast
import base64
import html
import importlib
import inspect
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from quickstart_parity_guide.guide import (
    INTRO,
    NO_COUNTERPART,
    REPO,
    Built,
    anchor,
    exercises_markdown,
    fmt,
    numbers_title,
)

HTML_PAGE = REPO / "docs" / "side_by_side.html"
NOTEBOOKS = REPO / "docs" / "notebooks"
KERNEL = "quickstart-parity"  # the kernelspec name used to execute the notebooks with this interpreter
SIDE_CLASSES = ("torch", "jax")  # the CSS class of the first columns; further ones (e.g. Flax NNX) are "extra"
_NUMBER_KEY = re.compile(r"`(\w+)")  # the function a number is about: the first name in backticks


# ---------------------------------------------------------------- markdown (the subset the guide uses) to HTML


def _prose(text: str, images: Path) -> str:
    """Escape ``text`` and turn its **bold**, links and images into HTML (images inlined from ``images``)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)

    def image(m: re.Match) -> str:
        path = images / html.unescape(m.group(2))
        mime = {".png": "image/png", ".jpg": "image/jpeg", ".svg": "image/svg+xml"}[path.suffix.lower()]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(m.group(1))}" src="data:{mime};base64,{data}">'

    out = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def inline(text: str, images: Path) -> str:
    """One line of the guide's markdown (code spans, bold, links, images, ``<br>``) as HTML."""
    return "<br>".join(_inline_piece(piece, images) for piece in text.split("<br>"))


def _inline_piece(text: str, images: Path) -> str:
    codes: list[str] = []  # code spans set aside first: no markup inside them, and **`x` vs y** still bolds

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{html.escape(m.group(1))}</code>")
        return f"\0{len(codes) - 1}\0"

    prose = _prose(re.sub(r"`([^`]*)`", keep, text), images)
    return re.sub(r"\0(\d+)\0", lambda m: codes[int(m.group(1))], prose)


def blocks(text: str, images: Path) -> str:
    """Paragraphs and ``- `` lists of the guide's markdown as HTML."""
    out = []
    for block in (b.strip() for b in text.split("\n\n")):
        lines = block.splitlines()
        if not lines:
            continue
        if all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{inline(line[2:], images)}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{inline(' '.join(lines), images)}</p>")
    return "\n".join(out)


# ---------------------------------------------------------------- the HTML page


def _code(source: str) -> str:
    """Highlighted Python source (pygments' classes; the page's CSS holds the colours)."""
    from pygments import highlight  # noqa: PLC0415 -- pygments: dev extra
    from pygments.formatters import HtmlFormatter  # noqa: PLC0415 -- as pygments above
    from pygments.lexers import PythonLexer  # noqa: PLC0415 -- as pygments above

    lines = highlight(source, PythonLexer(), HtmlFormatter(nowrap=True)).rstrip("\n").split("\n")
    raw = source.split("\n")
    assert len(lines) == len(raw), "pygments changed the line count"
    # one block per line, its wrapped remainder indented 4 columns past the line's own indent (a hanging
    # indent), so a long line wrapped on a narrow column still reads as one line of Python
    return "".join(f'<span class="ln" style="--i:{len(r) - len(r.lstrip(" "))}">{h or " "}</span>'
                   for h, r in zip(lines, raw, strict=True))


def _css() -> str:
    from pygments.formatters import HtmlFormatter  # noqa: PLC0415 -- as pygments above

    return _CSS + HtmlFormatter(style="default").get_style_defs(".code")


_CSS = """
* { box-sizing: border-box; }
body { margin: 0; color: #1f2328; background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1760px; margin: 0 auto; padding: 0 18px 48px; }
h1 { font-size: 1.6em; margin: 18px 0 6px; }
h2 { font-size: 1.35em; margin: 36px 0 0; padding-top: 10px; border-top: 2px solid #d0d7de; }
h3 { font-size: 1.02em; margin: 0; }
section > h3 { margin: 22px 0 4px; }
nav a { margin-right: 0.9em; }
code { font: 0.9em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
       background: #eff1f3; padding: 0 3px; border-radius: 3px; }
section { --n: 2; }
.pair, .modules, .rest { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); column-gap: 14px; }
.modules { position: sticky; top: 0; z-index: 1; background: #fff; padding: 6px 0; font-size: 13px;
           border-bottom: 1px solid #d0d7de; }
.modules b { font-size: 15px; margin-right: 6px; }
.modules .torch b { color: #b3361b; } .modules .jax b { color: #1a56b8; } .modules .extra b { color: #1b7f3b; }
.pair, .rest { row-gap: 4px; margin: 18px 0 0; }
.pair > h3, .what, .numbers-title { grid-column: 1 / -1; }
pre.code { margin: 0; padding: 7px 10px; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 5px;
           font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
           white-space: pre-wrap; overflow-wrap: anywhere; tab-size: 4; }
pre.code .ln { display: block; padding-left: calc((var(--i) + 4) * 1ch); text-indent: calc((var(--i) + 4) * -1ch); }
.side.torch pre.code { border-left: 4px solid #ee4c2c; }
.side.jax pre.code { border-left: 4px solid #5e97f6; }
.side.extra pre.code { border-left: 4px solid #2da44e; }
.missing { color: #57606a; font-style: italic; padding: 7px 10px; border: 1px dashed #d0d7de; border-radius: 5px; }
.what { font-size: 13px; color: #57606a; margin-top: 4px; }
.num { font-size: 13px; padding: 3px 8px; background: #fff8e1; border-radius: 4px; overflow-wrap: anywhere; }
.num code { background: none; padding: 0; }
.numbers-title { font-weight: 600; margin-top: 8px; }
img { max-width: 100%; }
"""


def _side_class(i: int) -> str:
    return SIDE_CLASSES[i] if i < len(SIDE_CLASSES) else "extra"


def _pair_rows(name: str, sources: list[str | None], numbers: list) -> list[str]:
    out = [f'<div class="pair" id="{html.escape(name)}">', f"<h3><code>{html.escape(name)}</code></h3>"]
    for i, src in enumerate(sources):
        body = f'<pre class="code">{_code(src)}</pre>' if src else f'<div class="missing">{NO_COUNTERPART.strip("*")}</div>'
        out.append(f'<div class="side {_side_class(i)}">{body}</div>')
    out += _number_rows(numbers)
    return out + ["</div>"]


def _number_rows(numbers: list) -> list[str]:
    out = []
    for what, *values in numbers:
        out.append(f'<div class="what">{inline(what, REPO)}</div>')
        out += [f'<div class="num {_side_class(i)}">{inline(fmt(v), REPO)}</div>' for i, v in enumerate(values)]
    return out


def render_html(built: list[Built], docs: Path = HTML_PAGE.parent) -> str:
    """The self-contained page, one column per side; images named in the chapters' markdown are read from ``docs``."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>The PyTorch basics tutorial, side by side with JAX</title>",
           f"<style>{_css()}</style>", "</head>", "<body>", "<main>",
           "<!-- generated by `python -m quickstart_parity_guide`; do not edit: "
           "quickstart_parity_guide/test_render.py checks it is current -->",
           "<h1>The PyTorch basics tutorial, side by side with JAX</h1>", blocks(INTRO, docs),
           "<nav>" + "".join(f'<a href="#{anchor(b.chapter.title)}">{html.escape(b.chapter.title)}</a>' for b in built)
           + "</nav>"]
    for b in built:
        chapter = b.chapter
        out.append(f'<section id="{anchor(chapter.title)}" style="--n:{len(b.sides)}">')
        out.append(f"<h2>{html.escape(chapter.title)}</h2>")
        # the chapter's column heads stay in view while its code scrolls by
        out.append('<div class="modules">' + "".join(
            f'<div class="{_side_class(i)}"><b>{html.escape(label)}</b><code>{module}</code></div>'
            for i, (label, module) in enumerate(b.sides)) + "</div>")
        placed, rest = _place_numbers(b)
        for name, sources in b.pairs:
            out += _pair_rows(name, sources, placed.get(name, []))
        if rest:
            out += ['<div class="rest">', f'<div class="numbers-title">{numbers_title(len(b.sides))}</div>']
            out += _number_rows(rest) + ["</div>"]
        if chapter.extra:
            out.append(blocks(chapter.extra, docs))
        out += ["<h3>Differences in kind</h3>", blocks("\n".join(f"- {d}" for d in chapter.differences), docs)]
        if chapter.exercises:
            out += ["<h3>Exercises</h3>", "<ol>"] + [
                f"<li>{inline(ex.question, docs)}<details><summary>Answer</summary>"
                f'<pre class="code">{_code(ex.answer.strip())}</pre></details></li>' for ex in chapter.exercises] + ["</ol>"]
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _place_numbers(b: Built) -> tuple[dict[str, list], list]:
    """Each number under the function it names first (in backticks); the rest (no such name) for the chapter's end."""
    names = {name for name, _ in b.pairs}
    placed: dict[str, list] = {}
    rest = []
    for row in b.numbers:
        m = _NUMBER_KEY.search(row[0])
        if m and m.group(1) in names:
            placed.setdefault(m.group(1), []).append(row)
        else:
            rest.append(row)
    return placed, rest


# ---------------------------------------------------------------- notebooks


def _relink(markdown: str) -> str:
    """Relative links and images of a docs/ page, as seen from docs/notebooks/."""
    return re.sub(r"(!?\[[^\]]*\]\()(?!https?:|#|/)([^)\s]+\))", r"\1../\2", markdown)


def render_notebooks(built: list[Built]) -> dict:
    """One unexecuted notebook per chapter, keyed by file name (``<module>.ipynb``)."""
    import nbformat  # noqa: PLC0415 -- nbformat is in the dev extra
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook  # noqa: PLC0415 -- as nbformat above

    books = {}
    for b in built:
        chapter = b.chapter
        labels = [label for label, _ in b.sides]
        cells = [new_markdown_cell("\n".join([
            f"# {chapter.title}: {', '.join(labels[:-1])} and {labels[-1]} side by side", "",
            "<!-- generated by `python -m quickstart_parity_guide`; do not edit: "
            "quickstart_parity_guide/test_render.py executes it -->", "",
            (f"Each function of `{b.sides[0][1]}` and its twin in " + ", ".join(f"`{m}`" for _, m in b.sides[1:])
             + ": one cell per side, in that order. `%%run_in <module>` runs a cell inside that module (the twins "
             "share their names), so the numbers printed at the end come from the code as you edit and rerun it. "
             "Run from the repository's environment (`make setup`; the data: `make data`)."), "",
            "## Differences in kind", "", *[f"- {d}" for d in chapter.differences], "",
            *exercises_markdown(chapter)]).rstrip())]
        cells.append(new_code_cell("%load_ext quickstart_parity_guide.cells\n"
                                   "from quickstart_parity_guide.cells import print_numbers\n"
                                   "from quickstart_parity_guide.guide import REPO\n\n"
                                   'DATA_DIR = str(REPO / "data")  # FashionMNIST, where `make data` puts it'))
        cells.append(new_markdown_cell("### The modules' imports and constants\n\nWhat the functions below use."))
        cells += [new_code_cell(f"%%run_in {module}\n{_preamble(module)}") for _, module in b.sides]
        for name, sources in b.pairs:
            cells.append(new_markdown_cell(f"### `{name}`"))
            for (label, module), src in zip(b.sides, sources, strict=True):
                cells.append(new_code_cell(_in_module(module, name, src)) if src
                             else new_markdown_cell(f"**{label}**: {NO_COUNTERPART}"))
        cells.append(new_markdown_cell(f"## {numbers_title(len(b.sides))}"))
        cells.append(new_code_cell(f'print_numbers("{chapter.module}", DATA_DIR)'))
        if chapter.extra:
            cells.append(new_markdown_cell(_relink(chapter.extra.strip())))
        for i, cell in enumerate(cells):
            cell.id = f"{chapter.module}-{i}"  # stable ids: regenerating changes nothing that did not change
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        nbformat.validate(nb)
        books[f"{chapter.module}.ipynb"] = nb
    return books


def _preamble(module: str) -> str:
    """The module's top-level code other than its docstring, functions and classes: imports, constants, aliases."""
    source = inspect.getsource(importlib.import_module(module))
    lines = source.splitlines()
    out: list[str] = []
    end = 0
    for i, node in enumerate(ast.parse(source).body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"  # %%run_in compiles cells the same way
        main = isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
        if docstring or future or main or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = node.lineno - 1 - (len(node.decorator_list) if hasattr(node, "decorator_list") else 0)
        if out and start > end:
            out.append("")  # keep the file's grouping (imports, then constants)
        out += lines[start:node.end_lineno]
        end = node.end_lineno
    return "\n".join(out)


def _in_module(module: str, name: str, source: str) -> str:
    """The cell for ``name``: run in the module that defines it (an alias such as ``save_weights = checkpoint.save``
    runs in ``checkpoint``, with the globals its code was written against)."""
    home = getattr(getattr(importlib.import_module(module), name), "__module__", None) or module
    return f"%%run_in {module if source.startswith('from ') else home}\n{source}"


def cell_sources(nb) -> list[tuple[str, str]]:
    """What the staleness check compares: each cell's type and source (outputs vary with the run)."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def execute(nb, cwd: Path = NOTEBOOKS, timeout: int = 600):
    """Run every cell of ``nb`` (in place) in a kernel of this interpreter; raises on the first failing cell."""
    from jupyter_client import KernelManager  # noqa: PLC0415 -- dev extra, only to run notebooks
    from jupyter_client.kernelspec import KernelSpecManager  # noqa: PLC0415 -- as above
    from nbclient import NotebookClient  # noqa: PLC0415 -- as above

    with tempfile.TemporaryDirectory() as tmp:
        # a kernelspec pointing at sys.executable: the notebook runs with this venv's packages, whatever
        # kernels the machine has installed (the notebooks' own metadata names the usual python3)
        spec = Path(tmp) / KERNEL
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": KERNEL, "language": "python"}))
        km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]))
        client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                                resources={"metadata": {"path": str(cwd)}})
        # REPO first on the kernel's path: the cells run this checkout's code, whichever copy the venv installed
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        try:
            client.execute(env={**os.environ, "PYTHONPATH": path})
        finally:  # nbclient leaves a kernel it did not start running
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb


def write_all(built: list[Built], page: Path = HTML_PAGE, notebooks: Path = NOTEBOOKS, run: bool = True) -> list[Path]:
    """Write the HTML page (images from its folder) and the notebooks, executed unless ``run`` is False.

    Returns the paths written; notebooks of chapters that no longer exist are removed.
    """
    import nbformat  # noqa: PLC0415 -- nbformat is in the dev extra

    page.write_text(render_html(built, page.parent))
    written = [page]
    notebooks.mkdir(parents=True, exist_ok=True)
    books = render_notebooks(built)
    for old in notebooks.glob("*.ipynb"):
        if old.name not in books:
            old.unlink()
    for name, nb in books.items():
        if run:
            execute(nb, notebooks)
        nbformat.write(nb, notebooks / name)
        written.append(notebooks / name)
    return written


def stale(built: list[Built]) -> list[str]:
    """The committed renderings that differ from what ``built`` renders to (empty: all current)."""
    import nbformat  # noqa: PLC0415 -- nbformat is in the dev extra

    out = []
    if not HTML_PAGE.exists() or HTML_PAGE.read_text() != render_html(built):
        out.append(str(HTML_PAGE.relative_to(REPO)))
    books = render_notebooks(built)
    committed = {p.name for p in NOTEBOOKS.glob("*.ipynb")} if NOTEBOOKS.exists() else set()
    for name in sorted(committed | set(books)):
        path = NOTEBOOKS / name
        if name not in books or name not in committed or \
                cell_sources(nbformat.read(path, as_version=4)) != cell_sources(books[name]):
            out.append(str(path.relative_to(REPO)))
    return out
