"""The multi-process forms (``python -m parity.distributed --processes 2``): torch DDP started by
``torchrun --standalone`` (ranks from RANK/WORLD_SIZE/LOCAL_RANK, env:// rendezvous, gloo) and JAX
as one program over 2 processes (``jax.distributed.initialize``, gloo collectives, one global mesh,
each process building only its shard with ``make_array_from_process_local_data``), 2 processes over
loopback on this machine. They train as one device does, per step and in the final weights, with
the float64-derived tolerances of ``parity.distributed``; the controls are caught; the faults end in
one line naming the rank, in bounded time.

Cost: one ``run_forms`` of 21-step runs (torchrun's 2 ranks and 2 JAX processes per precision
start once for every config; the multi-node torchrun form is compared with its standalone run), then
one CLI run of 22 steps together with the fault runs (``faults``: three processes at a time, each
fault mostly waiting).
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from jax_impl import launch as jlaunch
from jax_impl.distributed import Config as JConfig
from parity import distributed as PD
from parity import harness as H
from quickstart_parity_common.shards import DistributedError
from reference_torch import launch as tlaunch
from reference_torch.distributed import Config as TConfig
from tests.helpers import at_once

pytestmark = pytest.mark.distributed

N = 2
UNEVEN = 20 * 64 + 33  # 21 steps, the last of 33 samples: shards of 17 and 16
EVEN = 20 * 64 + 32
REPLICATED = ("ddp", "jax_sharded", "jax_shard_map")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(PD.REPO), JAX_PLATFORMS="cpu", **extra)


@pytest.fixture(scope="module")
def runs(data_dir):
    R = PD.Run
    cfg = PD.DistConfig(devices=N, processes=N, data_dir=data_dir, verbose=False)
    return PD.run_forms(cfg, [
        R("uneven32", overrides={"samples": UNEVEN}), R("uneven64", dtype="float64", overrides={"samples": UNEVEN}),
        R("sum", overrides={"samples": EVEN, "grad_reduce": "sum"}),
        R("same_shard", overrides={"samples": EVEN, "same_shard": True}),
        R("seeds", overrides={"samples": EVEN, "seed_per_rank": True}),
        R("drop_last", overrides={"samples": EVEN, "split": "drop_last"}),
    ])


def test_multiprocess_forms_train_as_one_device(runs):
    results = {"float32": runs["uneven32"], "float64": runs["uneven64"]}
    cmp = PD.compare(results)
    assert cmp["failures"] == [], cmp["failures"]
    assert max(p["max_tol"] for p in cmp["pairs"].values()) < 1e-4  # a tolerance that means something
    for form in REPLICATED:
        assert PD.weight_problems(results, form) == [], form
        shards = runs["uneven32"][form]["shards"]
        assert PD.shard_problems(shards, UNEVEN, 64) == [], form
        assert [len(s[-1]) for s in shards] == [17, 16]  # the last batch of 33, weighted per shard
    for form in ("jax_sharded", "jax_shard_map"):
        res = runs["uneven32"][form]
        assert res["processes"] == N and len(res["devices"]) == N  # one global mesh over both processes
        assert res["collectives"] == ["all-reduce"]
        assert all(np.array_equal(r, res["rank_losses"][0]) for r in res["rank_losses"])  # the same loss everywhere
        assert res["final_mismatch"] == []  # both processes hold bit-equal parameters


def _beyond(runs, control: str, form: str) -> np.ndarray:
    """Steps where the control leaves the tolerance derived for the correct form."""
    ref = runs[control]["one_device"]["losses"]
    losses = runs[control][form]["losses"]
    err = np.abs(runs["uneven32"][form]["losses"] - runs["uneven64"][form]["losses"])
    err1 = np.abs(runs["uneven32"]["one_device"]["losses"] - runs["uneven64"]["one_device"]["losses"])
    k = min(len(losses), len(ref))
    return np.flatnonzero(~(np.abs(losses[:k] - ref[:k]) <= PD.derived_tolerance(err[:k], err1[:k], ref[:k])))


@pytest.mark.parametrize("form", REPLICATED)
def test_control_summed_not_averaged_is_caught(runs, form):
    bad = _beyond(runs, "sum", form)
    assert bad.size and bad[0] == 1, bad[:3]  # step 1 is before any update; step 2 shows the doubled step


@pytest.mark.parametrize("form", REPLICATED)
def test_control_same_shard_everywhere_is_caught(runs, form):
    problems = PD.shard_problems(runs["same_shard"][form]["shards"], EVEN, 64)
    assert problems and "share samples" in problems[0], problems
    bad = _beyond(runs, "same_shard", form)
    assert bad.size and bad[0] == 0


@pytest.mark.parametrize("form", REPLICATED)
def test_control_ranks_seeded_apart_is_caught(runs, form):
    assert _beyond(runs, "seeds", form).size
    if form != "ddp":  # each process placed its own seed's copy: the processes' parameters differ
        assert runs["seeds"][form]["final_mismatch"]


@pytest.mark.parametrize("form", REPLICATED)
def test_control_last_batch_dropped_is_caught(runs, form):
    """``drop_last`` (``DistributedSampler``'s and ``DataLoader(drop_last=True)``'s way to equal shards): the
    last batch of 32 never trains, so each process runs 20 steps where one device runs 21, the shards miss it,
    and the final weights leave the float64-derived tolerance of the correct form."""
    res, ref = runs["drop_last"][form], runs["drop_last"]["one_device"]
    assert len(res["losses"]) == len(ref["losses"]) - 1 == 20
    problems = PD.shard_problems(res["shards"], EVEN, 64)
    assert problems and "steps per replica" in problems[0], problems
    assert [len(r) for r in res["rank_losses"]] == [20] * N  # every process skipped it, not only the one reported
    gap = max(float(np.max(np.abs(res["epochs"][-1][k] - ref["epochs"][-1][k]))) for k in ref["epochs"][-1])
    atol = PD.derived_param_atol(runs["uneven32"], runs["uneven64"], form, "one_device")
    assert gap > 10 * atol, (gap, atol)


def test_torchrun_multi_node_form_equals_standalone(runs, faults, data_dir):
    """Two torchrun agents (``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint``), one rank each, over
    loopback: the cluster's form trains bit for bit as ``--standalone`` does (same ranks, same thread
    count), and rank r's shard is the same on either. The standalone run is the fixture's (its first
    config, this one: a config's numbers do not depend on what its processes trained before)."""
    one = runs["uneven32"]["ddp"]
    assert one["config"] == asdict(TConfig(devices=N, samples=UNEVEN, data_dir=data_dir))
    two = tlaunch.run_processes([TConfig(devices=N, samples=UNEVEN, data_dir=data_dir)], nodes=2)[0]
    assert np.array_equal(one["losses"], two["losses"])
    for r in range(N):
        assert all(np.array_equal(one["shards"][r][k], two["shards"][r][k]) for k in range(len(one["shards"][r])))
        for k, v in one["rank_epochs"][r][-1].items():
            assert np.array_equal(v, two["epochs"][r][-1][k]), (r, k)
    error, _ = faults["node_kill"]  # a node's rank dies
    assert re.match(r"^DDP rank 1 was killed by SIGKILL", str(error)), error


def _cli_pass(data_dir, out):
    return subprocess.run([sys.executable, "-m", "parity.distributed", "--processes", "2", "--samples", str(UNEVEN + 64),
                           "--data-dir", data_dir, "--out-dir", str(out)], capture_output=True, text=True,
                          timeout=900, cwd=PD.REPO, env=_env())


def test_cli_processes_passes(faults):
    proc, out = faults["cli"]
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torchrun" in proc.stdout and "PASS" in proc.stdout
    report = json.loads((out / "distributed_cpu_2_processes.json").read_text())
    assert report["ok"] and report["processes"] == 2 and report["failures"] == []


# --- bad input and faults: one error line naming the rank, exit 2, bounded time ----------------------
# Every fault below is its own short process (or torchrun / JAX job): they run at once in the ``faults``
# fixture, since each mostly waits (imports, a timeout, a peer's death); each bound is minutes above its time.

BAD_PROCESSES = [
    (("--processes", "4096"), "--processes 4096: this machine has"),
    (("--processes", "2", "--devices", "3"), "--devices 3 with --processes 2"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(work: Path, data_dir: str) -> Path:
    """configs.json (2 replicas) and init.npz in ``work``, as the launchers write them."""
    work.mkdir()
    cfgs = [JConfig(devices=N, samples=64, data_dir=data_dir, timeout_s=5)]
    jlaunch._save_inputs(cfgs, H.torch_to_flax(H.init_state_dict(0)), work)
    return work


def _worker(side: str, work: Path, *args, env=None):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", f"{side}.multiprocess", "--configs", str(work / "configs.json"),
                           *(["--init", str(work / "init.npz")] if side == "jax_impl" else []), "--out", str(work), *args],
                          capture_output=True, text=True, timeout=120, cwd=PD.REPO, env=env or _env())
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return proc.returncode, lines, time.monotonic() - start


def _cli(args, data_dir):
    return subprocess.run([sys.executable, "-m", "parity.distributed", *args, "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=300, cwd=PD.REPO, env=_env())


def _raised(call):
    """(the DistributedError ``call`` raised, or None; seconds it took)."""
    start = time.monotonic()
    try:
        call()
    except DistributedError as e:
        return e, time.monotonic() - start
    return None, time.monotonic() - start


@pytest.fixture(scope="module")
def faults(tmp_path_factory, data_dir):
    """Every fault's outcome and the CLI's passing run (it keeps the cores busy while the faults wait), three
    at a time."""
    work = {name: _inputs(tmp_path_factory.mktemp("faults") / name, data_dir)
            for name in ("coordinator", "rendezvous", "count")}
    (work["count"] / "bad.json").write_text("[{")  # _bad_input's files, before its processes run at once
    (work["count"] / "dict.json").write_text('{"devices": 2}')
    init = H.torch_to_flax(H.init_state_dict(0))
    kill = TConfig(devices=N, samples=EVEN, data_dir=data_dir, fault="kill", fault_step=3)
    cli_out = tmp_path_factory.mktemp("cli")
    calls = {
        "count_work": lambda: work["count"],
        "cli": lambda: (_cli_pass(data_dir, cli_out), cli_out),
        "rendezvous": partial(_worker, "reference_torch", work["rendezvous"], env=_env(
            RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))),
        "torch_kill": partial(_raised, partial(tlaunch.run_processes, [kill], 300)),
        "node_kill": partial(_raised, partial(tlaunch.run_processes, [kill], 300, nodes=2)),
        "jax_kill": partial(_raised, partial(jlaunch.run_processes, [JConfig(devices=N, samples=EVEN, data_dir=data_dir,
                                                                             fault="kill", fault_rank=1)], init, 300)),
        "coordinator": partial(_worker, "jax_impl", work["coordinator"], "--coordinator", f"127.0.0.1:{_free_port()}",
                               "--num-processes", "2", "--process-id", "1", "--init-timeout", "3"),
        "jax_count": partial(_worker, "jax_impl", work["count"], "--coordinator", "127.0.0.1:1", "--num-processes", "3",
                             "--process-id", "0"),
        "torch_count": partial(_worker, "reference_torch", work["count"], env=_env(RANK="0", WORLD_SIZE="3",
                                                                                  LOCAL_RANK="0")),
        "too_many": partial(_raised, partial(jlaunch.run_processes, [JConfig(devices=N, samples=64, data_dir=data_dir)],
                                             init, 120, processes=3)),
        **{args: partial(_cli, args, data_dir) for args, _ in BAD_PROCESSES},
        **{(side, case): partial(_bad_input, side, case, work["count"]) for side, case, _ in WORKER_CASES},
    }
    return at_once(calls, workers=3)


SIDES = ("jax_impl", "reference_torch")
BAD_INPUTS = [  # (case, what the one error line says); the rank comes from the flags or torchrun's RANK
    ("missing configs", "--configs {work}/absent.json: cannot read it (No such file or directory)"),
    ("not JSON", "--configs {work}/bad.json: not JSON"),
    ("not a list of configs", "--configs {work}/dict.json: not a non-empty list of Config objects"),
    ("missing out folder", "--out {work}/absent: no such folder"),
    ("bad init", "--init {work}/configs.json / --configs {work}/configs.json: not the inputs jax_impl.launch writes"),
]
WORKER_CASES = [(side, case, message) for side in SIDES for case, message in BAD_INPUTS
                if not (side == "reference_torch" and case == "bad init")]  # torch's ranks take no --init


def _bad_input(side: str, case: str, work: Path):
    configs = {"missing configs": "absent.json", "not JSON": "bad.json", "not a list of configs": "dict.json"}.get(
        case, "configs.json")
    out = work / "absent" if case == "missing out folder" else work
    init = work / ("configs.json" if case == "bad init" else "init.npz")
    flags = []
    cfgs = work / configs
    if side == "jax_impl":  # process 0 of 2: it hosts the coordinator, so nothing is tried before its inputs
        flags = ["--init", str(init), "--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1:1"]
    proc = subprocess.run([sys.executable, "-m", f"{side}.multiprocess", "--configs", str(cfgs), "--out", str(out), *flags],
                          capture_output=True, text=True, timeout=120, cwd=PD.REPO,
                          env=_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0"))
    return proc.returncode, [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]


@pytest.mark.parametrize("side, case, message", WORKER_CASES)
def test_bad_worker_input_is_one_error_line(side, case, message, faults):
    code, lines = faults[(side, case)]
    work = Path(faults["count_work"])
    rank = "process 0" if side == "jax_impl" else "rank 0"
    assert code == 2 and len(lines) == 1, lines
    assert f"python -m {side}.multiprocess ({rank}): error: {message.format(work=work)}" in lines[0], lines


@pytest.mark.parametrize("args, message", BAD_PROCESSES)
def test_bad_processes_is_one_error_line(args, message, faults):
    proc = faults[args]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], lines


def test_jax_process_cannot_reach_the_coordinator(faults):
    code, lines, took = faults["coordinator"]
    assert code == 2 and len(lines) == 1, lines
    assert "(process 1): error: cannot reach the coordinator" in lines[0]
    assert took < 60


def test_torch_rank_cannot_reach_the_rendezvous(faults):
    code, lines, took = faults["rendezvous"]
    errors = [ln for ln in lines if "error:" in ln]
    assert code == 2 and len(errors) == 1 and "(rank 1): error: cannot join the process group" in errors[0], lines
    assert not any("Traceback" in ln for ln in lines), lines
    assert took < 90  # the config's 5 s timeout, plus torch's start


def test_wrong_process_count_is_refused_by_each_side(faults):
    code, lines, _ = faults["jax_count"]
    assert code == 2 and len(lines) == 1 and "--num-processes 3 but the configs train [2] replicas" in lines[0], lines
    code, lines, _ = faults["torch_count"]
    assert code == 2 and len(lines) == 1 and "(rank 0): error: WORLD_SIZE 3 but the configs train [2]" in lines[0], lines


def test_torchrun_rank_killed_mid_epoch_is_named(faults):
    error, took = faults["torch_kill"]
    assert re.match(r"^DDP rank 1 was killed by SIGKILL \(torchrun", str(error)), error
    assert took < 120


def test_jax_process_killed_mid_epoch_is_named(faults):
    error, took = faults["jax_kill"]
    assert re.match(r"^JAX process 1 was killed by SIGKILL; the other processes were stopped", str(error)), error
    assert took < 120


def test_jax_launcher_with_a_process_too_many_names_it(faults):
    """``start_processes(processes=3)`` for 2-replica configs: every process refuses at once."""
    error, _ = faults["too_many"]
    assert re.match(r"^JAX process 0 failed \(exit 2\): .*--num-processes 3 but", str(error)), error
