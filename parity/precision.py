"""The two GPU precision modes (docs/design.md), set for both frameworks at once and described in words.

- ``strict``: torch ``set_float32_matmul_precision("highest")`` and JAX
  ``jax_default_matmul_precision="highest"``: true float32 matmuls on both sides.
- ``default``: each library's own default: torch computes float32 matmuls in float32, JAX on an
  H100 uses TF32 (10-bit mantissa) for them.
On CPU both modes compute in float32.
"""
from __future__ import annotations

import contextlib

import jax
import torch

MODES = ("strict", "default")


@contextlib.contextmanager
def precision(mode: str):
    """Set both libraries to ``mode`` for the block, restoring the previous settings after."""
    if mode not in MODES:
        raise ValueError(f"precision mode {mode!r}: use one of {MODES}")
    old_torch = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # torch's default too: never TF32 for float32
    try:
        if mode == "strict":
            with jax.default_matmul_precision("highest"):
                yield
        else:
            yield
    finally:
        torch.set_float32_matmul_precision(old_torch)


def describe(mode: str, platform: str) -> str:
    """One line naming what each library does for float32 matmuls in ``mode`` on ``platform``."""
    jax_part = ("jax_default_matmul_precision=highest" if mode == "strict"
                else f"jax default precision ({'TF32 on tensor cores' if platform == 'gpu' else 'float32'})")
    return (f"precision mode {mode}: torch float32_matmul_precision=highest (torch {torch.__version__}), "
            f"{jax_part} (jax {jax.__version__}), platform {platform}")
