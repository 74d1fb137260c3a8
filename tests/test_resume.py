"""Resume and determinism, both quickstarts, on a slice of the real FashionMNIST.

Per side, four runs of ``python -m <side>`` (2 epochs, momentum and weight decay so the optimizer
has state): two uninterrupted runs (determinism: byte-identical weights and stdout), one killed
with SIGKILL in the middle of epoch 2, and its resumption from the epoch-1 checkpoint, which must
end with the uninterrupted run's weights, bit for bit, and print its lines for epoch 2. Then what
resume refuses (other data, an ``--epochs`` the checkpoint is past) and Ctrl-C (SIGINT) on either side.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import jax
import numpy as np
import pytest
import torch
from flax import serialization

from jax_impl import checkpoint as jck
from jax_impl import train as jtrain
from jax_impl.model import init_params
from quickstart_parity_common.checkpoint import DATA_FIELD, CheckpointError, flatten
from reference_torch import checkpoint as tck
from reference_torch import train as ttrain
from reference_torch.model import NeuralNetwork
from tests.helpers import REPO, run_in_process, run_module, write_tiny_dataset

# The run is killed from inside its own print of the KILL_AT-th "loss:" line: for torch inside the
# training loop, for JAX inside the compiled epoch's host callback. Real SIGKILL, no clean-up.
KILL_WRAPPER = """
import builtins, os, runpy, signal, sys
module, kill_at = sys.argv[1], int(sys.argv[2])
real_print, seen = builtins.print, [0]
def print_(*args, **kwargs):
    real_print(*args, **kwargs)
    if args and str(args[0]).startswith("loss:"):
        seen[0] += 1
        if seen[0] == kill_at:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
builtins.print = print_
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__")
"""
# 3520 images at batch 32: 110 steps, "loss:" lines at steps 0 and 100 of each epoch. The 4th
# line is step 100 of epoch 2: killed there, epoch 2 has begun and is not finished.
LIMIT, BATCH, KILL_AT = "3520", "32", 4
SIDES = {
    "reference_torch": {"suffix": ".pth", "extra": ["--threads", "1"]},
    "jax_impl": {"suffix": ".msgpack", "extra": []},
}


def _args(side: str, data_dir: str, save, checkpoint_dir=None) -> list[str]:
    args = ["--epochs", "2", "--limit-train", LIMIT, "--batch-size", BATCH, "--momentum", "0.9",
            "--weight-decay", "1e-4", "--lr", "1e-2", "--data-dir", data_dir, "--save", str(save), *SIDES[side]["extra"]]
    return args + (["--checkpoint-dir", str(checkpoint_dir)] if checkpoint_dir else [])


def _weights(side: str, path) -> dict[str, bytes]:
    """name -> raw bytes of every saved tensor (torch's zip also holds a random serialization id)."""
    if side == "reference_torch":
        return {k: v.numpy().tobytes() for k, v in torch.load(path, weights_only=True).items()}
    params = serialization.msgpack_restore(path.read_bytes())["params"]
    return {k: np.asarray(v).tobytes() for k, v in flatten(params).items()}


def _epoch_section(stdout: str, first: int) -> str:
    """The printed lines from ``Epoch <first>`` through ``Done!``."""
    start = stdout.index(f"Epoch {first}\n")
    return stdout[start:stdout.index("Done!\n") + len("Done!\n")]


def _killed(side: str, data_dir: str, save, checkpoint_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_WRAPPER, side, str(KILL_AT),
                           *_args(side, data_dir, save, checkpoint_dir)],
                          check=False, capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))


@pytest.fixture(scope="module", params=list(SIDES))
def runs(request, data_dir, tmp_path_factory):
    """The four runs of one side, two at a time (each keeps about one core busy: the import, then
    training, with one thread on torch's side): ``a`` with the killed run, then ``b`` with the resumed one."""
    side = request.param
    tmp = tmp_path_factory.mktemp(side)
    suffix = SIDES[side]["suffix"]
    out = {"side": side, "tmp": tmp}
    ck = tmp / "checkpoints"
    # The two uninterrupted runs, same seed and threads, each in a folder of its own with the same
    # relative save path (so they may run at once and print the same lines): a/model, b/model.
    for name in ("a", "b"):
        (tmp / name).mkdir()
    plain = _args(side, data_dir, f"model{suffix}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(run_module, side, *plain, cwd=tmp / "a")
        killed = pool.submit(_killed, side, data_dir, tmp / f"killed{suffix}", ck)
        b = pool.submit(run_module, side, *plain, cwd=tmp / "b")  # once the first of those ends (the killed run)
        killed = killed.result()
        out["killed"], out["killed_files"] = killed, sorted(p.name for p in ck.iterdir())
        resumed = pool.submit(run_module, side, *_args(side, data_dir, tmp / f"resumed{suffix}", ck), "--resume")
        for name, proc in (("a", a.result()), ("b", b.result())):
            assert proc.returncode == 0, proc.stderr
            out[name] = proc.stdout
        resumed = resumed.result()
    assert resumed.returncode == 0, resumed.stderr
    out["resumed"] = resumed.stdout
    return out


def test_same_seed_same_threads_is_byte_identical(runs):
    side, tmp, suffix = runs["side"], runs["tmp"], SIDES[runs["side"]]["suffix"]
    assert runs["a"] == runs["b"]
    a, b = _weights(side, tmp / "a" / f"model{suffix}"), _weights(side, tmp / "b" / f"model{suffix}")
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        assert a[name] == b[name], name
    if side == "jax_impl":  # msgpack has no random field: the whole file is the same
        assert (tmp / "a" / f"model{suffix}").read_bytes() == (tmp / "b" / f"model{suffix}").read_bytes()


def test_killed_in_epoch_2_then_resumed_is_bit_identical(runs):
    side, tmp, suffix = runs["side"], runs["tmp"], SIDES[runs["side"]]["suffix"]
    killed = runs["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "Epoch 2\n" in killed.stdout and "Done!" not in killed.stdout  # died inside epoch 2
    # only epoch 1's checkpoint (and the folder's lock and run record), no temporary file
    assert runs["killed_files"] == [".lock", f"epoch-0001{suffix}", "run.json"]
    assert re.search(rf"Resumed from \S+epoch-0001{re.escape(suffix)} after epoch 1\n", runs["resumed"])
    assert _epoch_section(runs["resumed"], 2) == _epoch_section(runs["a"], 2)
    assert runs["resumed"].splitlines()[-1] == runs["a"].splitlines()[-1]  # the prediction
    a, resumed = _weights(side, tmp / "a" / f"model{suffix}"), _weights(side, tmp / f"resumed{suffix}")
    assert a.keys() == resumed.keys()
    for name in a:
        assert a[name] == resumed[name], name
    assert sorted(p.name for p in (tmp / "checkpoints").iterdir()) == [".lock", f"epoch-0001{suffix}", f"epoch-0002{suffix}",
                                                                      "run.json"]


def _resume_pair(side: str, path, saved: dict, current: dict):
    """Save a resume checkpoint with config ``saved`` and load it back with config ``current``."""
    if side == "reference_torch":
        cfg = ttrain.Config(hidden=(8,))
        model = NeuralNetwork(cfg.hidden)
        opt = ttrain.make_optimizer(model, cfg.lr)
        tck.save_resume(path, model, opt, 1, 1, {**asdict(cfg), **saved})
        return lambda: tck.load_resume(path, model, opt, {**asdict(cfg), **current})
    cfg = jtrain.Config(hidden=(8,))
    state = jtrain.create_train_state(init_params(jax.random.PRNGKey(0), cfg.hidden), cfg.lr, cfg.hidden)
    jck.save_resume(path, state, jax.random.PRNGKey(0), 1, {**asdict(cfg), **saved})
    return lambda: jck.load_resume(path, state, jax.random.PRNGKey(0), {**asdict(cfg), **current})


@pytest.mark.parametrize("side", list(SIDES))
def test_resume_refuses_other_data_named(side, tmp_path):
    """The checkpoint records the data's sha256; ``--data-dir`` of other images (same size) is refused."""
    path = tmp_path / f"epoch-0001{SIDES[side]['suffix']}"
    load = _resume_pair(side, path, {DATA_FIELD: "a" * 64}, {DATA_FIELD: "b" * 64, "data_dir": "other"})
    with pytest.raises(CheckpointError, match=r"--data-dir 'other' holds other data \(sha256 bbbbbbbbbbbb...\)"):
        load()
    load = _resume_pair(side, path, {}, {DATA_FIELD: "b" * 64})
    with pytest.raises(CheckpointError, match="without a record of its data"):
        load()
    _resume_pair(side, path, {DATA_FIELD: "a" * 64}, {DATA_FIELD: "a" * 64})()  # the same data: resumed


@pytest.mark.parametrize("side", list(SIDES))
def test_resume_refuses_epochs_before_the_checkpoint(side, tmp_path, capsys, monkeypatch):
    """An epoch-2 checkpoint and ``--epochs 1``: refused (it used to save the 2-epoch model as the
    1-epoch result). ``--epochs 2``: nothing left to train, the checkpoint's weights saved."""
    monkeypatch.setenv("QSP_DEBIAN_DIR", str(tmp_path / "none"))
    write_tiny_dataset(tmp_path, n_train=64, n_test=16)
    suffix, ck = SIDES[side]["suffix"], tmp_path / "ck"
    base = ["--hidden", "16", "--data-dir", str(tmp_path), "--checkpoint-dir", str(ck)]
    code, _, err = run_in_process(side, [*base, "--epochs", "2", "--save", ""], capsys)
    assert code == 0, err
    saved = str(tmp_path / f"m{suffix}")
    code, out, err = run_in_process(side, [*base, "--epochs", "1", "--resume", "--save", saved], capsys)
    assert code == 2 and err.count("\n") == 1 and "--epochs 1 but this checkpoint was written after epoch 2" in err, err
    assert not (tmp_path / f"m{suffix}").exists()
    code, out, err = run_in_process(side, [*base, "--epochs", "2", "--resume", "--save", saved], capsys)
    assert code == 0, err
    assert "after epoch 2\n" in out and "Epoch " not in out and "Done!" in out
    if side == "reference_torch":
        saved = torch.load(ck / f"epoch-0002{suffix}", weights_only=True)["model"]
        assert _weights(side, tmp_path / f"m{suffix}") == {k: v.numpy().tobytes() for k, v in saved.items()}
    else:
        saved = serialization.msgpack_restore((ck / f"epoch-0002{suffix}").read_bytes())["params"]
        assert _weights(side, tmp_path / f"m{suffix}") == {k: np.asarray(v).tobytes() for k, v in flatten(saved).items()}


# The same wrapper, with a real SIGINT (Ctrl-C) in place of SIGKILL: the run's own handling, not a kill.
INTERRUPT_WRAPPER = KILL_WRAPPER.replace("signal.SIGKILL", "signal.SIGINT")


@pytest.mark.parametrize("side", list(SIDES))
def test_ctrl_c_is_one_line_naming_where_and_resume_goes_on(side, data_dir, tmp_path):
    """SIGINT inside epoch 2: no traceback, one line naming the epoch, the step and the epoch-1
    checkpoint to ``--resume`` from, exit 130; that resume then finishes."""
    suffix, ck = SIDES[side]["suffix"], tmp_path / "ck"
    args = _args(side, data_dir, tmp_path / f"m{suffix}", ck)
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_WRAPPER, side, str(KILL_AT), *args], check=False,
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("[epoch")]
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.fullmatch(rf"python -m {side}: interrupted \(Ctrl-C\): stopped in epoch 2 of 2 \(after step 110\); "
                        rf"the last checkpoint is \S+epoch-0001{re.escape(suffix)}: rerun the same command with "
                        r"--resume to continue from it", lines[0]), lines[0]
    assert sorted(p.name for p in ck.iterdir()) == [".lock", f"epoch-0001{suffix}", "run.json"]
    assert not (tmp_path / f"m{suffix}").exists()
    resumed = run_module(side, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "after epoch 1\nEpoch 2\n" in resumed.stdout and (tmp_path / f"m{suffix}").exists()
