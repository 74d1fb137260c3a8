"""What the study notebooks (``docs/notebooks/<chapter>.ipynb``) run besides the chapter's own code.

``%load_ext quickstart_parity_guide.cells`` adds the cell magic ``%%run_in <module>``: the cell's code runs inside that
module (``reference_torch.basics.tensors``, say), as if written in its file. The torch and JAX twins
share their names (``from_data`` on both sides), so each side's definitions must live in their own
namespace; and because the chapter's numbers are computed by calling those modules, a cell edited
and rerun changes the numbers printed at the end of the notebook.

``print_numbers`` prints a chapter's numbers as plain text, in the form ``parse_numbers`` reads back
(``quickstart_parity_guide/test_render.py`` compares them with the guide's).
"""
from __future__ import annotations
import __future__

import importlib

from quickstart_parity_guide.guide import CHAPTERS, fmt


def run_in(line: str, cell: str) -> None:
    """Cell magic body: execute ``cell`` in the namespace of the module named on the magic's line."""
    module = importlib.import_module(line.strip())
    flags = 0
    # the basics modules start with `from __future__ import annotations`: compile the cell the same way,
    # so an annotation naming a class defined later in the file means what it means there
    if module.__dict__.get("annotations") is __future__.annotations:
        flags |= __future__.annotations.compiler_flag
    # running the cell is the point (hence the noqa for exec)
    exec(compile(cell, f"<{module.__name__} cell>", "exec", flags, dont_inherit=True), module.__dict__)  # noqa: S102


def load_ipython_extension(ipython) -> None:
    """``%load_ext quickstart_parity_guide.cells``: register ``%%run_in``."""
    ipython.register_magic_function(run_in, magic_kind="cell", magic_name="run_in")


def plain(value) -> str:
    """``study.fmt``'s text of a value without its markdown (backticks, ``<br>``)."""
    return fmt(value).replace("<br>", "; ").replace("`", "")


def number_lines(rows: list[tuple], labels: list[str]) -> list[str]:
    """Per number: what, then one indented ``label: value`` line per side."""
    width = max(len(label) for label in labels) + 1
    lines = []
    for what, *values in rows:
        lines += [what.replace("`", "")]
        lines += [f"  {label + ':':{width}} {plain(v)}" for label, v in zip(labels, values, strict=True)]
    return lines


def parse_numbers(text: str) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """The rows of ``print_numbers``'s output: (what, ((label, value text), ...)); ValueError on anything else."""
    rows: list[tuple[str, list]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith("  "):
            rows.append((line, []))
            continue
        label, sep, value = line.strip().partition(":")
        if not rows or not sep:
            raise ValueError(f"expected '  <side>: <value>' under a heading line, got {line!r}")
        rows[-1][1].append((label, value.strip()))
    if not rows or any(len(values) < 2 for _, values in rows):
        raise ValueError(f"not (what, a value per side) rows:\n{text}")
    return [(what, tuple(values)) for what, values in rows]


def print_numbers(module: str, data_dir: str) -> None:
    """Compute and print the numbers of the chapter whose basics module is ``module``."""
    chapter = next((c for c in CHAPTERS if c.module == module), None)
    if chapter is None:
        raise ValueError(f"no chapter for basics module {module!r} in quickstart_parity_guide.guide.CHAPTERS")
    print("\n".join(number_lines(chapter.rows(data_dir), [label for label, _ in chapter.sides])))
