"""Generated first-order mutants of the referee: ``make mutate-generated`` (not run in CI, minutes of CPU).

tools/mutate.py runs 40 mutations written by hand; this one writes them itself, from the code (stdlib ``ast`` and
``tokenize``), so that a check nobody thought of mutating is mutated too (issue 29: 13 of 16 survivors were in
``uniform_init_violations``). Operators, each applied alone at one place:

    compare   < <= > >= == !=: the edge (< to <=, ...) and the negation (< to >=, ...; == and != swap)
    arith     + and - swap, * and / swap (in expressions and in +=, -=, *=, /=)
    const     a number other than 0, x10 and /10
    minmax    max and min swap (max(...), .max(), np.max)
    boolop    and and or swap
    not       ``not`` removed
    return    ``return <value>`` made ``return None``

Each mutant is applied to one temporary copy of the repository (tools/mutate.py's ``copy_repo``), the target's fast
test subset runs there (``run_tests``; TESTS below, or --tests), and the file is restored. A mutant the tests fail
on is killed, one they pass survives, one that runs past --test-timeout seconds in a single test times out
(counted as killed: the tests did not pass). A survivor is either killed by a new test or listed in EQUIVALENT
with the reason it cannot change a verdict.

    python tools/mutants.py parity/compare.py parity/tolerances.py        # run, write tools/generated_mutants.json
    python tools/mutants.py --list parity/compare.py                      # the mutants, without running
    python tools/mutants.py -k uniform_init parity/compare.py             # mutants in functions matching this
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutate import REPO, copy_repo, run_tests  # noqa: E402 - tools/ is not a package

# target: the fast subset that should kill its mutants (a surviving mutant in ~5-15 s on a shared 2-core machine)
TESTS = {
    "parity/compare.py": ("parity/test_compare.py", "parity/test_init_check.py"),
    "parity/tolerances.py": ("parity/test_tolerances.py", "-k", "not calibration_reproduces"),
    "parity/checker.py": ("parity/test_checker.py",),
    "quickstart_parity_common/convert.py": ("parity/test_checker.py", "tests/test_jax_impl.py"),
}

# Survivors that cannot change any result, by (file, the mutated line's text stripped, column, operator): why.
EQUIVALENT: dict[tuple[str, str, int, str], str] = {
    ("parity/compare.py", "if abs(w.var() - b * b / 3) > 5 * b * b * math.sqrt(4 / 45) / math.sqrt(n):", 40,
     "compare > -> >="):
        "no float64 input puts the variance exactly on the bound at the MLP's sizes "
        "(parity/test_init_check.py::test_variance_exactly_on_the_bound_is_no_float64_input), so > and >= agree",
    ("parity/tolerances.py", "KINK_FORMULA = 784 * EPS32 * (1 / math.sqrt(784)) * 1.0", 50, "arith * -> /"):
        "x * 1.0 and x / 1.0 are the same float",
}

# Survivors that can change a result but that the fast subset cannot see, by the same key: why, and what would.
_ONE_PART = ("a 10x smaller {part} of a calibrated atol + rtol*|e|: the pins see the sum at the calibrated scale, "
             "still >= 2x the measured band with this part 10x smaller; whether the real runs need it shows only in "
             "the slow parity tests at their own scales (test_forward_backward.py, test_training.py)")
EXPLAINED: dict[tuple[str, str, int, str], str] = {
    **{("parity/tolerances.py", line, col, "const /10"): _ONE_PART.format(part=part) for line, col, part in [
        ('LOGITS = Tolerance(1e-5, 1e-6, "logits, real and random batch", ("logits (real batch)", '
         '"logits (random batch)"), 20.0)', 19, "rtol"),
        ('LOGITS = Tolerance(1e-5, 1e-6, "logits, real and random batch", ("logits (real batch)", '
         '"logits (random batch)"), 20.0)', 25, "atol"),
        ('GRADS = Tolerance(1e-6, 1e-7, "gradients of every parameter, random batch", ("grads (random batch)",), 15.0)',
         18, "rtol"),
        ('GRADS = Tolerance(1e-6, 1e-7, "gradients of every parameter, random batch", ("grads (random batch)",), 15.0)',
         24, "atol"),
        ('ONE_STEP = Tolerance(1e-6, 1.5e-8, "params after one SGD step", ("params after 1 step",), 20.0)', 21, "rtol"),
        ('ONE_STEP = Tolerance(1e-6, 1.5e-8, "params after one SGD step", ("params after 1 step",), 20.0)', 27, "atol"),
        ('ONE_EPOCH = Tolerance(1e-4, 1e-5, "params after one epoch", ("params after 1 epoch",), 10.0)', 22, "rtol"),
        ('ONE_EPOCH = Tolerance(1e-4, 1e-5, "params after one epoch", ("params after 1 epoch",), 10.0)', 28, "atol"),
    ]},
    ("parity/tolerances.py", 'AUTOGRAD = Tolerance(1e-6, 1e-7, "formula: ~8 EPS32 relative; a 5-input layer\'s sums '
     'round by a few ulps")', 27, "const /10"):
        "AUTOGRAD's atol 10x smaller: its tensors are of size ~1, where rtol carries the bound; the formula gives no "
        "floor for the atol; test_autograd.py (not in the subset) would fail if the tutorial's values needed it",
    ("parity/tolerances.py", "F64_ATOL = 1e-12", 11, "const /10"):
        "a 10x tighter float64 bound (1e-13): still sound if the float64 runs agree that well; only their real "
        "gaps (test_float64.py, test_optimizer.py: minutes, not in the subset) can tell",
    ("parity/tolerances.py", "SAME_SIZE = 4.0", 12, "const x10"):
        "a same-size ratio of 40 instead of 4: still far below the ~8192x (2^13) of a TF32 or bf16 fallback it is "
        "there to catch; only the stated 'factor 4' pins it, and a pin on a number is no test",
}

_COMPARE = {ast.Lt: ("<", ["<=", ">="]), ast.LtE: ("<=", ["<", ">"]), ast.Gt: (">", [">=", "<="]),
            ast.GtE: (">=", [">", "<"]), ast.Eq: ("==", ["!="]), ast.NotEq: ("!=", ["=="])}
_ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*")}


@dataclass
class Mutant:
    file: str
    line: int
    column: int  # characters into the line
    function: str
    operator: str
    original: str  # the replaced text
    mutated: str  # what replaces it
    start: int  # character offsets into the file
    end: int
    line_text: str = ""
    outcome: str = ""
    seconds: float = 0.0
    pytest: str = ""
    equivalent: str = ""  # why this survivor cannot change any result (EQUIVALENT)
    explained: str = ""  # why this survivor is left alive (EXPLAINED): it can, but the fast subset cannot see it


class _Source:
    """Character offsets of (line, UTF-8 column) positions, and the operator tokens of one file."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                       if t.type in (tokenize.OP, tokenize.NAME)]

    def offset(self, line: int, col: int) -> int:
        """ast's column is in UTF-8 bytes; tokenize's in characters (``chars=True``)."""
        return self.starts[line - 1] + len(self.lines[line - 1].encode()[:col].decode())

    def start(self, node) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def token(self, string: str, lo: int, hi: int) -> tuple[int, int] | None:
        """The first token ``string`` between offsets lo and hi (between two operands: only parens besides it)."""
        for t in self.tokens:
            a = self.starts[t.start[0] - 1] + t.start[1]
            if a >= hi:
                break
            if a >= lo and t.string == string:
                return a, a + len(string)
        return None


def _scaled(text: str, value, factor: str) -> str:
    """The literal ``value`` times 10 or divided by 10, written as a literal of the same kind where it can be."""
    d = Decimal(repr(value)) * 10 if factor == "x10" else Decimal(repr(value)) / 10
    if isinstance(value, int) and d == d.to_integral_value():
        return str(int(d))
    return repr(float(d))


def generate(path: str, text: str) -> list[Mutant]:
    """Every first-order mutant of one file's source, in file order; each one parses."""
    src = _Source(text)
    tree = ast.parse(text)
    found: list[Mutant] = []
    skip = set()  # docstrings and annotations: mutating them changes no behaviour
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                skip.add(id(first.value))
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations.append(node.returns)
            args = node.args
            annotations += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs]
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for a in filter(None, annotations):
            skip.update(id(n) for n in ast.walk(a))

    scopes = sorted((src.start(n), src.end(n), n.name) for n in ast.walk(tree)
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    def function_of(offset: int) -> str:
        return ".".join(name for a, b, name in scopes if a <= offset < b) or "<module>"

    def add(operator: str, a: int, b: int, new: str) -> None:
        old = text[a:b]
        if old == new:
            return
        mutated = text[:a] + new + text[b:]
        try:
            ast.parse(mutated)
        except SyntaxError:
            return
        line = text.count("\n", 0, a) + 1
        found.append(Mutant(path, line, a - src.starts[line - 1], function_of(a), operator, old, new, a, b,
                            src.lines[line - 1].strip()))

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
                if type(op) not in _COMPARE:
                    continue
                tok, news = _COMPARE[type(op)]
                span = src.token(tok, src.end(left), src.start(right))
                for new in news if span else ():
                    add(f"compare {tok} -> {new}", *span, new)
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            tok, new = _ARITH[type(node.op)]
            span = src.token(tok, src.end(node.left), src.start(node.right))
            if span:
                add(f"arith {tok} -> {new}", *span, new)
        elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITH:
            tok, new = _ARITH[type(node.op)]
            span = src.token(tok + "=", src.end(node.target), src.start(node.value))
            if span:
                add(f"arith {tok}= -> {new}=", *span, new + "=")
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value != 0:
            for factor in ("x10", "/10"):
                add(f"const {factor}", src.start(node), src.end(node), _scaled(text, node.value, factor))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in ("max", "min"):
                b = src.end(f)
                add(f"minmax {name} -> {'min' if name == 'max' else 'max'}", b - 3, b, "min" if name == "max" else "max")
        elif isinstance(node, ast.BoolOp):
            tok = "and" if isinstance(node.op, ast.And) else "or"
            for left, right in zip(node.values, node.values[1:], strict=False):
                span = src.token(tok, src.end(left), src.start(right))
                if span:
                    add(f"boolop {tok} -> {'or' if tok == 'and' else 'and'}", *span, "or" if tok == "and" else "and")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            a = src.start(node)
            b = a + 3
            while text[b] == " ":
                b += 1
            add("not removed", a, b, "")
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                add("return -> None", src.start(node.value), src.end(node.value), "None")
    found.sort(key=lambda m: (m.start, m.operator, m.mutated))
    return found


# --- a per-test timeout, as a pytest plugin (``-p tools.mutants`` in the copy) ---------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    seconds = int(os.environ.get("MUTANTS_TEST_TIMEOUT", "0"))
    if seconds:  # a mutant that makes one test loop (a range x10) ends the run, reported as a timeout
        signal.signal(signal.SIGALRM, lambda *_: os._exit(124))
        signal.alarm(seconds)
    try:
        yield
    finally:
        if seconds:
            signal.alarm(0)


# imported once, before the forks; none of the project
_WARM = ("numpy", "torch", "torchvision", "jax", "jax.numpy", "flax.linen", "optax")


def run_forked(root: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str]:
    """``run_tests``'s contract (exit code, last output line; -1 on timeout) without its 5-8 s of imports per
    mutant: a fork of this process, where torch and JAX are imported but no project module is (and no JAX backend
    started, so the fork is safe), runs pytest in the copy."""
    for name in _WARM:
        __import__(name)
    log = root / ".mutants-pytest.log"
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(root)
            sys.path.insert(0, str(root))
            os.environ["JAX_PLATFORMS"] = "cpu"
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1, "timeout"
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").strip().splitlines()
    return code, tail[-1] if tail else ""


def _verdict(code: int) -> str:
    return {0: "survived", 5: "no tests ran", 124: "timeout", -1: "timeout"}.get(code, "killed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/mutants.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="files to mutate, relative to the repository root")
    p.add_argument("--tests", default="", help="pytest arguments for every target (default: TESTS, per target)")
    p.add_argument("-k", default="", help="only mutants in functions whose name contains this (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit (default: off)")
    p.add_argument("--test-timeout", type=int, default=60, help="seconds one test may run (default: 60)")
    p.add_argument("--timeout", type=int, default=300, help="seconds one mutant's test run may take (default: 300)")
    p.add_argument("--survivors-of", default="", metavar="JSON",
                   help="run only the mutants that were not killed in this earlier results file and carry the others' "
                        "outcomes over (valid while the targets are unchanged and tests were only added; default: run all)")
    p.add_argument("--explain", action="store_true",
                   help="re-apply EQUIVALENT and EXPLAINED to --json's results and exit (no run; default: off)")
    p.add_argument("--spawn", action="store_true",
                   help="a fresh python per mutant (tools/mutate.py's run_tests) instead of a fork (default: fork)")
    p.add_argument("--json", default="tools/generated_mutants.json", help="results file ('' to skip; default: %(default)s)")
    args = p.parse_args(argv)
    if args.explain:
        return explain(args.json)
    if not args.targets:
        print("error: name at least one file to mutate (e.g. parity/compare.py)", file=sys.stderr)
        return 2
    plans = {}
    for target in args.targets:
        if not (REPO / target).is_file():
            print(f"error: {target}: no such file in {REPO}", file=sys.stderr)
            return 2
        if not args.tests and target not in TESTS:
            print(f"error: {target}: no test subset in tools/mutants.py TESTS; pass --tests", file=sys.stderr)
            return 2
        text = (REPO / target).read_text()
        tests = tuple(shlex.split(args.tests)) if args.tests else TESTS[target]
        plans[target] = (text, tests, [m for m in generate(target, text) if args.k in m.function])
    carried: dict[tuple, dict] = {}
    if args.survivors_of:
        try:
            earlier = json.loads((REPO / args.survivors_of).read_text())["mutants"]
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {args.survivors_of}: not a tools/mutants.py results file ({exc})", file=sys.stderr)
            return 2
        carried = {_key(m): m for m in earlier if m["outcome"] in ("killed", "timeout")}
        for target, (_, _, mutants) in plans.items():
            known = {_key(m) for m in earlier}
            new = [m for m in mutants if _key(asdict(m)) not in known]
            if new:  # the target changed since: its line numbers and mutants are not the earlier ones
                print(f"error: {target}: {len(new)} mutants not in {args.survivors_of} (first: line {new[0].line}); "
                      "run all", file=sys.stderr)
                return 2
    if args.list:
        for target, (_, tests, mutants) in plans.items():
            print(f"{target}: {len(mutants)} mutants, tests: {' '.join(tests)}")
            for m in mutants:
                print(f"  {m.line:4} {m.function:<28} {m.operator:<22} {m.original!r} -> {m.mutated!r}")
        return 0
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size within a second would reuse the .pyc
    os.environ["MUTANTS_TEST_TIMEOUT"] = str(args.test_timeout)
    start = time.perf_counter()
    results: list[Mutant] = []
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        for target, (text, tests, mutants) in plans.items():
            tests = ("-p", "tools.mutants", *tests)  # the per-test timeout below
            code, tail = run_tests(root, tests, args.timeout)
            print(f"baseline {'ok  ' if code == 0 else 'FAIL'} {target}: {tail}", flush=True)
            if code != 0:
                print(f"error: {target}: its tests fail unmutated ({tail})", file=sys.stderr)
                return 2
            for m in mutants:
                if _key(asdict(m)) in carried:
                    old = carried[_key(asdict(m))]
                    m.outcome, m.seconds, m.pytest = old["outcome"], old["seconds"], old["pytest"]
                    results.append(m)
                    continue
                (root / target).write_text(text[:m.start] + m.mutated + text[m.end:])
                t0 = time.perf_counter()
                try:
                    code, m.pytest = (run_tests if args.spawn else run_forked)(root, tests, args.timeout)
                finally:
                    (root / target).write_text(text)
                m.seconds = round(time.perf_counter() - t0, 1)
                m.outcome = _verdict(code)
                _explain(m)
                results.append(m)
                print(f"{m.outcome:<9} {m.file}:{m.line} {m.operator:<20} {m.original!r} -> {m.mutated!r}"
                      f"{' (equivalent)' if m.equivalent else ''}  {m.seconds} s", flush=True)
    _report(results, {t: list(plans[t][1]) for t in plans}, time.perf_counter() - start, args.json)
    return 0


def _key(m: dict) -> tuple:
    """One mutant, across runs of the same file (the offsets are not in the results file)."""
    return m["file"], m["line"], m["column"], m["line_text"], m["operator"], m["original"], m["mutated"]


def _explain(m: Mutant) -> None:
    key = (m.file, m.line_text, m.column, m.operator)
    m.equivalent = EQUIVALENT.get(key, "") if m.outcome == "survived" else ""
    m.explained = EXPLAINED.get(key, "") if m.outcome == "survived" and not m.equivalent else ""


def _report(results: list[Mutant], targets: dict, seconds: float, json_path: str) -> None:
    detected = sum(m.outcome in ("killed", "timeout") for m in results)
    equivalent = sum(bool(m.equivalent) for m in results)
    survivors = [m for m in results if m.outcome not in ("killed", "timeout") and not m.equivalent]
    summary = (f"generated mutation score: {detected}/{len(results) - equivalent} killed "
               f"({sum(m.outcome == 'timeout' for m in results)} by timeout), {equivalent} equivalent, "
               f"{len(survivors)} survived ({sum(bool(m.explained) for m in survivors)} explained), in {seconds:.0f} s")
    print(summary)
    for m in survivors:
        print(f"  survivor {m.file}:{m.line} ({m.function}) {m.operator}: {m.line_text}"
              + (f"  [{m.explained}]" if m.explained else ""))
    if json_path:
        out = {"summary": summary, "targets": targets, "seconds": round(seconds),
               "mutants": [{k: v for k, v in asdict(m).items() if k not in ("start", "end")} for m in results]}
        (REPO / json_path).write_text(json.dumps(out, indent=1) + "\n")


def explain(json_path: str) -> int:
    """Re-apply EQUIVALENT and EXPLAINED to a results file, without running anything."""
    try:
        data = json.loads((REPO / json_path).read_text())
        results = [Mutant(start=0, end=0, **m) for m in data["mutants"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {json_path}: not a tools/mutants.py results file ({exc})", file=sys.stderr)
        return 2
    for m in results:
        _explain(m)
    _report(results, data["targets"], data["seconds"], json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
