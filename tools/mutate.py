"""Mutation testing of the referee and the two training loops: ``make mutate`` (not run in CI).

Each mutation is one textual change to one file, applied alone in a temporary copy of the
repository; then a chosen fast subset of the tests runs there. A mutation the tests fail on is
*killed*; one they pass is a *survivor*, to be explained in docs/reliability.md ("Mutation testing") or killed
by a new test. The subset per mutation is the one that should catch it; the whole run takes minutes.

    python tools/mutate.py            # every mutation
    python tools/mutate.py -k leaf    # those whose id contains "leaf"
    python tools/mutate.py --list     # ids, files and test subsets
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPARE = "parity/test_compare.py"
VERDICT = "parity/test_verdict.py"
TOLERANCES = "parity/test_tolerances.py"
CLI = "parity/test_side_by_side.py"
HARNESS = "parity/test_harness.py"
CHECKER = "parity/test_checker.py"
TRUST = "parity/test_checker_trust.py"
STEPS = "parity/test_checker_steps.py"


@dataclass(frozen=True)
class Mutation:
    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


def _k(expr: str, path: str) -> tuple[str, ...]:
    return (path, "-k", expr)


MUTATIONS = [
    # --- the referee: parity/compare.py -----------------------------------------------------------
    Mutation("leaf-rtol-atol-swapped", "parity/compare.py", "err <= atol + rtol * np.abs(e)",
             "err <= rtol + atol * np.abs(e)", _k("rtol_and_atol", COMPARE)),
    Mutation("leaf-strict-less", "parity/compare.py", "err <= atol + rtol * np.abs(e)",
             "err < atol + rtol * np.abs(e)", _k("inclusive", COMPARE)),
    Mutation("leaf-nonfinite-ignored", "parity/compare.py", "ok = nonfinite == 0 and", "ok =",
             _k("nonfinite_always", COMPARE)),
    Mutation("leaf-rel-to-actual", "parity/compare.py", "atol + rtol * np.abs(e)", "atol + rtol * np.abs(a)",
             _k("rtol_and_atol", COMPARE)),
    Mutation("trees-skip-last-leaf", "parity/compare.py", "for name in e]", "for name in list(e)[:-1]]",
             _k("every_leaf or one_result", COMPARE)),
    Mutation("assert-trees-never-raises", "parity/compare.py", "        if not d.ok:\n            np.testing",
             "        if False:\n            np.testing", _k("every_leaf or nonfinite_always", COMPARE)),
    Mutation("activations-skip-logits", "parity/compare.py", "for name in order]", "for name in order[:-1]]",
             _k("activations or last_layer", COMPARE)),
    Mutation("structure-ignores-extra", "parity/compare.py", "extra = [k for k in actual if k not in expected]",
             "extra = []", _k("structure", COMPARE)),
    Mutation("init-no-variance-check", "parity/compare.py", "if abs(w.var() - b * b / 3) >",
             "if False and abs(w.var() - b * b / 3) >", _k("uniform", COMPARE)),
    # --- the referee: parity/tolerances.py --------------------------------------------------------
    Mutation("loss-atol-x100", "parity/tolerances.py", "    return base * (GPU", "    return 100 * base * (GPU",
             _k("within_its_margin", TOLERANCES)),
    Mutation("param-atol-x100", "parity/tolerances.py", "    return PARAM_BASE * epochs_done",
             "    return 100 * PARAM_BASE * epochs_done", _k("within_its_margin", TOLERANCES)),
    Mutation("one-epoch-atol-x100", "parity/tolerances.py", 'ONE_EPOCH = Tolerance(1e-4, 1e-5,',
             'ONE_EPOCH = Tolerance(1e-4, 1e-3,', _k("within_its_margin", TOLERANCES)),
    Mutation("accuracy-images-x100", "parity/tolerances.py", "ACCURACY_IMAGES = 5\n", "ACCURACY_IMAGES = 500\n",
             _k("within_its_margin", TOLERANCES)),
    # --- the referee: the CLI's verdict (parity/side_by_side.py, parity/__main__.py) -----------------
    Mutation("verdict-step-gap-gt", "parity/side_by_side.py", "np.flatnonzero(~(step_gap <= step_tol))",
             "np.flatnonzero(step_gap > step_tol)", _k("verdict", VERDICT)),
    Mutation("verdict-no-finiteness", "parity/side_by_side.py", 'first at index {int(bad[0])})" if bad.size else None',
             'first at index {int(bad[0])})" if False else None', _k("verdict_nonfinite", VERDICT)),
    Mutation("verdict-params-ignored", "parity/side_by_side.py", "        if not d.ok:\n            failures",
             "        if False:\n            failures", _k("verdict_param", VERDICT)),
    Mutation("verdict-eval-loss-ignored", "parity/side_by_side.py", "if not loss_gap <= l_tol:", "if False:",
             _k("verdict_eval_loss", VERDICT)),
    Mutation("verdict-accuracy-x100", "parity/side_by_side.py", "images <= T.ACCURACY_IMAGES + 0.5",
             "images <= 100 * T.ACCURACY_IMAGES + 0.5", _k("verdict_accuracy", VERDICT)),
    Mutation("verdict-steps-restart-each-epoch", "parity/side_by_side.py", "steps = first_step + np.arange",
             "steps = 1 + np.arange", _k("verdict_loss", VERDICT)),
    Mutation("cli-always-exit-0", "parity/__main__.py", 'return 0 if result["report"]["ok"] else 1', "return 0",
             _k("cli_each_failure and nan", CLI)),
    # --- the port checker: parity/checker.py (TRUST: the fast tests of its classes of wrong PASS) -------------
    Mutation("checker-ok-nan-blind", "parity/_engine.py",
             "if not all(np.isfinite(v) for v in (self.gap, self.tol, self.gap64, self.err_torch, self.err_jax)):",
             "if False:", _k("nan_outputs", CHECKER)),
    Mutation("checker-factor-x100", "parity/_engine.py", "FACTOR = 2.0 ", "FACTOR = 200.0 ",
             _k("derived_bound", TRUST)),
    Mutation("checker-first-is-last", "parity/checker.py", "return next((c for c in self.checks if not c.ok",
             "return next((c for c in reversed(self.checks) if not c.ok", _k("layernorm_epsilon", CHECKER)),
    Mutation("checker-unmatched-torch-silent", "parity/checker.py", "                if base in leaf_modules:",
             "                if False:", _k("mismatched", CHECKER)),
    Mutation("checker-extra-jax-silent", "parity/checker.py", "            if base not in j2t and owns:",
             "            if False:", _k("mismatched", CHECKER)),
    Mutation("checker-no-running-stats", "parity/checker.py",
             'if leaf.torch_name in t32["train_buffers"] and leaf.flax_path in j32["train_stats"]:', "if False:",
             _k("control_names_the_layer and biased", CHECKER)),
    Mutation("checker-only-first-step", "parity/checker.py", '    for s in range(steps):\n        phase = f"step',
             '    for s in range(min(steps, 1)):\n        phase = f"step', _k("amsgrad", STEPS)),
    Mutation("checker-no-layout-move", "parity/_engine.py", "moved = np.moveaxis(t, 1, -1)  # NCHW",
             "moved = t  # NCHW", _k("square_captures", TRUST)),
    Mutation("checker-gradients-skipped", "parity/checker.py", 'if leaf.torch_name in t32["grads"]:', "if False:",
             _k("passes_every_check", CHECKER)),
    Mutation("checker-float64-gap-ignored", "parity/_engine.py", "if self.gap64 > self.tol64:", "if False:",
             _k("float64_disagreement", TRUST)),
    Mutation("checker-rounding-unchecked", "parity/_engine.py", "if err > ROUNDING_MAX_REL * size:", "if False:",
             _k("float32_only", TRUST)),
    Mutation("checker-dropout-always-injected", "parity/checker.py", "drops = not det and mod.rate > 0",
             "drops = mod.rate > 0", _k("wrong_dropout_port and linen", TRUST)),
    Mutation("checker-broadcast-dims-ignored", "parity/_engine.py",
             "want = tuple(1 if d in {b % len(shape) for b in broadcast_dims} else n",
             "want = tuple(1 if False else n", _k("wrong_dropout_port and mask", TRUST)),
    Mutation("checker-float64-dtype-trusted", "parity/checker.py", "    _dtype_problems(report, t64, j64)\n",
             "\n", _k("float64_run_in_float32", TRUST)),
    Mutation("checker-start-unchecked", "parity/checker.py",
             'report.checks.append(_check("start", leaf.torch_name, t, t, j, j, N.flax_name(leaf.flax_path)))', "pass",
             _k("unknown_causes", TRUST)),
    # --- the implementations: reference_torch ------------------------------------------------------
    Mutation("torch-train-loader-shuffled", "reference_torch/data.py", "DataLoader(training_data, batch_size=batch_size)",
             "DataLoader(training_data, batch_size=batch_size, shuffle=True)", _k("torch_cli_trains", HARNESS)),
    Mutation("torch-cli-trains-on-test-set", "reference_torch/train.py", "train_epoch(train_dataloader,",
             "train_epoch(test_dataloader,", _k("torch_cli_trains", HARNESS)),
    Mutation("torch-lr-plus-0.1pct", "reference_torch/train.py", "SGD(model.parameters(), lr=lr,",
             "SGD(model.parameters(), lr=lr * 1.001,", ("parity/test_training.py", "-k", "one_sgd_step")),
    Mutation("torch-no-zero-grad", "reference_torch/train.py", "        optimizer.zero_grad()\n", "\n",
             _k("short_run", HARNESS)),
    Mutation("torch-eval-mean-off", "reference_torch/train.py", "test_loss /= num_batches",
             "test_loss /= num_batches + 1", _k("short_run", HARNESS)),
    Mutation("torch-no-eval-mode", "reference_torch/train.py", "    model.eval()\n    test_loss", "    test_loss",
             _k("mode_switches", HARNESS)),
    # --- the implementations: jax_impl -------------------------------------------------------------
    Mutation("jax-lr-plus-0.1pct", "jax_impl/train.py", "sgd = optax.sgd(lr,", "sgd = optax.sgd(lr * 1.001,",
             ("parity/test_training.py", "-k", "one_sgd_step")),
    Mutation("jax-drops-last-partial-batch", "jax_impl/loops.py", "    if n > full * batch_size:  # the DataLoader",
             "    if False:  # the DataLoader", _k("short_run", HARNESS)),
    Mutation("jax-loss-mean-over-64", "jax_impl/train.py", "softmax_cross_entropy_with_integer_labels(logits, y).mean()",
             "softmax_cross_entropy_with_integer_labels(logits, y).sum() / 64",
             ("parity/test_forward_backward.py", "-k", "logits_and_loss and partial")),
    Mutation("jax-output-bias-dropped", "jax_impl/model.py",
             "nn.Dense(NUM_CLASSES, kernel_init=init, bias_init=init,",
             "nn.Dense(NUM_CLASSES, use_bias=False, kernel_init=init,",
             ("parity/test_forward_backward.py", "-k", "activations_every_layer and first and train")),
    Mutation("jax-cli-batch-size-doubled", "jax_impl/train.py", "train_epoch(state, train_arrays, config.batch_size,",
             "train_epoch(state, train_arrays, 2 * config.batch_size,", _k("jax_cli_trains", HARNESS)),
]

# The six survivors of issue 18 first: a partial run still answers for them (--six-last: the others first).
_FIRST = ("leaf-rtol-atol-swapped", "trees-skip-last-leaf", "loss-atol-x100", "param-atol-x100",
          "torch-train-loader-shuffled", "torch-no-eval-mode")
MUTATIONS.sort(key=lambda m: m.id not in _FIRST)


def copy_repo(dst: Path) -> None:
    """Tracked and untracked (not ignored) files, and the ``data`` link."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    if (REPO / "data").exists():
        os.symlink((REPO / "data").resolve(), dst / "data")


def apply(root: Path, m: Mutation) -> None:
    path = root / m.path
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        raise SystemExit(f"mutate: error: {m.id}: {m.old!r} occurs {count} times in {m.path} (expected once)")
    path.write_text(text.replace(m.old, m.new))


def run_tests(root: Path, tests: tuple[str, ...], timeout: int) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, tail[-1] if tail else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/mutate.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-k", default="", help="run only mutations whose id contains this (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit (default: off)")
    p.add_argument("--baseline", action="store_true",
                   help="first run each test subset unmutated; it must pass (default: off)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per test run")
    p.add_argument("--json", default="", help="write the results to this file ('' to skip)")
    p.add_argument("--six-last", action="store_true", help="run issue 18's six survivors last (default: first)")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.k in m.id]
    if args.six_last:
        chosen.sort(key=lambda m: m.id in _FIRST)
    if args.list:
        for m in chosen:
            print(f"{m.id:<36} {m.path:<26} {' '.join(m.tests)}")
        return 0
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
            copy_repo(Path(tmp))
            for tests in dict.fromkeys(m.tests for m in chosen):
                code, tail = run_tests(Path(tmp), tests, args.timeout)
                print(f"baseline {'ok  ' if code == 0 else 'FAIL'} {' '.join(tests)}: {tail}", flush=True)
                if code != 0:
                    return 2
    results = []
    start = time.perf_counter()
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
            root = Path(tmp)
            copy_repo(root)
            apply(root, m)
            t0 = time.perf_counter()
            code, tail = run_tests(root, m.tests, args.timeout)
        verdict = "killed" if code not in (0, 5) else "SURVIVED" if code == 0 else "no tests ran"
        results.append({"id": m.id, "file": m.path, "result": verdict, "seconds": round(time.perf_counter() - t0, 1),
                        "pytest": tail})
        print(f"{verdict:<9} {m.id:<36} {time.perf_counter() - t0:6.1f} s  {tail}", flush=True)
    killed = sum(r["result"] == "killed" for r in results)
    print(f"mutation score: {killed}/{len(results)} killed in {time.perf_counter() - start:.0f} s; survivors: "
          + (", ".join(r["id"] for r in results if r["result"] != "killed") or "none"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
