"""The benchmark's machinery, not its speed: the interleaved schedule and the paired-ratio arithmetic
on a fake clock, the FLOP count, bad flags, the README rewrite, and a ``--quick`` run's JSON."""
import json
import math
import re

import numpy as np
import pytest
import torch

from benchmarks import quickstart, report, schedule, variants
from benchmarks import run as bench_run
from benchmarks.schedule import (
    Unit,
    paired_ratio,
    per_round_max,
    rotation,
    run_rounds,
    spread,
)
from benchmarks.workload import flops_per_sample, load_workload
from quickstart_parity_common.report import test_line as format_test_line
from tests.helpers import REPO, run_module, write_tiny_dataset


def test_flops_per_sample_is_the_quickstarts():
    # MACs 784*512 + 512*512 + 512*10 = 668,672: forward 2x, weight gradients 2x, and input
    # gradients of layers 2-3 (no gradient w.r.t. the images) 2 * 267,264.
    assert flops_per_sample() == 2 * 668_672 * 2 + 2 * 267_264 == 3_209_216


def test_rotation_runs_every_unit_once_per_round_in_every_position():
    order = rotation(4, 8)
    assert all(sorted(r) == [0, 1, 2, 3] for r in order)
    assert order[0] == [0, 1, 2, 3] and order[1] == [1, 2, 3, 0]
    for pos in range(4):  # over n rounds each unit takes each position once
        assert sorted(r[pos] for r in order[:4]) == [0, 1, 2, 3]


class FakeClock:
    """A clock that only moves when a fake unit 'works': ``advance(seconds)``."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _fake_units(clock: FakeClock, slowdown: dict[int, float], calls: list[str]):
    """Three units whose true costs are 1, 2 and 4 s, all slowed alike by the machine's phase in
    round r (``slowdown[r]``); the phase is read from how many calls have run."""
    costs = {"a": 1.0, "b": 2.0, "c": 4.0}
    state = {"calls": 0}

    def make(key):
        def build():
            clock.advance(0.5)  # set-up

            def call():
                n = state["calls"]  # calls 0-2 are the warm-ups (3x: compilation), then 3 per round
                state["calls"] += 1
                calls.append(key)
                clock.advance(costs[key] * (3.0 if n < 3 else slowdown.get((n - 3) // 3, 1.0)))
                return costs[key]

            return call

        return build

    return [Unit(k, make(k), work=100.0) for k in costs]


def test_run_rounds_warms_up_first_then_rotates_and_pairs_ratios_within_rounds():
    clock, calls = FakeClock(), []
    slow = {1: 3.0}  # round 1 runs on a machine 3x slower
    timings, log = run_rounds(_fake_units(clock, slow, calls), rounds=3, clock=clock)
    phases = [p for p, _, _ in log]
    assert phases[:6] == ["build", "warmup"] * 3 and set(phases[6:]) == {"round"}  # warm-ups before any round
    rounds = [[k for p, r, k in log if p == "round" and r == i] for i in range(3)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    a, b, c = (timings[k] for k in "abc")
    assert a.build_s == 0.5 and a.warmup_s == 3.0 and c.warmup_s == 12.0
    assert a.times == [1.0, 3.0, 1.0] and c.times == [4.0, 12.0, 4.0]
    # Raw times move with the machine; the paired ratio within each round does not.
    assert paired_ratio(c.times, a.times) == [4.0, 4.0, 4.0]
    assert spread(paired_ratio(c.times, a.times))["noisy"] is False
    assert spread(a.times)["max"] == 3.0
    # Rates: work / time; the limit of a round is the best probe rate in that round.
    assert a.rates == [100.0, 100 / 3, 100.0]
    assert per_round_max([a.rates, b.rates]) == [100.0, 100 / 3, 100.0]
    assert paired_ratio(b.rates, per_round_max([a.rates, b.rates])) == [0.5, 0.5, 0.5]


def test_before_hook_runs_before_build_and_every_call():
    events = []
    unit = Unit("u", lambda: (events.append("build"), lambda: events.append("call"))[1], 1.0,
                before=lambda: events.append("pin"))
    run_rounds([unit], rounds=2, clock=FakeClock())
    assert events == ["pin", "build", "call", "pin", "call", "pin", "call"]


def test_spread_quartiles_and_noisy_threshold():
    s = spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"]) == (3.0, 1.0, 100.0, 2.0, 4.0)
    assert s["rel_iqr"] == pytest.approx(2 / 3) and s["noisy"]
    calm = spread([1.0, 1.01, 1.02, 0.99, 1.0])
    assert calm["rel_iqr"] <= schedule.NOISY_IQR and not calm["noisy"]
    with pytest.raises(ValueError):
        spread([1.0, float("nan")])
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_duplicate_unit_keys_refused():
    u = Unit("x", lambda: (lambda: None), 1.0)
    with pytest.raises(ValueError):
        run_rounds([u, u], 1, clock=FakeClock())


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--rounds", "0"], ["--threads", "-1"], ["--rounds", "x"],
                                   ["--precision", "fp16"], ["--precision", ","], ["--variants", "torch-nope"],
                                   ["--device", "tpu"], ["--variants", "torch-cudagraph"], ["--model", "resnet"]])
def test_bad_flags_are_one_error_line_exit_2(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_run.parse_args(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.strip().count("\n") == 0 and err.startswith("python -m benchmarks.run: error: "), err


def test_good_flags_parse(capsys):
    s = bench_run.parse_args(["--precision", "tf32,fp32,tf32", "--variants", "jax-scan, torch-eager", "--no-sweep"])
    assert s.precisions == ("tf32", "fp32") and s.variants == ("jax-scan", "torch-eager") and not s.sweep
    assert s.rounds == bench_run.DEFAULT_ROUNDS and s.threads == 0 and s.batch_size == 64


def test_help_shows_defaults_and_sweep_reads_right(capsys):
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--sweep, --no-sweep the batch-size and width sweeps (on by default;" in text and "(default: True)" not in text
    assert "--rounds ROUNDS" in text and "(default: 5)" in text and "(default: 64)" in text


def test_cuda_absent_is_one_line_exit_2():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_module("benchmarks.run", "--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "CUDA is not available" in proc.stderr


def test_readme_blocks_rewritten_from_the_committed_json(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:cpu -->\nold cpu\n<!-- /bench:cpu -->\nmiddle\n"
                      "<!-- bench:cuda -->\nold cuda\n<!-- /bench:cuda -->\nend\n")
    done = report.rewrite_readme(readme, REPO / "benchmarks" / "results")
    text = readme.read_text()
    assert done == ["cpu", "cuda"] and "old cpu" not in text and "old cuda" not in text
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
    cuda = json.loads((REPO / "benchmarks" / "results" / "bench_cuda.json").read_text())
    assert cuda["meta"]["gpu"] in text  # the machine is named
    before = text
    report.rewrite_readme(readme, REPO / "benchmarks" / "results")
    assert readme.read_text() == before  # idempotent
    (tmp_path / "bad.md").write_text("no markers\n")
    with pytest.raises(ValueError):
        report.rewrite_readme(tmp_path / "bad.md", REPO / "benchmarks" / "results")


def test_quickstart_lines_parse_back_exactly():
    """benchmarks.quickstart reads the numbers from the very lines both CLIs print (quickstart_parity_common.report)."""
    rows = [(0.4947, 2.1625141), (0.6492, 1.0761807), (0.1, float("nan"))]
    text = "Using cpu device\nEpoch 1\n" + "".join(format_test_line(a, b) + "\n[epoch: 1.0 s]\n" for a, b in rows)
    got = quickstart.parse_epochs(text)
    assert [e["epoch"] for e in got] == [1, 2, 3]
    assert [e["accuracy_pct"] for e in got] == [49.5, 64.9, 10.0]
    assert [e["avg_loss"] for e in got[:2]] == [2.162514, 1.076181] and math.isnan(got[2]["avg_loss"])
    assert quickstart.parse_epochs("loss: 2.3 [   64/60000]\n") == []


def test_quickstart_cli_refuses_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        quickstart.main(["--epochs", "0"])
    assert e.value.code == 2 and "--epochs" in capsys.readouterr().err
    # A side that fails is one error naming it and its last line, and its output is kept in the log.
    log = tmp_path / "side.log"
    with pytest.raises(RuntimeError, match=r"python -m reference_torch exited with 2: .*error: .*--batch-size"):
        quickstart.run_side("reference_torch", ["--batch-size", "0"], log, progress=lambda _: None)
    assert "--batch-size" in log.read_text()


def test_results_blocks_rendered_from_json(tmp_path):
    results = tmp_path / "results"
    (results / "cpu").mkdir(parents=True)
    side = {"command": "python -m X", "log": "x.log", "wall_s": 1.0,
            "epochs": [{"epoch": 1, "accuracy_pct": 49.5, "avg_loss": 2.162514}]}
    (results / "cpu" / "quickstart_cpu.json").write_text(json.dumps({
        "cpu_model": "Test CPU", "cpu_count": 2, "timed_at": "T", "sides": {"reference_torch": side, "jax_impl": {
            **side, "epochs": [{"epoch": 1, "accuracy_pct": 56.5, "avg_loss": 2.157031}]}},
        "versions": {"torch": "1", "jax": "2", "flax": "3", "optax": "4"}}))
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- bench:cpu -->\n<!-- /bench:cpu -->\n<!-- bench:cuda -->\n<!-- /bench:cuda -->\n"
                      "<!-- results:quickstart:cpu -->\ntyped 64.6%\n<!-- /results:quickstart:cpu -->\n"
                      "<!-- results:parity:cuda -->\nkept\n<!-- /results:parity:cuda -->\n")
    done = report.rewrite_readme(readme, results)
    text = readme.read_text()
    assert done == ["results:quickstart:cpu"], done  # no GPU reports there: that block is left as it was
    assert "| 1 | 49.5% | 2.162514 | 56.5% | 2.157031 |" in text and "typed 64.6%" not in text
    assert "Test CPU (2 cores)" in text and "\nkept\n" in text
    # The committed GPU reports: both modes, and a failed report would say FAIL with its failures.
    runs = {m: json.loads((REPO / "benchmarks" / "results" / "h100" / f"parity_gpu_{m}.json").read_text())
            for m in ("strict", "default")}
    table = report.parity_gpu_section(runs, {"strict": "s.json", "default": "d.json"})
    assert table.count("| PASS |") == 2
    runs["default"] = {**runs["default"], "ok": False, "failures": ["epoch 5: parameter x gap"]}
    assert "FAIL: epoch 5: parameter x gap" in report.parity_gpu_section(runs, {"strict": "s", "default": "d"})


def test_quick_run_writes_json_and_charts(data_dir, tmp_path):
    proc = run_module("benchmarks.run", "--device", "cpu", "--quick", "--data-dir", data_dir, "--out-dir", str(tmp_path),
                      "--rounds", "2", "--threads", "1", "--no-sweep",
                      "--variants", "torch-tutorial,torch-eager,jax-notebook,jax-jit,jax-scan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "bench_cpu_quick.json").read_text())
    meta = out["meta"]
    assert {"torch", "jax", "flax", "optax"} <= set(meta["versions"]) and meta["samples"] == 3032
    dev = out["devices"]["cpu"]
    assert dev["limit"]["fp32"]["gflops"]["median"] > 0
    keys = [r["key"] for r in dev["variants"]]
    assert keys == ["torch-tutorial", "torch-eager", "jax-notebook", "jax-jit", "jax-scan"]
    # every round ran every variant and both limit probes once
    assert [sorted(r) for r in dev["order"]] == [sorted(keys + ["limit-torch", "limit-jax"])] * 2
    losses = []
    for r in dev["variants"]:
        assert len(r["epoch_s"]) == 2 and r["steps_per_epoch"] == 48
        assert len(r["of_limit"]["per_round"]) == 2 and r["five_epochs_end_to_end_s"] > r["epoch"]["median"]
        losses.append(r["last_loss"])
    # Same math: every variant trained the same weights on the same batches for the same epochs.
    assert max(losses) - min(losses) < 1e-4, losses
    for chart in out["charts"]:
        assert (tmp_path / chart).stat().st_size > 10_000
    assert "jax-scan over jax-jit" in proc.stdout


def test_blocks_rewritten_across_pages_with_links_from_each(tmp_path):
    """``make results`` targets several pages: each gets the blocks it holds, its links relative to
    itself, the README its headline ratios; the required blocks must be in one of the pages."""
    results = REPO / "benchmarks" / "results"
    (tmp_path / "docs").mkdir()
    readme, page = tmp_path / "README.md", tmp_path / "docs" / "results.md"
    readme.write_text("<!-- results:headline -->\ntyped 9.99×\n<!-- /results:headline -->\n")
    page.write_text("<!-- bench:cpu -->\n<!-- /bench:cpu -->\n<!-- bench:cuda -->\n<!-- /bench:cuda -->\n")
    done = report.rewrite_pages([readme, page], results)
    assert done == {readme: ["results:headline"], page: ["cpu", "cuda"]}
    head, text = readme.read_text(), page.read_text()
    cpu = json.loads((results / "bench_cpu.json").read_text())
    dev = cpu["devices"]["cpu"]
    best = sorted((min((r for r in dev["variants"] if r["framework"] == fw and not r["tutorial"]),
                       key=lambda r: r["epoch"]["median"]) for fw in ("torch", "jax")), key=lambda r: r["epoch"]["median"])
    pair = next(p for p in dev["pairs"] if (p["faster"], p["baseline"]) == (best[0]["key"], best[1]["key"]))
    assert "typed 9.99×" not in head
    assert f"the fastest of each framework, {pair['faster']} {report.fmt_ratio(pair)} over {pair['baseline']}" in head
    assert cpu["meta"]["cpu_model"] in head
    for text_, base in ((head, tmp_path), (text, tmp_path / "docs")):  # every link resolves from its own page
        targets = re.findall(r"\]\(([^)]+)\)", text_)
        assert targets and all(not t.startswith("/") and (base / t).exists() for t in targets), targets
    with pytest.raises(ValueError, match="bench:cpu"):
        report.rewrite_pages([readme], results)


def test_samples_past_the_data_refused_not_clamped(tmp_path, capsys):
    """``--samples 5000`` on 1,024 images used to time 1,024 and record them as the run's samples."""
    write_tiny_dataset(tmp_path, n_train=1024, n_test=16)
    code = bench_run.main(["--samples", "5000", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out"),
                           "--rounds", "1", "--no-sweep"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--samples 5000: the training set in" in err and "only 1024" in err, err
    assert not (tmp_path / "out").exists()
    assert load_workload(str(tmp_path), 1024).n == 1024  # all of it is still allowed


@pytest.fixture(scope="module")
def same_math_losses(data_dir):
    """Every variant that runs on this CPU, registered now or later, two epochs over 20 full batches and a partial
    one of 32, from the same weights at one torch thread: each epoch's last loss."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w = load_workload(data_dir, 20 * 64 + 32, 64)
        losses = {}
        for name in variants.names("cpu"):
            epoch = variants.VARIANTS[name].build(w, "cpu")
            losses[name] = [epoch(), epoch()]
        dropped = variants.VARIANTS["torch-eager"].build(w.subset(20 * 64), "cpu")  # the control: no partial batch
        return losses, [dropped(), dropped()]
    finally:
        torch.set_num_threads(threads)


def test_every_cpu_variant_trains_the_same_numbers(same_math_losses):
    """The same-math test covers the registry, not a list: a new variant that computes something else fails here.
    Float32 round-off between eager, compiled and XLA kernels is far below 1e-5 on these losses (they agree
    bit for bit at one thread here); the control that skips the one partial batch moves them by ~1e-3."""
    losses, dropped = same_math_losses
    ref = losses["torch-eager"]
    assert set(losses) >= {"torch-tutorial", "torch-compile", "torch-func", "torch-func-k", "jax-scan"}
    bad = {n: v for n, v in losses.items() if not all(abs(a - b) <= 1e-5 for a, b in zip(v, ref, strict=True))}
    assert bad == {}, f"variants off torch-eager's {ref}: {bad}"
    assert not all(abs(a - b) <= 1e-5 for a, b in zip(dropped, ref, strict=True)), (dropped, ref)


def test_variants_say_framework_and_baseline_as_data():
    for v in variants.VARIANTS.values():
        assert v.framework in variants.FRAMEWORKS
        assert v.baseline is None or v.baseline in variants.VARIANTS, v
    assert [v.name for v in variants.VARIANTS.values() if v.tutorial] == ["torch-tutorial"]
    with pytest.raises(ValueError, match="baseline 'nope'"):
        variants.variant("torch-x", "x", "torch", baseline="nope")
    with pytest.raises(ValueError, match="framework 'tf'"):
        variants.variant("tf-x", "x", "tf")
    with pytest.raises(ValueError, match="registered twice"):
        variants.variant("torch-eager", "x", "torch")


def test_profile_ladder_and_split_written(data_dir, tmp_path, capsys):
    from benchmarks import profile_torch  # noqa: PLC0415 -- torch.profiler only here

    out = tmp_path / "p.json"
    assert profile_torch.main(["--steps", "12", "--rounds", "2", "--env-rounds", "0", "--data-dir", data_dir,
                               "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["rung"] for r in data["ladder"]] == ["matmuls only (limit probe)", "forward", "forward+loss",
                                                   "forward+loss+backward", "step", "manual"]
    assert all(r["ms_per_step"]["n"] == 2 and r["ms_per_step"]["median"] > 0 for r in data["ladder"])
    p = data["profile"]
    assert set(p["phases_ms_per_step"]) == set(profile_torch.PHASES) and p["groups_self_ms_per_step"]["matmul"] > 0
    page = capsys.readouterr().out
    assert "| step |" in page and "| matmul |" in page


def test_profile_manual_step_is_autograds_step(data_dir):
    """The ladder's hand-written rung prices autograd and the optimizer object only if it computes their step."""
    from benchmarks import profile_torch  # noqa: PLC0415
    from benchmarks.variants import _torch_setup  # noqa: PLC0415

    w = load_workload(data_dir, 5 * 64, 64)
    _, model, loss_fn, opt = _torch_setup(w, "cpu")
    _, manual_model, _, _ = _torch_setup(w, "cpu")
    step = profile_torch._manual_step([p.detach() for p in manual_model.parameters()], w.lr)
    for x, y in profile_torch._batches(w, 5):
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        step(x, y)
    for (name, a), b in zip(model.state_dict().items(), manual_model.state_dict().values(), strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-6, err_msg=name)
        assert not torch.equal(a, torch.from_numpy(w.state_dict[name])), name  # it trained
