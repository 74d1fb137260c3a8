"""Smoke test of ``python -m benchmarks.run --quick``: it runs, and its JSON has every field (not speed)."""
import json

import pytest

from benchmarks.variants import flops_per_sample
from tests.helpers import run_module


def test_flops_per_sample_is_the_quickstarts():
    # MACs 784*512 + 512*512 + 512*10 = 668,672: forward 2x, weight gradients 2x, and input
    # gradients of layers 2-3 (no gradient w.r.t. the images) 2 * 267,264: 3.21 MFLOP.
    assert flops_per_sample() == 2 * 668_672 * 2 + 2 * 267_264 == 3_209_216


def test_quick_run_writes_json_and_charts(data_dir, tmp_path):
    proc = run_module("benchmarks.run", "--device", "cpu", "--quick", "--data-dir", data_dir, "--out-dir", str(tmp_path),
                      "--variants", "torch-tutorial,torch-eager,jax-notebook,jax-jit,jax-scan")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "bench_cpu_quick.json").read_text())
    meta = out["meta"]
    for key in ("cpu_model", "versions", "torch_threads", "batch_size", "steady_epochs"):
        assert key in meta, key
    assert {"torch", "jax", "flax", "optax"} <= set(meta["versions"])
    assert out["limits"]["cpu"]["fp32_gflops"] > 0
    names = [r["variant"] for r in out["variants"]]
    assert names == ["torch-tutorial", "torch-eager", "jax-notebook", "jax-jit", "jax-scan"]
    losses = []
    for r in out["variants"]:
        for key in ("warmup_s", "median_epoch_s", "epoch_s", "samples_per_s", "gflops", "fraction_of_limit", "precision"):
            assert key in r, (r["variant"], key)
        assert r["precision"]["mode"] == "fp32" and r["median_epoch_s"] > 0 and r["steps_per_epoch"] == 48
        losses.append(r["last_loss"])
    # Same math: every variant trained the same weights on the same batches.
    assert max(losses) - min(losses) < 1e-4, losses
    assert {r["framework"] for r in out["sweeps"]["cpu"]} == {"torch", "jax"}
    for chart in out["charts"]:
        assert (tmp_path / chart).stat().st_size > 10_000
    assert "| cpu | jax-scan |" in proc.stdout


def test_cuda_absent_is_one_line_exit_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_module("benchmarks.run", "--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "CUDA is not available" in proc.stderr
