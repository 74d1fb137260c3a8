"""``python -m parity``: the side-by-side run writes its report and plot, exits 1 on disagreement (each kind of
failure) and 2 on a bad input; the derived run takes every registered pair."""
from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_impl import checkpoint as jcheckpoint
from jax_impl.model import init_params
from parity import cnn_side_by_side, side_by_side
from parity import harness as H
from parity import side_by_side as S
from parity.__main__ import main, parser
from parity._engine import Masks
from parity.side_by_side import SideBySideConfig
from quickstart_parity_pairs import PAIRS
from reference_torch import checkpoint as tcheckpoint
from tests.helpers import write_tiny_dataset


def test_one_epoch_report_and_plot(data_dir, tmp_path, capsys):
    assert main(["--epochs", "1", "--data-dir", data_dir, "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "precision mode default" in out and "PASS" in out and "|     1 |" in out
    report = json.loads((tmp_path / "parity_cpu_default.json").read_text())
    assert report["ok"] and report["failures"] == []
    row = report["epochs"][0]
    # up to two test images apart: a near-tie (top-2 logits closer than the logits' gap) may flip (test_training.py)
    assert abs(row["torch_accuracy"] - row["jax_accuracy"]) <= 2e-4
    assert 0 < report["max_step_loss_diff"] < 1e-5 and 0 < report["max_param_diff"] < 1e-5
    assert {"torch", "jax", "python", "numpy"} <= set(report["versions"])
    assert (tmp_path / "parity_cpu_default.png").read_bytes()[:4] == b"\x89PNG"


def test_disagreement_exits_1(data_dir, tmp_path, monkeypatch, capsys):
    # A zero tolerance: the float32 rounding differences now count as disagreement.
    monkeypatch.setattr(side_by_side.T, "loss_atol", lambda steps, mode="strict", platform="cpu": np.zeros(len(steps)))
    assert main(["--epochs", "1", "--data-dir", data_dir, "--out-dir", str(tmp_path)]) == 1
    assert "FAIL: epoch 1 step" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_derived_run_trains_every_pair_with_the_mlps_report_shape(name, tmp_path, capsys):
    """``cnn_side_by_side.run`` takes any registered pair (the MLP too: no dropout sites), passes on a small set
    and writes a report with the MLP report's fields."""
    tiny = tmp_path / "data"
    write_tiny_dataset(tiny, n_train=100, n_test=20)
    cfg = SideBySideConfig(epochs=1, data_dir=str(tiny), out_dir=str(tmp_path), model=name, momentum=0.9)
    report = cnn_side_by_side.run(cfg)
    assert report["ok"] and report["failures"] == [] and "PASS" in capsys.readouterr().out
    written = json.loads((tmp_path / f"parity_{name}.json").read_text())
    assert written["config"]["model"] == name and len(written["epochs"]) == 1
    mlp_fields = {"config", "precision", "platform", "torch_device", "jax_device", "versions", "cpu", "epochs",
                  "max_step_loss_diff", "max_param_diff", "failures", "ok"}
    assert set(written) == mlp_fields
    assert 0 < written["max_step_loss_diff"] <= written["epochs"][0]["max_step_loss_tol"]


# --- python -m parity --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small valid data set (200 train, 100 test images): the CLI runs in seconds. (A test split
    smaller than one batch fails in jax_impl.train.evaluate: reported, not this test's subject.)"""
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_dataset(root, n_train=200, n_test=100)
    return str(root)


def _cli(tiny, tmp_path, *extra) -> list[str]:
    return ["--epochs", "1", "--data-dir", tiny, "--out-dir", str(tmp_path), *extra]


def test_cli_tiny_run_passes(tiny, tmp_path, capsys):
    assert main(_cli(tiny, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "|     1 |" in out
    report = json.loads((tmp_path / "parity_cpu_default.json").read_text())
    assert report["ok"] and len(report["epochs"]) == 1


def _inject(monkeypatch, change):
    """JAX's epoch results pass through ``change`` (an EpochResult -> EpochResult) before the verdict."""
    original = S.train_side

    def train_side(runner, test):
        result = original(runner, test)
        return change(result) if isinstance(runner, H.JaxRunner) else result

    monkeypatch.setattr(S, "train_side", train_side)


def _bump_losses(r):
    r.losses = r.losses.copy()
    r.losses[-1] += 1e-3
    return r


def _bump_last_param(r):
    last = list(r.params)[-1]
    r.params = {**r.params, last: r.params[last] + 1e-3}
    return r


def _set(field, value):
    def change(r):
        setattr(r, field, value(r))
        return r
    return change


@pytest.mark.parametrize("change, expected", [
    (_bump_losses, "per-step loss gap"),
    (_bump_last_param, "parameter linear_relu_stack.4.bias gap"),
    (_set("avg_loss", lambda r: r.avg_loss + 1e-3), "test Avg loss gap"),
    (_set("accuracy", lambda r: r.accuracy + 0.1), "test images apart"),
    (_set("losses", lambda r: np.where(np.arange(len(r.losses)) == 1, np.nan, r.losses)), "JAX per-step loss is NaN"),
], ids=["loss", "param", "avg-loss", "accuracy", "nan"])
def test_cli_each_failure_exits_1(tiny, tmp_path, monkeypatch, capsys, change, expected):
    _inject(monkeypatch, change)
    assert main(_cli(tiny, tmp_path)) == 1
    out = capsys.readouterr().out
    assert "FAIL: " in out and expected in out, out[-500:]
    assert not json.loads((tmp_path / "parity_cpu_default.json").read_text())["ok"]


def test_cli_nan_learning_rate_fails(tiny, tmp_path, capsys):
    """--lr nan fails: quickstart_parity_common.cli refuses it (exit 2, one error line naming it); were it let
    through, the verdict's finiteness branch would fail it (exit 1; test_verdict_nonfinite)."""
    try:
        code = main(_cli(tiny, tmp_path, "--lr", "nan"))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    assert code != 0 and "nan" in (captured.out + captured.err).lower()


@pytest.mark.parametrize("argv, message", [
    (["--device", "foo"], "invalid choice: 'foo'"),
    (["--threads", "-1"], "must be 0 or more"),
    (["--save", "m.msgpack"], "--save m.msgpack"),
    (["--precision", "tf32"], "invalid choice"),
])
def test_cli_bad_input_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_cli_help_shows_every_default():
    p = parser()
    text = p.format_help()
    for action in p._actions:  # argparse offers no public list of its actions
        if action.dest == "help":
            continue
        assert action.option_strings[0] in text
    assert text.count("(default:") == len(p._actions) - 1


def test_cli_save_is_honoured(tiny, tmp_path):
    assert main(_cli(tiny, tmp_path, "--save", str(tmp_path / "m.pth"), "--hidden", "16")) == 0
    model = tcheckpoint.load(tmp_path / "m.pth", H.torch_model(H.init_state_dict(1, (16,))))
    params = jcheckpoint.load(tmp_path / "m.msgpack", init_params(jax.random.PRNGKey(0), (16,)))
    np.testing.assert_array_equal(H.params_as_torch_numpy(params)["linear_relu_stack.0.weight"].shape,
                                  model.state_dict()["linear_relu_stack.0.weight"].shape)


def test_derived_run_refuses_a_dropout_the_registry_does_not_list():
    """A Dropout without a site would draw its own masks on each side (torch's and JAX's RNGs never agree): both
    sides refuse it by name instead of failing the comparison as if the port were wrong."""
    cnn = PAIRS["cnn"]
    bare = dataclasses.replace(cnn, format=dataclasses.replace(cnn.format, dropout=()))
    torch.manual_seed(0)
    model = cnn.torch_module(cnn.hidden)
    with pytest.raises(ValueError, match="torch's Dropout 'dropout' is not a dropout site"):
        cnn_side_by_side._torch_masked(model, bare, Masks(0))
    variables = cnn.to_flax({k: v.numpy() for k, v in model.state_dict().items()})
    x = jnp.zeros((2, 784), jnp.float32)
    with pytest.raises(ValueError, match="Flax's Dropout 'dropout' is not a dropout site"):
        cnn_side_by_side._flax_apply(bare, cnn.jax.module(cnn.hidden), variables, x, {}, True)
    cnn_side_by_side._torch_masked(cnn.torch_module(cnn.hidden), cnn, Masks(0))  # the registered site is taken
