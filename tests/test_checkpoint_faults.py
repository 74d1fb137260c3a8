"""Saving and loading under faults, both sides: SIGKILL mid-write, bad save targets checked before
any work, a NaN made by the last update or in the test pass, ``--load`` of files that do not fit, a
checkpoint folder shared by two runs, a save that fails for lack of space."""
from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from functools import partial

import jax
import numpy as np
import pytest
import torch

from jax_impl import checkpoint as jck
from jax_impl.model import init_params
from quickstart_parity_common import checkpoint as common_checkpoint
from quickstart_parity_common.checkpoint import (
    DATA_FIELD,
    RUN_FILE,
    CheckpointError,
    atomic_write,
    check_target,
    claim_checkpoint_dir,
    save_final,
)
from quickstart_parity_common.report import NonFiniteLossError
from reference_torch import checkpoint as tck
from reference_torch.model import NeuralNetwork
from tests.helpers import REPO, at_once, run_in_process, run_module, write_tiny_dataset

HIDDEN = (16,)

# A child that starts an atomic write of a large file, says so, and blocks until it is killed.
SLOW_WRITER = """
import sys, time
from quickstart_parity_common.checkpoint import atomic_write
def write(f):
    f.write(b"x" * (8 << 20)); f.flush()
    print("writing", flush=True)
    time.sleep(600)
atomic_write(sys.argv[1], write)
"""


def _torch_side(path, seed):
    torch.manual_seed(seed)
    model = NeuralNetwork(HIDDEN)
    tck.save(model, path)
    return lambda: [v.numpy() for v in tck.load(path, NeuralNetwork(HIDDEN)).state_dict().values()], \
        [v.numpy().copy() for v in model.state_dict().values()]


def _jax_side(path, seed):
    params = init_params(jax.random.PRNGKey(seed), HIDDEN)
    jck.save(params, path)
    template = init_params(jax.random.PRNGKey(9), HIDDEN)
    return lambda: [np.asarray(v) for v in jax.tree_util.tree_leaves(jck.load(path, template))], \
        [np.asarray(v) for v in jax.tree_util.tree_leaves(params)]


@pytest.mark.parametrize("side", [_torch_side, _jax_side], ids=["torch", "jax"])
def test_sigkill_during_write_keeps_previous_and_next_write_cleans_up(tmp_path, side):
    path = tmp_path / "model.ckpt"
    load, before = side(path, 0)
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert child.stdout.readline().strip() == "writing"
        temps = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(temps) == 1 and re.fullmatch(rf"\.model\.ckpt\.{child.pid}\.\w+\.tmp", temps[0]), temps
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert all(np.array_equal(a, b) for a, b in zip(load(), before, strict=True))  # the previous checkpoint, whole
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]) == 1  # the dead writer's leftover
    load, after = side(path, 1)  # the next successful write
    assert all(np.array_equal(a, b) for a, b in zip(load(), after, strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_failed_write_removes_its_temporary_file_and_keeps_the_old(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"old")

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_two_writers_never_share_a_temporary_file(tmp_path):
    """The old fixed ``.NAME.tmp`` let two runs mix their bytes; each write now has its own file."""
    path = tmp_path / "m.bin"
    seen = []

    def outer(f):
        seen.append(f.name)
        atomic_write(path, lambda g: (seen.append(g.name), g.write(b"inner")))
        f.write(b"outer")

    atomic_write(path, outer)
    assert seen[0] != seen[1] and path.read_bytes() == b"outer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_saved_file_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "m.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "m.bin").stat().st_mode & 0o777 == 0o644


def _bad_targets(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "real").write_bytes(b"keep me")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    return {
        "a directory": (tmp_path / "folder", "is a directory"),
        "a symlink": (tmp_path / "link", "symbolic link"),
        "a device": ("/dev/null", "not a regular file"),
        "a missing folder": (tmp_path / "absent" / "m.pth", "does not exist"),
    }


@pytest.mark.parametrize("case", ["a directory", "a symlink", "a device", "a missing folder"])
def test_bad_save_target_refused(tmp_path, case):
    target, message = _bad_targets(tmp_path)[case]
    with pytest.raises(CheckpointError, match=message):
        check_target(target)
    with pytest.raises(CheckpointError, match=message):
        atomic_write(target, lambda f: f.write(b"x"))
    assert (tmp_path / "real").read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(CheckpointError, match="not writable"):
        check_target(tmp_path / "ro" / "m.pth")


# The refusals run in this process, through the CLI's own ``main(argv)`` (the same code ``python -m``
# runs; a process start and torch's or JAX's import each would take seconds): exit code 2 returned
# or raised (argparse), one line on stderr, nothing trained. One of them also runs as a real
# process, for its exit status and a stderr free of anything else.
SUBPROCESS = "load-garbage"


REFUSALS = {  # id: (flags, what the error line says)
    "save-dir": (["--save", "{tmp}"], "is a directory"),
    "save-missing-folder": (["--save", "{tmp}/absent/m"], "does not exist"),
    "save-device": (["--save", "/dev/null"], "not a regular file"),
    "ckdir-missing-parent": (["--checkpoint-dir", "{tmp}/absent/ck"], "does not exist"),
    "ckdir-file": (["--checkpoint-dir", "{tmp}/file"], "not a directory"),
    "resume-no-dir": (["--resume"], "--resume needs --checkpoint-dir"),
    "resume-empty": (["--resume", "--checkpoint-dir", "{tmp}/empty"], "no checkpoint"),
    "load-dir": (["--load", "{tmp}"], "is a directory"),
    "load-missing": (["--load", "{tmp}/absent.ckpt"], "no such checkpoint file"),
    SUBPROCESS: (["--load", "{tmp}/file"], "not a readable"),
    "limit-too-big": (["--limit-train", "70000"], "has only 60000 images"),
    # a resume checkpoint of the run's own folder, and the folder's record: never replaced by a weights file
    "save-own-checkpoint": (["--checkpoint-dir", "{tmp}/ck", "--save", "{tmp}/ck/epoch-0002.pth"],
                            "file of this run's --checkpoint-dir"),
    "save-own-record": (["--checkpoint-dir", "{tmp}/ck", "--save", "{tmp}/ck/../ck/run.json"],
                        "file of this run's --checkpoint-dir"),
}


@pytest.mark.parametrize("module", ["reference_torch", "jax_impl"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_cli_refuses_before_training(module, case, tmp_path, data_dir, capsys):
    flags, message = REFUSALS[case]
    (tmp_path / "file").write_bytes(b"not a checkpoint")
    (tmp_path / "ck").mkdir()
    args = ["--epochs", "1", "--data-dir", data_dir, *[f.format(tmp=tmp_path) for f in flags]]
    if case == SUBPROCESS:
        proc = run_module(module, *args)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code, out, err = run_in_process(module, args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], err
    assert "Epoch 1" not in out  # refused before any training


@pytest.mark.parametrize("module, suffix", [("reference_torch", ".pth"), ("jax_impl", ".msgpack")])
def test_last_update_making_weights_nan_fails_and_saves_nothing(module, suffix, tmp_path):
    """One step (64 images): its loss is finite; its update, lr 1e3 times a gradient that weight
    decay 1e38 made ~1e36, overflows float32 to inf."""
    write_tiny_dataset(tmp_path, n_train=64, n_test=16)
    save = tmp_path / f"m{suffix}"
    proc = run_module(module, "--epochs", "1", "--lr", "1e3", "--weight-decay", "1e38", "--data-dir", str(tmp_path),
                      "--save", str(save),
                      "--checkpoint-dir", str(tmp_path / "ck"), env={"QSP_DEBIAN_DIR": str(tmp_path / "none")})
    assert proc.returncode == 2, proc.stderr
    assert "parameters became NaN or inf at epoch 1" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert "loss: " in proc.stdout and "Avg loss" not in proc.stdout
    assert not save.exists() and list((tmp_path / "ck").glob("epoch-*")) == []  # (its lock and run record only)


@pytest.mark.parametrize("module, save", [
    ("reference_torch", lambda p: tck.save(NeuralNetwork((256, 512)), p)),
    ("jax_impl", lambda p: jck.save(init_params(jax.random.PRNGKey(0), (256, 512)), p)),
])
def test_load_other_widths_is_one_error_line(module, save, tmp_path):
    path = tmp_path / "wide.ckpt"
    save(path)
    write_tiny_dataset(tmp_path, n_train=64, n_test=16)
    env = {"QSP_DEBIAN_DIR": str(tmp_path / "none")}
    done = at_once({  # two independent runs reading the same files, at once
        "refused": partial(run_module, module, "--load", str(path), "--data-dir", str(tmp_path), env=env),
        "loaded": partial(run_module, module, "--load", str(path), "--hidden", "256,512", "--data-dir", str(tmp_path),
                          env=env)})
    proc = done["refused"]
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "other hidden widths" in proc.stderr and str(path) in proc.stderr
    proc = done["loaded"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith("Loaded ") and "Test Error" in proc.stdout and "Predicted" in proc.stdout


# --------------------------------------------------------------------------------------------------
# A checkpoint folder belongs to one run


def _tiny(tmp_path, seed=0):
    folder = tmp_path / f"data{seed}"
    write_tiny_dataset(folder, n_train=64, n_test=16, seed=seed)
    return str(folder)


@pytest.mark.parametrize("module, suffix", [("reference_torch", ".pth"), ("jax_impl", ".msgpack")])
def test_checkpoint_folder_refuses_another_runs_flags_or_data(module, suffix, tmp_path, capsys, monkeypatch):
    """Run A's checkpoints stay A's: a run with another seed, or other data of the same size, into the
    same folder is refused naming the flag, the files untouched; the same flags and data go on."""
    monkeypatch.setenv("QSP_DEBIAN_DIR", str(tmp_path / "none"))
    ck = tmp_path / "ck"
    base = ["--epochs", "1", "--hidden", "16", "--checkpoint-dir", str(ck), "--save", ""]
    code, _, err = run_in_process(module, [*base, "--data-dir", _tiny(tmp_path)], capsys)
    assert code == 0, err
    written = (ck / f"epoch-0001{suffix}").read_bytes()
    record = json.loads((ck / RUN_FILE).read_text())
    assert record["seed"] == 0 and len(record[DATA_FIELD]) == 64
    for flags, named in ((["--seed", "1", "--data-dir", _tiny(tmp_path)], "--seed is 1"),
                         (["--data-dir", _tiny(tmp_path, seed=1)], "--data-dir")):
        code, out, err = run_in_process(module, [*base, *flags], capsys)
        assert code == 2 and err.count("\n") == 1 and "belongs to another run" in err and named in err, err
        assert "Epoch 1" not in out and (ck / f"epoch-0001{suffix}").read_bytes() == written
    code, _, err = run_in_process(module, [*base, "--data-dir", _tiny(tmp_path), "--epochs", "2"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in ck.iterdir()) == [".lock", f"epoch-0001{suffix}", f"epoch-0002{suffix}", RUN_FILE]


HOLDER = """
import sys, time
from quickstart_parity_common.checkpoint import claim_checkpoint_dir
claim_checkpoint_dir(sys.argv[1], {"seed": 0})
print("holding", flush=True)
time.sleep(600)
"""


def test_second_writer_refused_while_the_first_lives(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(ck)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert child.stdout.readline().strip() == "holding"
        with pytest.raises(CheckpointError, match=rf"another run \(pid {child.pid}\) is writing there"):
            claim_checkpoint_dir(ck, {"seed": 0})
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    claim_checkpoint_dir(ck, {"seed": 0})  # the kernel dropped the dead writer's lock


def test_folder_of_checkpoints_without_a_record_refused(tmp_path):
    """Checkpoints whose run is unknown (an older version wrote them) are not silently adopted."""
    (tmp_path / "epoch-0001.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=f"no {RUN_FILE}"):
        claim_checkpoint_dir(tmp_path, {"seed": 0})
    (tmp_path / RUN_FILE).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a run record"):
        claim_checkpoint_dir(tmp_path, {"seed": 0})


# --------------------------------------------------------------------------------------------------
# A save that fails (disk full, ulimit -f): one line, and the trained weights kept somewhere named


@pytest.mark.parametrize("module", ["reference_torch", "jax_impl"])
def test_save_past_the_file_size_limit_is_one_error_line(module, tmp_path):
    """``ulimit -f 20`` (20 KiB), a 50 kB model: torch's zip writer used to end in ``RuntimeError: ...
    unexpected pos`` and a traceback. The rescue copy hits the same per-process limit, and says so."""
    data = _tiny(tmp_path)
    save = tmp_path / "m.ckpt"
    command = f"ulimit -f 20 && exec {sys.executable} -m {module} --epochs 1 --hidden 16 --data-dir {data} --save {save}"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
                                   QSP_DEBIAN_DIR=str(tmp_path / "none")))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [line for line in lines if not line.startswith("[epoch")] == [lines[-1]], proc.stderr[-3000:]
    assert f"error: cannot save to {save}: File too large" in lines[-1] and "trained weights are lost" in lines[-1]
    assert "Traceback" not in proc.stderr and "Done!" in proc.stdout and "Saved" not in proc.stdout
    assert not save.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_final_save_names_where_the_trained_weights_are(tmp_path, monkeypatch):
    """With a checkpoint folder: its last checkpoint (``--resume`` saves it again); without: a copy in
    the temporary folder, which holds the weights."""
    monkeypatch.setattr(common_checkpoint.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    full = tmp_path / "full" / "m.pth"

    def save(path):
        if path.parent == full.parent:
            raise CheckpointError(f"cannot save to {path}: No space left on device")
        tck.save(model, path)

    torch.manual_seed(0)
    model = NeuralNetwork(HIDDEN)
    with pytest.raises(CheckpointError, match=r"No space left on device; the trained weights are kept in "
                                              r"ck/epoch-0003.pth: free space, then rerun .* --resume"):
        save_final(save, full, "ck/epoch-0003.pth")
    with pytest.raises(CheckpointError, match=r"No space left on device; the trained weights were saved to (\S+) instead"
                       ) as e:
        save_final(save, full, None)
    rescued = re.search(r"saved to (\S+) instead", str(e.value)).group(1)
    assert rescued.startswith(str(tmp_path / "tmp")) and rescued.endswith(".pth")
    loaded = tck.load(rescued, NeuralNetwork(HIDDEN)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------------------
# A NaN or inf test loss (finite weights can overflow the logits) stops every run before it saves


@pytest.mark.parametrize("module, suffix", [("reference_torch.train", ".pth"), ("jax_impl.train", ".msgpack"),
                                            ("reference_torch.cnn_train", ".pth"), ("jax_impl.cnn_train", ".msgpack")])
def test_non_finite_test_loss_stops_before_saving(module, suffix, tmp_path, monkeypatch):
    train = importlib.import_module(module)
    monkeypatch.setenv("QSP_DEBIAN_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: (0.5, float("nan")))
    cnn = "cnn" in module
    config = train.Config(epochs=1, data_dir=_tiny(tmp_path), save=str(tmp_path / f"m{suffix}"), hidden=HIDDEN,
                          model="cnn" if cnn else "mlp", checkpoint_dir="" if cnn else str(tmp_path / "ck"))
    with torch.random.fork_rng(), pytest.raises(NonFiniteLossError, match="test loss after epoch 1 is nan"):
        train.run(config)
    assert not (tmp_path / f"m{suffix}").exists()
    assert cnn or not list((tmp_path / "ck").glob("epoch-*"))


@pytest.mark.parametrize("module, save", [
    ("reference_torch", lambda p: tck.save(_huge(NeuralNetwork(HIDDEN)), p)),
    ("jax_impl", lambda p: jck.save(jax.tree_util.tree_map(lambda w: w * 1e30, init_params(jax.random.PRNGKey(0),
                                                                                           HIDDEN)), p)),
])
def test_loaded_model_with_non_finite_test_loss_is_one_error_line(module, save, tmp_path, capsys, monkeypatch):
    """Weights of 1e30, finite, overflow the logits to inf: the test loss is NaN, never printed as a score."""
    monkeypatch.setenv("QSP_DEBIAN_DIR", str(tmp_path / "none"))
    save(tmp_path / "huge.ckpt")
    code, out, err = run_in_process(module, ["--load", str(tmp_path / "huge.ckpt"), "--hidden", "16", "--data-dir",
                                   _tiny(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "the test loss of the loaded model is nan" in err, err
    assert "Avg loss" not in out


def _huge(model):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e30)
    return model
