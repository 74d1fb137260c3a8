"""What the device can do at best for this step: the step's own matrix products, back to back.

The limit is *measured*, on CPU and GPU alike, in the precision of the variants it is compared
with: every matrix product of one training step at the run's batch size, repeated, with nothing
else between them (torch and JAX, the faster of the two counts). A variant's share of it is how
close the whole step (activations, loss, update, dispatch) comes to its bare matrix work. The
data-sheet peak of a GPU (dense FP32 or TF32 tensor-core) is kept beside it as context only: no
batch-64 step approaches it, and comparing an FP32 row with the TF32 peak is meaningless.
"""
from __future__ import annotations

import platform
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

# Dense (no sparsity) data-sheet peaks, TFLOP/s: (FP32, TF32 tensor core). Longest names first:
# the first key found in torch.cuda.get_device_name() wins.
GPU_PEAKS = {
    "H100 PCIe": (51.2, 378.0),
    "H100 NVL": (60.0, 418.0),
    "H100": (66.9, 494.7),  # SXM5
    "H200": (66.9, 494.7),
    "A100": (19.5, 156.0),
}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass

    return platform.processor() or platform.machine()


def datasheet_peak_gflops(gpu_name: str, precision: str) -> tuple[str | None, float | None]:
    """(data-sheet entry, dense peak GFLOP/s) of ``gpu_name`` in ``fp32`` or ``tf32``; (None, None) if unknown."""
    for key, (fp32, tf32) in GPU_PEAKS.items():
        if key in gpu_name:
            return key, 1e3 * (fp32 if precision == "fp32" else tf32)
    return None, None


def _matrices(gemms: list[tuple[int, int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)) for m, k, n in gemms]


def torch_probe(gemms: list[tuple[int, int, int]], reps: int, kind: str) -> Callable[[], None]:
    """``reps`` times the step's matrix products with ``torch.mm`` (into preallocated outputs).

    On CUDA the ``reps`` sets are captured in one CUDA graph and replayed, so the probe measures
    the kernels, not Python's launch rate. Uses the process's current threads and precision.
    """
    device = torch.device(kind)
    mats = [(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)) for a, b in _matrices(gemms)]
    outs = [torch.empty(a.shape[0], b.shape[1], device=device) for a, b in mats]

    def once():
        for (a, b), c in zip(mats, outs, strict=True):
            torch.mm(a, b, out=c)

    if kind != "cuda":
        def probe():
            for _ in range(reps):
                once()

        return probe
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # cuBLAS picks and caches its kernels before capture
        once()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            once()

    def probe():
        graph.replay()
        torch.cuda.synchronize(device)

    # The graph reads and writes these buffers by address: they must live as long as the probe
    # (without this they were freed on return and the first replay hit an illegal address).
    probe.buffers = (mats, outs)
    return probe


def jax_probe(gemms: list[tuple[int, int, int]], reps: int, device: jax.Device, precision: str) -> Callable[[], None]:
    """``reps`` calls of one jitted function holding the step's matrix products, then a block.

    ``precision`` fp32 asks XLA for ``HIGHEST`` (true float32); tf32 leaves the process default
    (set to ``tensorfloat32`` by the caller), as the variants see it.
    """
    mats = [(jax.device_put(a, device), jax.device_put(b, device)) for a, b in _matrices(gemms)]
    prec = "highest" if precision == "fp32" else None
    dots = jax.jit(lambda ms: [jnp.dot(a, b, precision=prec) for a, b in ms])

    def probe():
        out = None
        for _ in range(reps):
            out = dots(mats)
        jax.block_until_ready(out)

    return probe
