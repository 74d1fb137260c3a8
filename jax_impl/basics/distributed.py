"""Data parallelism in JAX, the step at its smallest; mirrors ``reference_torch/basics/distributed.py``.
``jax_impl/distributed.py`` runs them over N devices; ``weighted_loss`` is the program's own
(``jax_impl/sharding.py``): the chapter shows it, it does not hold it.

One process drives every device. The parameters are one array replicated on all devices
(``P()``), each global batch one array split over the mesh axis (``P("data")``). ``train_step`` is
the one-device step: under ``jit`` XLA partitions the batch mean (a local sum per device, then an
all-reduce) and so the gradients. ``train_step_shard_map`` writes the per-device loss out, as JAX's
shard_map tutorial does: each device's weighted shard mean, ``pmean`` over the devices, and
``value_and_grad`` outside ``shard_map``; JAX's autodiff then inserts the gradients' all-reduce.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_impl.sharding import weighted_loss
from quickstart_parity_common.shards import epoch_shards

__all__ = ["as_numpy", "replicate", "setup", "train_epoch", "train_step", "train_step_shard_map", "weighted_loss"]

AXIS = "data"


def setup(devices: int) -> Mesh:
    """A 1-D mesh over the first ``devices`` devices, set as the current mesh.

    On a CPU, ``jax_num_cpu_devices`` splits the host into ``devices`` devices (what
    ``XLA_FLAGS=--xla_force_host_platform_device_count`` did); it must be set before JAX's first
    computation, so call ``setup`` right after ``import jax``. ``jax.make_mesh`` gives the axis
    ``AxisType.Explicit`` (jax 0.10's default): the sharding is part of each array's type.
    """
    jax.config.update("jax_num_cpu_devices", devices)
    mesh = jax.make_mesh((devices,), (AXIS,), devices=jax.devices()[:devices])
    jax.set_mesh(mesh)  # raw PartitionSpecs now name this mesh: jax.device_put(x, P("data"))
    return mesh


def replicate(params, mesh: Mesh):
    """The parameters on every device: one array, ``P()``; nothing to broadcast, one value by construction."""
    return jax.device_put(params, NamedSharding(mesh, P()))


@jax.jit
def train_step(state, batch):
    """The one-device step; with ``batch`` sharded over ``"data"`` XLA inserts the all-reduce."""
    x, y, w = batch
    loss, grads = jax.value_and_grad(weighted_loss)(state.params, state.apply_fn, x, y, w)
    return state.apply_gradients(grads=grads), {"loss": loss}


def train_step_shard_map(mesh: Mesh):
    """The explicit form, as JAX's shard_map tutorial writes data parallelism: ``shard_map`` of the
    loss only (each device's weighted shard mean, then ``pmean``), differentiated outside it, with
    ``check_vma`` on. The parameters enter replicated (``P()``) and meet device-varying data inside,
    so the gradient of the mean comes back already summed over the devices: no ``pmean`` of the
    gradients, and none would be right."""

    def global_loss(params, apply_fn, batch):
        x, y, w = batch
        n_local = jnp.sum(w)
        weight = n_local * jax.lax.axis_size(AXIS) / jax.lax.psum(n_local, AXIS)  # n_r * N / b
        return jax.lax.pmean(weighted_loss(params, apply_fn, x, y, w) * weight, AXIS)  # the same on every device

    @jax.jit
    def step(state, batch):
        loss_fn = jax.shard_map(lambda p, b: global_loss(p, state.apply_fn, b), mesh=mesh, in_specs=(P(), P(AXIS)),
                                out_specs=P())
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        return state.apply_gradients(grads=grads), {"loss": loss}

    return step


def train_epoch(state, x: np.ndarray, y: np.ndarray, mesh: Mesh, batch_size: int = 64, step=train_step):
    """Every global batch laid out shard by shard (each padded to the largest with weight 0) and
    placed with ``P("data")``, so device r holds shard r; one ``step`` per batch."""
    world = mesh.shape[AXIS]
    sharding = NamedSharding(mesh, P(AXIS))
    losses = []
    for shards in epoch_shards(len(x), batch_size, world):
        m = max(len(s) for s in shards)
        idx = np.concatenate([np.pad(s, (0, m - len(s)), constant_values=-1) for s in shards])
        real = idx >= 0
        batch = (np.where(real[:, None], x[np.maximum(idx, 0)], 0), y[np.maximum(idx, 0)] * real, real.astype(x.dtype))
        state, metrics = step(state, jax.device_put(batch, sharding))
        losses.append(metrics["loss"])
    return state, np.asarray(jnp.stack(losses), np.float64)


def as_numpy(losses) -> np.ndarray:
    return np.asarray(losses, np.float64)
