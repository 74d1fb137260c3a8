"""``python -m parity.check``: the checker from the command line on a user's factories; exit 0 PASS, 1 FAIL, 2 bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from parity.check import main
from tests.helpers import run_module

F = "tests.port_factories"


def test_pass_and_fail_exit_codes_and_files(tmp_path, capsys):
    assert main(["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs",
                 "--steps", "1", "--out-dir", str(tmp_path / "ok")]) == 0
    assert capsys.readouterr().out.startswith("port check: PASS")
    bad = run_module("parity.check", "--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax_default_eps", "--sample",
                     f"{F}:sample_inputs", "--steps", "1", "--out-dir", str(tmp_path / "bad"))
    assert bad.returncode == 1, bad.stderr
    assert "diagnosis: forward (eval): norm: the JAX side's LayerNorm epsilon is 1e-06 where torch's is 1e-05" in bad.stdout
    report = json.loads((tmp_path / "bad" / "port_check.json").read_text())
    assert report["ok"] is False and "epsilon is 1e-06" in report["diagnosis"]
    assert (tmp_path / "bad" / "port_check.png").stat().st_size > 10_000
    assert "Traceback" not in bad.stderr


def test_npz_inputs(tmp_path):
    from tests.port_factories import sample_inputs  # noqa: PLC0415

    x, y = sample_inputs()
    np.savez(tmp_path / "batch.npz", inputs=x, targets=y)
    assert main(["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--inputs", str(tmp_path / "batch.npz"),
                 "--steps", "0", "--out-dir", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("args, says", [
    (["--torch", f"{F}:nope", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs"], "has no 'nope'"),
    (["--torch", "no_such_module:make", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs"], "cannot import"),
    (["--torch", f"{F}:raises", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs"],
     "the torch factory raised RuntimeError: the user's factory is broken"),
    (["--torch", f"{F}:not_a_model", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs"], "not a torch.nn.Module"),
    (["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--sample", f"{F}:not_a_model"],
     "must return (inputs, targets)"),
    (["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax"], "give --inputs FILE.npz or --sample"),
    (["--torch", "make_torch", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs"], "is not MODULE:FUNCTION"),
    (["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--sample", f"{F}:sample_inputs", "--steps", "-1"],
     "--steps must be >= 0"),
    (["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--inputs", "missing.npz"], "--inputs missing.npz"),
    (["--optimizer", "rmsprop"], "invalid choice"),
])
def test_bad_input_is_one_error_line(args, says, tmp_path, capsys):
    with pytest.raises(SystemExit) if "rmsprop" in args else _nothing():
        code = main(args + ["--out-dir", str(tmp_path)])
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m parity.check: error:") and says in err[0], err


def test_inputs_that_do_not_fit_the_model(tmp_path, capsys):
    np.savez(tmp_path / "b.npz", inputs=np.ones((4, 5), np.float32), targets=np.zeros(4, int))  # 5 features, not 8
    assert main(["--torch", f"{F}:make_torch", "--flax", f"{F}:make_flax", "--inputs", str(tmp_path / "b.npz"),
                 "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not run on the given inputs" in err[0], err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
