"""``python -m parity``: the side-by-side run writes its report and plot, and exits 1 on disagreement."""
import json

import numpy as np
import pytest

from parity import cnn_side_by_side, side_by_side
from parity.__main__ import main
from parity.side_by_side import SideBySideConfig
from quickstart_parity_pairs import PAIRS
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
