"""Parameters as a pytree (nested dicts of arrays), mirroring ``reference_torch/basics/pytrees.py``.

``jax.tree`` flattens a dict in *sorted key order*: that is why every Flax layer lists
``bias`` before ``kernel``, while torch's state_dict lists ``weight`` before ``bias``.
"""
from __future__ import annotations

import jax
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.tree_util import keystr

__all__ = ["flatten_to_vector", "global_norm", "parameter_order", "scale_all"]


def parameter_order(params) -> list[str]:
    """Leaf paths in ``jax.tree`` order: sorted keys, so ``bias`` < ``kernel`` in every layer."""
    flat, _ = jax.tree.flatten_with_path(params)
    return [keystr(path, simple=True, separator="/") for path, _ in flat]


def scale_all(params, factor: float) -> dict:
    """``jax.tree.map``: a function applied to every leaf, the tree's structure kept."""
    return jax.device_get(jax.tree.map(lambda p: p * factor, params))


def flatten_to_vector(params) -> np.ndarray:
    """``ravel_pytree``: every leaf flattened, in tree order, into one vector (it also returns the
    function that rebuilds the tree)."""
    flat, _unravel = ravel_pytree(params)
    return np.asarray(flat)


def global_norm(params) -> float:
    """``optax.tree.norm``: the L2 norm over all leaves (what ``clip_by_global_norm`` uses;
    ``optax.global_norm`` is its deprecated name)."""
    return float(optax.tree.norm(params))
