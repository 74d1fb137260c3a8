"""``make test-fast`` (``pytest -m fast``) stays what the README says: every file and test named in
conftest.py's FAST list exists (a renamed test would drop out silently), and together they import
every package of the project."""
from __future__ import annotations

import ast

from conftest import FAST, is_fast
from tests.helpers import REPO
from tools.imports import PACKAGES, _modules, imports_of


def test_every_fast_entry_exists():
    for rel, names in FAST.items():
        path = REPO / rel
        assert path.exists(), rel
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        missing = {n.removeprefix("-") for n in names or ()} - defined
        assert not missing, f"{rel}: no test function {sorted(missing)}"
        assert names is None or len({n.startswith("-") for n in names}) == 1, f"{rel}: names to run and to keep out mixed"


def test_the_fast_loop_touches_every_package():
    modules = _modules(REPO)
    touched = {rel.split("/")[0] for rel in FAST}
    for rel in FAST:
        touched |= {target.split(".")[0] for _, target, _ in imports_of(REPO / rel, modules)}
    assert set(PACKAGES) <= touched, f"the fast loop imports nothing of {sorted(set(PACKAGES) - touched)}"


def test_is_fast_reads_the_list():
    some = next(rel for rel, names in FAST.items() if names and not names[0].startswith("-"))
    out = next(rel for rel, names in FAST.items() if names and names[0].startswith("-"))
    whole = next(rel for rel, names in FAST.items() if names is None)
    assert is_fast(some, FAST[some][0], set()) and not is_fast(some, "test_not_listed", set())
    assert not is_fast(out, FAST[out][0][1:], set()) and is_fast(out, "test_not_listed", set())
    assert is_fast(whole, "test_anything", set()) and not is_fast(whole, "test_anything", {"slow"})
    assert not is_fast("tests/not_in_the_list.py", "test_x", set())
