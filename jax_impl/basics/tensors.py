"""Tutorial chapter "Tensors" in JAX, mirroring ``reference_torch/basics/tensors.py``.

JAX arrays are immutable: "in place" becomes ``x + 5`` or ``x.at[idx].set(v)`` returning a new array, and
random numbers come from explicit keys, not a global generator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "attributes",
    "concatenate",
    "from_data",
    "from_numpy",
    "from_shape",
    "in_place_add",
    "indexing",
    "like",
    "matmul_three_ways",
    "multiply_three_ways",
    "numpy_bridge",
    "single_element",
    "to_device",
]

DATA = [[1, 2], [3, 4]]


def from_data():
    """``jnp.array(data)``: int32 (JAX's default integer width without x64)."""
    return jnp.array(DATA)


def from_numpy():
    """``jnp.asarray(np_array)`` (int64 narrowed to int32). Its ``copy=None`` default copies "only
    when necessary": JAX does not promise a copy (see ``numpy_bridge``)."""
    return jnp.asarray(np.array(DATA))


def like(x, seed: int = 0) -> dict:
    """``ones_like``; ``jax.random.uniform`` with the shape of ``x`` and an explicit key."""
    return {"ones": jnp.ones_like(x), "rand": jax.random.uniform(jax.random.key(seed), x.shape, jnp.float32)}


def from_shape(shape=(2, 3), seed: int = 0) -> dict:
    return {"rand": jax.random.uniform(jax.random.key(seed), shape), "ones": jnp.ones(shape), "zeros": jnp.zeros(shape)}


def attributes(x) -> dict:
    return {"shape": tuple(x.shape), "dtype": str(x.dtype), "device": x.device.platform}


def indexing(x) -> dict:
    """The same reads; the write is ``x.at[:, 1].set(0)``, a new array (``x`` is unchanged)."""
    out = {"first_row": x[0], "first_column": x[:, 0], "last_column": x[..., -1]}
    out["after_set"] = x.at[:, 1].set(0)
    return out


def concatenate(x):
    return jnp.concatenate([x, x, x], axis=1)


def matmul_three_ways(x) -> list:
    """``x @ x.T``, ``jnp.matmul``, ``jnp.dot`` (no ``out=``: results are always new arrays)."""
    return [x @ x.T, jnp.matmul(x, x.T), jnp.dot(x, x.T)]


def multiply_three_ways(x) -> list:
    return [x * x, jnp.multiply(x, x), jax.lax.mul(x, x)]


def single_element(x) -> float:
    return x.sum().item()


def in_place_add(x) -> dict:
    """``x + 5`` returns a new array; the input is untouched (``x.at[idx].add(5)`` is the indexed form)."""
    y = x + 5
    return {"result": y, "input_after": x, "same_object": y is x}


def numpy_bridge() -> dict:
    """No shared mutation, by construction: ``np.array(t)`` is a writable host copy (``np.asarray(t)``
    would be a read-only view), and the numpy array is mutated only after JAX's own copy exists.

    ``jnp.asarray(n)`` promises no copy (``copy=None``: "only when necessary"; ``jax.device_put`` on
    CPU may alias an aligned numpy buffer), and even a forced copy (``jnp.array(n, copy=True)``) is
    made asynchronously: mutating ``n`` before the JAX array is ready is a race. So: ask for the copy
    and wait for it (``block_until_ready``) before touching ``n`` again.
    """
    t = jnp.ones(5)
    n = np.array(t)  # a writable host copy; np.asarray(t) would be read-only
    t = t + 1  # a new array; n is not affected
    n2 = np.ones(5, np.float32)
    t2 = jnp.array(n2, copy=True).block_until_ready()  # a copy, and finished
    np.add(n2, 1, out=n2)  # t2 is not affected
    return {"numpy_after_tensor_add": n.copy(), "tensor_after_numpy_add": np.asarray(t2).copy()}


def to_device(x) -> dict:
    """``jax.device_put(x, device)`` (``jax.devices()[0]``: the accelerator if there is one): the array
    on that device and *committed* to it, so computations on it run there and mixing arrays committed
    to different devices raises. An array JAX made itself (``jnp.asarray``) is uncommitted: placed on
    the default device, it moves to where its operands are committed."""
    y = jax.device_put(x, jax.devices()[0])
    return {"device": y.device.platform, "committed": (jnp.asarray(x).committed, y.committed)}
