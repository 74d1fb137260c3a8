"""python -m quickstart_parity_guide: write the study guide (markdown, the two-column page, the notebooks)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quickstart_parity_guide.guide import GUIDE, REPO, build, generate
from reference_torch.basics import datasets as t_datasets
from reference_torch.data import get_datasets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m quickstart_parity_guide", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=str(GUIDE),
                   help="the markdown guide; the HTML page goes next to it (.html), the notebooks in notebooks/ beside it")
    p.add_argument("--no-execute", action="store_true", help="write the notebooks without running them (no outputs)")
    p.add_argument("--check", action="store_true",
                   help="write nothing: exit 1 if the committed guide, page or notebooks (cell sources) are out of date")
    args = p.parse_args(argv)
    try:  # the HTML page and the notebooks need the dev extra (pip install -e '.[dev]')
        from quickstart_parity_guide import render  # noqa: PLC0415 -- needs the dev extra (nbformat, nbclient)
    except ImportError as e:
        print(f"error: {e.name} is missing: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    built = build(args.data_dir)
    text = generate(args.data_dir, built)
    if args.check:
        guide_stale = not GUIDE.exists() or GUIDE.read_text() != text
        stale = ([str(GUIDE.relative_to(REPO))] if guide_stale else []) + render.stale(built)
        fix = "\nrun python -m quickstart_parity_guide"
        print("\n".join(f"out of date: {s}" for s in stale) + fix if stale else "all current")
        return 1 if stale else 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)

    t_datasets.sample_grid(get_datasets(args.data_dir, download=False)[0], out.parent / "sample_grid.png")
    written = [out, out.parent / "sample_grid.png"]
    written += render.write_all(built, out.with_suffix(".html"), out.parent / "notebooks", run=not args.no_execute)
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
