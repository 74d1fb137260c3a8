"""``--model cnn`` through the three command lines, on a small valid data set: both quickstarts
train, save, load back and predict; ``python -m parity --model cnn`` passes and writes its report;
the two sides' saved files hold the same layers."""
from __future__ import annotations

import json
from functools import partial

import jax
import numpy as np
import pytest
import torch

from jax_impl import checkpoint as jcheckpoint
from jax_impl.cnn import init_variables
from quickstart_parity_common.convert import state_dict_to_variables
from reference_torch.cnn import CNN

from .helpers import at_once, run_module, write_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cnn")
    write_tiny_dataset(root, n_train=200, n_test=50)  # 3 full batches and a partial one
    return root


SIDES = {"reference_torch": ("pth", "Saved PyTorch Model State"), "jax_impl": ("msgpack", "Saved JAX Model State")}


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """Each side's CLI once (2 epochs on the small set, saved) and ``python -m parity --model cnn`` once,
    two processes at a time (each keeps about one core busy); ``{side: (CompletedProcess, path)}`` and
    ``{"parity": (CompletedProcess, its --out-dir)}``."""
    out = tmp_path_factory.mktemp("cnn_runs")
    report = tmp_path_factory.mktemp("cnn_parity")
    jobs = {"parity": (["--model", "cnn", "--epochs", "1", "--data-dir", str(tiny), "--out-dir", str(report)], report)}
    for side, (suffix, _) in SIDES.items():
        path = out / f"cnn.{suffix}"
        jobs[side] = (["--model", "cnn", "--epochs", "2", "--data-dir", str(tiny), "--save", str(path)], path)
    done = at_once({name: partial(run_module, name, *args) for name, (args, _) in jobs.items()})  # parity first: the longest
    return {name: (proc, jobs[name][1]) for name, proc in done.items()}


@pytest.mark.parametrize("side", SIDES)
def test_quickstart_cnn_trains_saves_and_predicts(runs, side):
    p, path = runs[side]
    assert p.returncode == 0, p.stderr
    for line in ("Epoch 1", "Epoch 2", "Accuracy:", "Done!", SIDES[side][1], "Predicted:"):
        assert line in p.stdout, (line, p.stdout)
    assert p.stdout.count("Avg loss:") == 2
    assert path.exists()


def test_saved_files_hold_the_same_layers(runs):
    """The torch state_dict converts to exactly the tree the JAX side saves (names, shapes)."""
    (tp, t_path), (jp, j_path) = runs["reference_torch"], runs["jax_impl"]
    assert tp.returncode == 0 and jp.returncode == 0, tp.stderr + jp.stderr
    model = CNN()
    model.load_state_dict(torch.load(t_path, weights_only=True))  # strict: every key, every shape
    converted = state_dict_to_variables({k: v.numpy() for k, v in model.state_dict().items()})
    loaded = jcheckpoint.load(str(j_path), init_variables(jax.random.PRNGKey(0)))
    a = jax.tree_util.tree_leaves_with_path(converted)
    b = jax.tree_util.tree_leaves_with_path(loaded)
    assert [jax.tree_util.keystr(k) for k, _ in a] == [jax.tree_util.keystr(k) for k, _ in b]
    for (path, u), (_, v) in zip(a, b, strict=True):
        assert np.shape(u) == np.shape(v), jax.tree_util.keystr(path)


def test_parity_cnn_passes_and_reports(runs):
    p, out_dir = runs["parity"]
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| epoch | torch acc | jax acc |" in p.stdout
    assert "steps beyond tolerance: 0/4" in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith("PASS")
    report = json.loads((out_dir / "parity_cnn.json").read_text())
    assert report["ok"] is True and report["config"]["model"] == "cnn" and len(report["epochs"]) == 1
