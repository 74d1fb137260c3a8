"""Data parallelism (N = 2 on CPU): torch DDP (gloo, 2 processes), JAX sharded ``jit`` and JAX
``shard_map`` (2 host devices) train the quickstart as one device does, per step; and the negative
controls are caught.

Tolerances are derived in the same run (``parity.distributed``): every form also trains in float64;
a float32 pair may differ per step by ``MULTIPLE`` x the larger of the two forms' own
|float32 - float64| error (running max), and the float64 runs must agree to ``F64_AGREE``.
The default run is the first 301 steps of the real epoch (ending, like the epoch, with a batch of
32); the whole epoch (938 steps) is the same test marked ``slow``. Each size trains in one fixture
(one set of DDP processes, one JAX process per precision): starting processes is most of the time
on a loaded 2-core machine.
"""
import os
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest
import torch

from parity import distributed as PD
from parity import tolerances as T
from parity.compare import assert_trees_close
from tests.helpers import at_once

pytestmark = pytest.mark.distributed

N = 2
UNEVEN = 20 * 64 + 33  # 21 steps, the last of 33 samples: shards of 17 and 16
EVEN = 20 * 64 + 32  # 21 steps, the last of 32 samples (16 and 16), as the real epoch ends
PREFIX = 300 * 64 + 32  # 301 steps of the real epoch, the last of 32
REPLICATED = ("ddp", "jax_sharded", "jax_shard_map")


def _epoch_selected(request) -> bool:
    """Whether this session runs the whole-epoch tests of this file (they are marked slow)."""
    return any(item.path == request.node.path and "[epoch" in item.nodeid for item in request.session.items)


@pytest.fixture(scope="module")
def shared_runs(request, data_dir):
    """The controls and, where this session runs it, the whole real epoch (938 steps, float32 and
    float64) in one ``run_forms`` call: one start of DDP's processes and of the JAX processes, which
    are a large part of a short run."""
    R = PD.Run
    cfg = PD.DistConfig(devices=N, data_dir=data_dir, verbose=False)
    controls = [
        R("uneven32", overrides={"samples": UNEVEN}), R("uneven64", dtype="float64", overrides={"samples": UNEVEN}),
        R("sum", overrides={"samples": EVEN, "grad_reduce": "sum"}),
        R("same_shard", overrides={"samples": EVEN, "same_shard": True}),
        R("seeds", overrides={"samples": EVEN, "seed_per_rank": True}),
        R("floor", overrides={"samples": UNEVEN, "split": "floor"}),
        R("drop_last", overrides={"samples": EVEN, "split": "drop_last"}),
    ]
    epoch = [R("f32"), R("f64", dtype="float64")] if _epoch_selected(request) else []
    return PD.run_forms(cfg, controls + epoch)


@pytest.fixture(scope="module")
def runs(shared_runs):
    return shared_runs


@pytest.fixture(scope="module")
def epoch_runs(shared_runs):
    """The whole real epoch, 938 steps, float32 and float64."""
    assert "f32" in shared_runs, "the epoch runs only where its tests are selected (_epoch_selected)"
    return shared_runs


@pytest.fixture(scope="module")
def prefix_runs(data_dir):
    """The epoch's first 301 steps, float32 and float64: the whole epoch's stand-in when it is deselected."""
    cfg = PD.DistConfig(devices=N, data_dir=data_dir, verbose=False)
    return PD.run_forms(cfg, [PD.Run("f32", overrides={"samples": PREFIX}),
                              PD.Run("f64", dtype="float64", overrides={"samples": PREFIX})])


@pytest.fixture(scope="module", params=["prefix", pytest.param("epoch", marks=pytest.mark.slow)])
def sized(request):
    """(runs, samples, steps): the whole epoch (slow), or its 301-step prefix where the epoch is deselected."""
    if request.param == "prefix":
        if _epoch_selected(request):
            pytest.skip("the whole epoch runs in this session: its first 301 steps are these")
        return request.getfixturevalue("prefix_runs"), PREFIX, 301
    return request.getfixturevalue("epoch_runs"), 60000, 938


def test_forms_agree_per_step(sized):
    runs, _, steps = sized
    full = PD.compare({"float32": runs["f32"], "float64": runs["f64"]})
    assert len(runs["f32"]["one_device"]["losses"]) == steps
    for name, p in full["pairs"].items():
        print(f"{name}: float32 max gap {p['max_gap_f32']:.3e}, tolerance {p['min_tol']:.2e}..{p['max_tol']:.2e}, "
              f"float64 gap {p['max_gap_f64']:.1e}")
    print("float32 vs float64:", full["f32_vs_f64"])
    assert full["failures"] == []
    # The tolerance is tight enough to mean something: far below the loss's own step-to-step change.
    assert max(p["max_tol"] for p in full["pairs"].values()) < 1e-4


def test_final_weights_and_accuracies_equal(sized):
    runs, _, _ = sized
    r32, r64 = runs["f32"], runs["f64"]
    for form in REPLICATED:
        atol = PD.derived_param_atol(r32, r64, form, "one_device")
        diffs = assert_trees_close(r32[form]["epochs"][-1], r32["one_device"]["epochs"][-1], rtol=0, atol=atol,
                                   what=f"{form} weights after one epoch")
        print(form, f"atol {atol:.2e}", max(d.max_abs for d in diffs))
    accuracies = {form: r32[form]["test"][-1][0] for form in PD.FORMS}
    # Same framework, same math: equal. Across frameworks a near-tie test image may flip, as in
    # python -m parity (its report shows both accuracies), up to T.ACCURACY_IMAGES.
    assert accuracies["ddp"] == accuracies["one_device"], accuracies
    assert accuracies["jax_sharded"] == accuracies["jax_shard_map"], accuracies
    images = abs(accuracies["ddp"] - accuracies["jax_sharded"]) * PD.TEST_IMAGES
    assert images <= T.ACCURACY_IMAGES + 0.5, accuracies
    assert accuracies["one_device"] > 0.15  # trained: 10% at the start
    # JAX evaluated its own weights with jax_impl.train.evaluate: the same accuracy.
    assert r32["jax_sharded"]["accuracy"] == r32["jax_shard_map"]["accuracy"] == accuracies["jax_sharded"]


def test_each_replica_sees_a_different_shard_of_every_batch(sized):
    runs, samples, _ = sized
    for form in REPLICATED:
        shards = runs["f32"][form]["shards"]
        assert PD.shard_problems(shards, samples, 64) == [], form
        assert [len(s) for s in (shards[0][-1], shards[1][-1])] == [16, 16]  # the last batch of 32, split
        assert all(set(a.tolist()).isdisjoint(b.tolist()) and len(a) and len(b) for a, b in zip(*shards, strict=True))


def test_initial_weights_identical_across_ranks(sized, init_sd):
    runs, _, _ = sized
    ddp = runs["f32"]["ddp"]
    for rank_init in ddp["init"]:  # what each rank starts from, after DDP's construction
        for k, v in init_sd.items():
            assert np.array_equal(rank_init[k], v), k
    for rank_epochs in ddp["rank_epochs"][1:]:  # and the replicas stay identical, bit for bit
        for k, v in rank_epochs[-1].items():
            assert np.array_equal(v, ddp["rank_epochs"][0][-1][k]), k
    for form in ("jax_sharded", "jax_shard_map"):
        assert runs["f32"][form]["init_mismatch"] == [] and runs["f32"][form]["final_mismatch"] == []


def test_jax_forms_all_reduce_gradients_not_gather_the_batch(runs):
    """Checked on the uneven run (its last shards 17 and 16): the gradients are still all-reduced."""
    for form in ("jax_sharded", "jax_shard_map"):
        assert runs["uneven32"][form]["collectives"] == ["all-reduce"], runs["uneven32"][form]["collectives"]
        assert len(runs["uneven32"][form]["devices"]) == N


def test_unequal_shards_train_as_one_device(runs):
    """The last batch of 33 splits 17/16: DDP with the loss weights n_r * N / b, JAX padded with weight 0."""
    cmp = PD.compare({"float32": runs["uneven32"], "float64": runs["uneven64"]})
    assert cmp["failures"] == []
    for form in REPLICATED:
        assert [len(s[-1]) for s in runs["uneven32"][form]["shards"]] == [17, 16]
        assert PD.shard_problems(runs["uneven32"][form]["shards"], UNEVEN, 64) == []


# --- negative controls: each one must be caught ---------------------------------------------------

def _beyond(runs, control: str, form: str) -> np.ndarray:
    """Steps where the control's per-step loss leaves the tolerance derived for the correct form."""
    ref = runs[control]["one_device"]["losses"]
    losses = runs[control][form]["losses"]
    err = np.abs(runs["uneven32"][form]["losses"] - runs["uneven64"][form]["losses"])
    err1 = np.abs(runs["uneven32"]["one_device"]["losses"] - runs["uneven64"]["one_device"]["losses"])
    k = min(len(losses), len(ref))
    tol = PD.derived_tolerance(err[:k], err1[:k], ref[:k])
    return np.flatnonzero(~(np.abs(losses[:k] - ref[:k]) <= tol))


@pytest.mark.parametrize("form", REPLICATED)
def test_control_gradients_summed_not_averaged(runs, form):
    bad = _beyond(runs, "sum", form)
    assert bad.size and bad[0] == 1, bad[:3]  # step 1's loss is before any update; step 2 already shows it


@pytest.mark.parametrize("form", REPLICATED)
def test_control_every_replica_fed_the_same_shard(runs, form):
    problems = PD.shard_problems(runs["same_shard"][form]["shards"], EVEN, 64)
    assert problems and "share samples" in problems[0], problems
    bad = _beyond(runs, "same_shard", form)
    assert bad.size and bad[0] == 0  # the first loss is the mean of half the batch


@pytest.mark.parametrize("form", REPLICATED)
def test_control_ranks_initialised_from_different_seeds(runs, form, init_sd):
    res = runs["seeds"][form]
    if form == "ddp":  # DDP(init_sync=False): each rank keeps its own seed's weights
        assert not all(np.array_equal(res["init"][1][k], init_sd[k]) for k in init_sd)
    else:
        assert res["init_mismatch"], "the replica check must see different copies"
    assert _beyond(runs, "seeds", form).size


@pytest.mark.parametrize("form", REPLICATED)
def test_control_split_drops_the_remainder(runs, form):
    """``floor``: each replica gets b // N of the last batch of 33 (one sample lost)."""
    problems = PD.shard_problems(runs["floor"][form]["shards"], UNEVEN, 64)
    assert problems and "do not cover" in problems[0], problems
    assert _beyond(runs, "floor", form).tolist() == [20]  # exactly the last step


@pytest.mark.parametrize("form", REPLICATED)
def test_control_drop_last_partial_batch(runs, form):
    """``drop_last``: the last batch of 32 never trains; one device trains 21 steps, this 20."""
    assert len(runs["drop_last"][form]["losses"]) == len(runs["drop_last"]["one_device"]["losses"]) - 1
    assert PD.shard_problems(runs["drop_last"][form]["shards"], EVEN, 64)
    gap = max(np.max(np.abs(runs["drop_last"][form]["epochs"][-1][k] - runs["drop_last"]["one_device"]["epochs"][-1][k]))
              for k in runs["drop_last"]["one_device"]["epochs"][-1])
    atol = PD.derived_param_atol(runs["uneven32"], runs["uneven64"], form, "one_device")
    assert gap > 10 * atol, (gap, atol)


# --- bad input and failures: one error line, exit 2, never a hang ---------------------------------

def _env():
    return dict(os.environ, PYTHONPATH=str(PD.REPO))


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "parity.distributed", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=PD.REPO, env=_env())


BAD_INPUT = [
    (("--devices", "4096"), "--devices 4096: this machine can run"),
    (("--batch-size", "63"), "--batch-size 63 is not divisible by --devices 2"),
]


@pytest.fixture(scope="module")
def refused(data_dir):
    """Every BAD_INPUT row's process, two at a time (each mostly waits on its own imports)."""
    return at_once({args: partial(_cli, *args, "--data-dir", data_dir) for args, _ in BAD_INPUT})


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_error_line(args, message, refused):
    proc = refused[args]
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m parity.distributed: error: ") and message in lines[0], lines


FAULT = textwrap.dedent("""
    import sys
    from reference_torch import distributed as D, launch
    if __name__ == "__main__":
        try:
            launch.run(D.Config(devices=2, samples={samples}, data_dir={data_dir!r}, fault={fault!r}, fault_rank=1,
                           fault_step=3, timeout_s={timeout}))
        except launch.DistributedError as e:
            print("error:", e)
            sys.exit(2)
""")


@pytest.mark.parametrize("fault, timeout, message", [
    ("kill", 60, "DDP rank 1 was killed by SIGKILL"),  # detected at once, not after the timeout
    ("stall", 10, "DDP rank 0 failed"),  # rank 1 hangs alive: rank 0's collective times out
])
def test_a_failed_rank_stops_the_others(fault, timeout, message, data_dir, tmp_path):
    script = tmp_path / "fault.py"
    script.write_text(FAULT.format(samples=EVEN, data_dir=data_dir, fault=fault, timeout=timeout))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          cwd=PD.REPO, env=_env())
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 2
    assert message in proc.stdout and "the other ranks were stopped" in proc.stdout


@pytest.mark.gpu
def test_gpu_forms_agree(data_dir):
    """On CUDA: NCCL DDP and JAX over the GPUs (at most 2), float64-derived tolerances, 100 steps."""
    cfg = PD.DistConfig(devices=min(2, torch.cuda.device_count()), device="cuda", data_dir=data_dir,
                        samples=100 * 64, verbose=False)
    res = PD.run_forms(cfg, [PD.Run("f32"), PD.Run("f64", dtype="float64")])
    cmp = PD.compare({"float32": res["f32"], "float64": res["f64"]})
    assert cmp["failures"] == []
