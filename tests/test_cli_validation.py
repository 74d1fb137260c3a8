"""Every bad flag of both quickstarts is refused while parsing: exit 2, one ``prog: error:`` line, no traceback.

Each row runs as ``python -m reference_torch`` and ``python -m jax_impl`` in a subprocess; the
``__main__`` modules import torch/JAX only after the flags pass, so each row takes about a second;
the rows run a few at a time. ``{tmp}`` in a row is a temporary folder; ``{file}`` a regular file in it.
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from functools import partial

import jax
import numpy as np
import pytest

from quickstart_parity_common import cli
from tests.helpers import REPO, at_once, run_module

SIDES = ("reference_torch", "jax_impl")

# (flags, a fragment the error line must contain)
BAD_FLAGS = [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--batch-size", "ten"], "not an integer"),
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "0"], "--epochs"),  # 0 would train nothing and evaluate nothing: refused
    (["--epochs", "2.5"], "not an integer"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "nan"], "finite"),
    (["--lr", "inf"], "finite"),
    (["--lr", "1e400"], "finite"),  # overflows to inf
    (["--lr", "1e39"], "finite in float32"),  # finite in Python, inf in either side's float32
    (["--lr", "1e-50"], "> 0 in float32"),  # rounds to 0 in float32: would train nothing
    (["--momentum=-1e39"], "finite in float32"),  # = form: argparse reads "-1e39" alone as a flag
    (["--weight-decay", "1e39"], "finite in float32"),
    (["--lr", "1e-400"], "> 0"),  # underflows to 0.0
    (["--lr", "fast"], "not a number"),
    (["--momentum", "-0.9"], "--momentum"),
    (["--momentum", "nan"], "finite"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--weight-decay", "inf"], "finite"),
    (["--hidden", "512,,512"], "empty width"),
    (["--hidden", "512,"], "empty width"),
    (["--hidden", ""], "empty width"),
    (["--hidden", "0"], "positive"),
    (["--hidden", "512,-5"], "positive"),
    (["--hidden", "512x512"], "not an integer"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--seed", "1.5"], "not an integer"),
    (["--save", "{tmp}/missing/model.out"], "does not exist"),
    (["--save", "{tmp}"], "is a directory"),
    (["--save", "/dev/null"], "not a regular file"),
    (["--save", "{tmp}/link"], "is a symlink"),
    (["--device", "foo"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
    (["--data-dir", "{file}"], "not a folder"),
    (["--data-dir", ""], "--data-dir"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--epochs"], "expected one argument"),
]
TORCH_ONLY = [
    (["--threads", "-1"], "--threads"),
    (["--threads", "two"], "not an integer"),
]


def _row_id(flags: list[str]) -> str:
    return " ".join(flags) or "(none)"


@pytest.fixture(scope="module")
def refused(tmp_path_factory) -> dict:
    """Every (module, row) run once as a subprocess, a few at a time (each is a second of startup)."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "a-file").write_text("not a folder")
    (tmp / "link").symlink_to(tmp / "a-file")
    jobs = [(m, f) for m in SIDES for f, _ in BAD_FLAGS] + [("reference_torch", f) for f, _ in TORCH_ONLY]

    return at_once({(module, _row_id(flags)): partial(run_module, module, *[f.format(tmp=tmp, file=tmp / "a-file")
                                                                           for f in flags], timeout=300)
                    for module, flags in jobs}, workers=4)


def _assert_refused(proc, prog: str, fragment: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: ") and "error:" in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert proc.stdout == "", proc.stdout  # nothing ran


@pytest.mark.parametrize("module", SIDES)
@pytest.mark.parametrize("flags,fragment", BAD_FLAGS, ids=[_row_id(f) for f, _ in BAD_FLAGS])
def test_bad_flag_refused_before_work(refused, module, flags, fragment):
    _assert_refused(refused[module, _row_id(flags)], f"python -m {module}", fragment)


@pytest.mark.parametrize("flags,fragment", TORCH_ONLY, ids=[_row_id(f) for f, _ in TORCH_ONLY])
def test_bad_torch_flag_refused(refused, flags, fragment):
    _assert_refused(refused["reference_torch", _row_id(flags)], "python -m reference_torch", fragment)


# The other CLIs build on the same validators (quickstart_parity_common.cli).
OTHER_CLIS = [
    pytest.param("parity", ["--device", "foo"], "invalid choice", id="parity --device foo"),
    pytest.param("benchmarks.run", ["--batch-size", "0"], "--batch-size", id="benchmarks --batch-size 0"),
]


@pytest.fixture(scope="module")
def others() -> dict:
    """{module: its OTHER_CLIS row run as a subprocess}, both at once (each imports torch and JAX first)."""
    return at_once({p.values[0]: partial(run_module, p.values[0], *p.values[1], timeout=300) for p in OTHER_CLIS})


@pytest.mark.parametrize("module,flags,fragment", OTHER_CLIS)
def test_other_clis_refuse(module, flags, fragment, others):
    _assert_refused(others[module], f"python -m {module}", fragment)


def test_help_shows_every_default():
    proc = run_module("reference_torch", "--help", timeout=120)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for flag in ("--epochs", "--batch-size", "--lr", "--momentum", "--weight-decay", "--seed", "--device",
                 "--data-dir", "--save", "--hidden", "--threads"):
        after = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert "(default:" in after, (flag, after)
    assert "(default: 512,512)" in text
    assert "{auto,cpu,cuda,mps}" in text
    assert "--no-download never try torchvision's download (by default it is tried" in text
    assert "(default: True)" not in text and "(default: False)" not in text


def test_valid_values_pass_the_validators(tmp_path):
    assert cli.hidden_widths("512,512") == (512, 512) and cli.hidden_widths(" 64 ") == (64,)
    assert cli.seed("0") == 0 and cli.seed(str(2**32 - 1)) == 2**32 - 1
    assert cli.positive_float("1e-3") == 1e-3 and cli.non_negative_float("0") == 0.0
    assert cli.non_negative_int("0") == 0 and cli.positive_int("1") == 1
    assert cli.save_path("") == "" and cli.save_path(str(tmp_path / "m.pth")) == str(tmp_path / "m.pth")
    assert cli.data_dir(str(tmp_path / "not-yet")) == str(tmp_path / "not-yet")
    (tmp_path / "ckpt").write_bytes(b"x")
    assert cli.existing_file(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt")
    for bad in (tmp_path / "absent", tmp_path):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.existing_file(str(bad))
    args = cli.base_parser("p", "d", "model.pth").parse_args([])
    assert args.hidden == (512, 512) and args.seed == 0 and args.device == "auto"


def test_seed_range_is_distinct_on_jax():
    """The documented reason for SEED_MAX: JAX keeps 32 bits, so the next seed would repeat seed 0."""
    assert (jax.random.PRNGKey(cli.SEED_MAX) != jax.random.PRNGKey(0)).any()
    assert (jax.random.PRNGKey(cli.SEED_MAX + 1) == jax.random.PRNGKey(0)).all()
    with pytest.raises(argparse.ArgumentTypeError):
        cli.seed(str(cli.SEED_MAX + 1))


def test_float32_limits_are_numpys():
    """quickstart_parity_common.cli writes float32's limits out (it loads before numpy); they must be numpy's."""
    assert cli.FLOAT32_MAX == float(np.finfo(np.float32).max)
    assert cli.FLOAT32_TINY == float(np.finfo(np.float32).tiny)


@pytest.mark.parametrize("error, oom", [
    (MemoryError(), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 360000000000 bytes"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), True),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 360000000000 bytes."), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("bad"), False),
])
def test_out_of_memory_is_one_line_and_exit_2_other_errors_propagate(error, oom, capsys, monkeypatch):
    def fail():
        raise error

    exits = []
    monkeypatch.setattr(cli, "hard_exit", exits.append)  # the real one ends the process, pytest with it
    assert cli.out_of_memory(error) is oom
    if oom:
        assert cli.run_guarded(fail, [], "prog") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("prog: error: out of memory")
        assert exits == [2]
    else:
        with pytest.raises(type(error)):
            cli.run_guarded(fail, [], "prog")


@pytest.mark.parametrize("module", SIDES)
def test_widths_too_large_for_memory_end_in_one_line(module, tmp_path):
    """A model that cannot be allocated (two 300,000-wide layers: 360 GB of float32) is one error line."""
    proc = run_module(module, "--hidden", "300000,300000", "--epochs", "1", "--save", str(tmp_path / "m"),
                      timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "error: out of memory" in lines[0], proc.stderr[-2000:]


def _run_env(module: str, args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    """``python -m module args`` with ``env`` over this process's environment (run_module pins JAX_PLATFORMS)."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", **env})


# Environments and inputs that ended in a traceback or an abort before (issue 29): (module, flags, env, fragment).
# {file} is a regular file. JAX_PLATFORMS=cuda on a machine with CUDA still fails: cpu is not among its backends.
HOSTILE = {
    "JAX_PLATFORMS=foo": ("jax_impl", [], {"JAX_PLATFORMS": "foo"}, "JAX_PLATFORMS='foo': Unable to initialize backend"),
    "JAX_PLATFORMS=cuda --device cpu": ("jax_impl", ["--device", "cpu"], {"JAX_PLATFORMS": "cuda"}, "JAX_PLATFORMS='cuda'"),
    "jax_impl XLA_FLAGS=--xla_foo": ("jax_impl", [], {"XLA_FLAGS": "--xla_foo"}, "Unknown flag in XLA_FLAGS: --xla_foo"),
    "parity XLA_FLAGS=--xla_foo": ("parity", [], {"XLA_FLAGS": "--xla_foo"}, "Unknown flag in XLA_FLAGS: --xla_foo"),
    "parity --hidden 100000000": ("parity", ["--epochs", "1", "--hidden", "100000000", "--out-dir", "{tmp}"], {},
                                  "error: out of memory"),
    "parity --out-dir a file": ("parity", ["--out-dir", "{file}"], {}, "exists and is not a folder"),
    "parity --out-dir under a file": ("parity", ["--out-dir", "{file}/runs"], {}, "exists and is not a folder"),
    "benchmarks.run --out-dir a file": ("benchmarks.run", ["--out-dir", "{file}"], {}, "exists and is not a folder"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "a-file").write_text("not a folder")
    return at_once({name: partial(_run_env, module, [f.format(tmp=tmp, file=tmp / "a-file") for f in flags], env, tmp)
                    for name, (module, flags, env, _) in HOSTILE.items()})


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_environment_or_input_is_one_error_line(name, hostile):
    """Refused before any work (nothing on stdout), or for the allocation, one line where it fails."""
    module, _, _, fragment = HOSTILE[name]
    _assert_refused(hostile[name], f"python -m {module}", fragment)


@pytest.mark.parametrize("module", ["parity.distributed", "benchmarks.quickstart"])
def test_other_parsers_print_one_line_not_a_usage_block(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith(f"python -m {module}: error: "), err
    assert "usage:" not in err
