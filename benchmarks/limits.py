"""What the device could do at best: a matmul probe on CPU, the data-sheet peaks on GPU."""
from __future__ import annotations

import time

import numpy as np
import torch

# Dense (no sparsity) data-sheet peaks, TFLOP/s: (FP32, TF32 tensor core).
GPU_PEAKS = {
    "H100 PCIe": (51.2, 378.0),
    "H100 NVL": (60.0, 418.0),
    "H100": (66.9, 494.7),  # SXM5
    "H200": (66.9, 494.7),
    "A100": (19.5, 156.0),
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def step_gemms(batch: int, hidden=(512, 512)) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step: forward, weight and input gradients."""
    dims = [784, *hidden, 10]
    fwd = [(batch, a, b) for a, b in zip(dims[:-1], dims[1:])]
    wgrad = [(b, batch, a) for a, b in zip(dims[:-1], dims[1:])]
    igrad = [(batch, b, a) for a, b in list(zip(dims[:-1], dims[1:]))[1:]]
    return fwd + wgrad + igrad


def _best_rate(fn, flops: float, seconds: float) -> float:
    """Best GFLOP/s of ``fn`` over three rounds of about ``seconds`` each."""
    fn()
    best = 0.0
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while True:
            fn()
            reps += 1
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        best = max(best, reps * flops / dt / 1e9)
    return best


def cpu_limit(batch: int, threads: int, quick: bool = False) -> dict:
    """Matrix-product throughput at the step's own shapes, the fastest of torch (MKL, ``threads``)
    and JAX (XLA), plus a large square GEMM for context."""
    import jax
    import jax.numpy as jnp

    torch.set_num_threads(threads)
    shapes = step_gemms(batch)
    flops = 2.0 * sum(m * k * n for m, k, n in shapes)
    rng = np.random.default_rng(0)
    mats = [(rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)) for m, k, n in shapes]
    t_mats = [(torch.from_numpy(a), torch.from_numpy(b), torch.empty(a.shape[0], b.shape[1])) for a, b in mats]

    def torch_step():
        for a, b, c in t_mats:
            torch.mm(a, b, out=c)

    j_mats = [(jnp.asarray(a), jnp.asarray(b)) for a, b in mats]
    dots = jax.jit(lambda ms: [jnp.dot(a, b, precision="highest") for a, b in ms])

    def jax_step():
        jax.block_until_ready(dots(j_mats))

    seconds = 0.1 if quick else 0.5
    torch_rate = _best_rate(torch_step, flops, seconds)
    jax_rate = _best_rate(jax_step, flops, seconds)
    big = torch.rand(1024, 1024)
    big_rate = _best_rate(lambda: torch.mm(big, big), 2.0 * 1024**3, seconds)
    return {"kind": "cpu", "method": f"the step's {len(shapes)} matmuls at batch {batch}, back to back, best of torch and JAX",
            "fp32_gflops": max(torch_rate, jax_rate), "torch_probe_gflops": torch_rate, "jax_probe_gflops": jax_rate,
            "large_gemm_gflops": big_rate, "torch_threads": threads}


def gpu_limit() -> dict:
    name = torch.cuda.get_device_name(0)
    for key, (fp32, tf32) in GPU_PEAKS.items():
        if key in name:
            return {"kind": "cuda", "device": name, "method": f"data-sheet dense peak of {key}",
                    "fp32_gflops": fp32 * 1e3, "tf32_gflops": tf32 * 1e3}
    return {"kind": "cuda", "device": name, "method": "unknown GPU: no data-sheet peak", "fp32_gflops": None, "tf32_gflops": None}
