"""``python -m parity``: the side-by-side run writes its report and plot, and exits 1 on disagreement."""
import json

import numpy as np

from parity import side_by_side
from parity.__main__ import main


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
