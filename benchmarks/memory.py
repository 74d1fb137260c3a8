"""Peak memory per variant: host RSS (Linux's high-water mark, reset per variant) and, on CUDA, device memory.

All variants share one process, so host figures are the process's: ``rss_before`` (what the runtimes and the
variants built earlier already hold), ``peak_rss`` (the high-water mark from the variant's build to the end of its
first, warm-up epoch) and their difference, what the variant itself added at its peak. Linux resets the mark
when ``5`` is written to ``/proc/self/clear_refs``; where it cannot (another OS, a locked-down /proc) the
figures are absent, never guessed. On CUDA, torch's allocator peak is reset per variant; JAX's
``peak_bytes_in_use`` cannot be reset, so a JAX variant reports its increase over the bytes in use before it.
"""
from __future__ import annotations

from pathlib import Path

import jax
import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_host_peak() -> bool:
    """Reset the process's peak RSS; False where the OS does not allow it."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


def start(kind: str, framework: str) -> dict:
    """Reset what can be reset and note what is in use, before a variant is built."""
    state = {"host_reset": reset_host_peak(), "rss_before": _status_bytes("VmRSS")}
    if kind == "cuda" and framework == "torch":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        state["device_before"] = torch.cuda.memory_allocated()
    elif kind == "cuda":
        state["device_before"] = (jax.devices("gpu")[0].memory_stats() or {}).get("bytes_in_use")
    return state


def stop(kind: str, framework: str, state: dict) -> dict:
    """The figures since ``start``, in bytes: peak host RSS and its increase; on CUDA the device peak."""
    out = {}
    peak = _status_bytes("VmHWM") if state["host_reset"] else None
    if peak is not None and state["rss_before"] is not None:
        out.update(rss_before=state["rss_before"], peak_rss=peak, peak_rss_increase=peak - state["rss_before"])
    if kind == "cuda" and framework == "torch":
        torch.cuda.synchronize()
        out["device_peak"] = torch.cuda.max_memory_allocated()
        out["device_peak_increase"] = out["device_peak"] - state["device_before"]
    elif kind == "cuda":
        stats = jax.devices("gpu")[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats and state.get("device_before") is not None:
            out["device_peak"] = stats["peak_bytes_in_use"]  # the process's peak so far: not resettable
            out["device_in_use_increase"] = stats.get("bytes_in_use", 0) - state["device_before"]
    return out
