"""Random numbers in JAX: explicit, immutable keys, mirroring ``reference_torch/basics/prng.py``.

A key is a value: the same key always gives the same numbers. New randomness comes from
``jax.random.split`` (new keys) or ``jax.random.fold_in`` (a key derived from data, e.g. a step).
"""
from __future__ import annotations

import jax
import numpy as np

__all__ = ["independent_streams", "replay_step", "reseed_repeats", "same_call_twice"]


def same_call_twice(seed: int = 0) -> dict:
    """``uniform(key)`` twice with one key: identical; a second draw needs a new key (``split``)."""
    key = jax.random.key(seed)
    a, b = jax.random.uniform(key, (3,)), jax.random.uniform(key, (3,))
    return {"first": np.asarray(a), "equal": bool((a == b).all())}


def reseed_repeats(seed: int = 0) -> bool:
    """A key built from the same seed is the same key."""
    return bool((jax.random.uniform(jax.random.key(seed), (3,)) == jax.random.uniform(jax.random.key(seed), (3,))).all())


def independent_streams(seed: int = 0, n: int = 3) -> dict:
    """``jax.random.split(key, n)``: ``n`` independent keys from one."""
    keys = jax.random.split(jax.random.key(seed), n)
    draws = [np.asarray(jax.random.uniform(k, (3,))) for k in keys]
    return {"all_distinct": len({d.tobytes() for d in draws}) == n, "first": draws[0]}


def replay_step(seed: int = 0, step: int = 5) -> dict:
    """``fold_in(key, step)``: the key of step ``step`` is a function of (seed, step) alone, so any
    step's noise can be drawn directly, in any order, on any device. ``fold_in`` hashes the step into
    the key, so (seed 0, step 1000) and (seed 1, step 0) draw different numbers."""
    def at(seed: int, step: int) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(jax.random.key(seed), step), (3,))

    in_order = [at(seed, s) for s in range(step + 1)][step]
    direct = at(seed, step)
    return {"direct_equals_in_order": bool((in_order == direct).all()), "in_order": np.asarray(in_order),
            "collides": bool((at(0, 1000) == at(1, 0)).all())}
