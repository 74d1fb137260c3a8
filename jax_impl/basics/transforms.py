"""Tutorial chapter "Transforms" in JAX, mirroring ``reference_torch/basics/transforms.py``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from quickstart_parity_common.data import to_float

__all__ = ["one_hot", "to_tensor"]


def to_tensor(image: np.ndarray):
    """uint8 (28, 28) -> float32 (1, 28, 28) in [0, 1]: ``x / 255`` in float32, as ToTensor computes it."""
    return jnp.asarray(to_float(image)[None])


def one_hot(label: int):
    """``jax.nn.one_hot``: a pure function instead of an in-place ``scatter_`` into zeros."""
    return jax.nn.one_hot(label, 10, dtype=jnp.float32)
