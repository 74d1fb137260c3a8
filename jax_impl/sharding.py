"""The data-parallel building blocks of ``distributed.py`` that DDP keeps inside the library.

DDP wraps the model and all-reduces gradients during ``backward``; in JAX the program says it:
a 1-D device mesh, the replicated state (``P()``), the global batch sharded over the mesh axis
(``P("data")``), and one of two forms of the step (see ``distributed.py``). The epoch's global
batches are laid out (padded with weight-0 samples where shards are uneven) so that one sharded
array per group of equal-size steps feeds one compiled ``lax.scan``. No torch twin, on purpose.
The functions take the settings they use, not ``distributed.Config``: ``distributed.py`` imports this
module, so this one does not import it back.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from quickstart_parity_common.shards import epoch_shards

from .train import TrainState

__all__ = [
    "AXIS",
    "FORMS",
    "epoch_groups",
    "make_mesh",
    "make_shard_map_step",
    "make_sharded_step",
    "make_step",
    "place_rows",
    "replica_mismatches",
    "replicate",
    "scan_steps",
    "shards_seen",
    "weighted_loss",
]

AXIS = "data"
FORMS = ("sharded", "shard_map")


def make_mesh(devices: int, device: str = "cpu") -> Mesh:
    """A 1-D mesh of the first ``devices`` devices, axis ``"data"``."""
    return Mesh(np.array(jax.devices("gpu" if device == "cuda" else "cpu")[:devices]), (AXIS,))


def weighted_loss(params, apply_fn, x: jax.Array, y: jax.Array, w: jax.Array) -> jax.Array:
    """Mean cross-entropy over the samples of weight 1 (padding has weight 0): ``nn.CrossEntropyLoss()``."""
    ce = optax.softmax_cross_entropy_with_integer_labels(apply_fn({"params": params}, x), y)
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1)  # mean over real samples (padding: w = 0)


def make_sharded_step(scale: float = 1.0):
    """The automatic form: ``train_step(state, (x, y, w)) -> (state, {"loss"})`` with the global batch
    sharded and the state replicated; XLA inserts the gradient all-reduce. ``scale`` = N is the
    negative control (the sum of N shard means instead of the global mean)."""

    def train_step(state: TrainState, batch):
        x, y, w = batch
        loss, grads = jax.value_and_grad(weighted_loss)(state.params, state.apply_fn, x, y, w)
        # scale = N: the gradients summed over replicas, as the control asks; the loss is untouched
        grads = jax.tree.map(lambda g: g * scale, grads)
        return state.apply_gradients(grads=grads), {"loss": loss}

    return train_step


def make_shard_map_step(mesh: Mesh, grad_reduce: str = "mean", check_vma: bool = False):
    """The explicit form: per device, its shard mean times ``n_r * N / b``, its gradients, then
    ``pmean`` over the axis (``psum`` is the negative control) as DDP's all-reduce / world size."""
    n = mesh.shape[AXIS]
    reduce = jax.lax.pmean if grad_reduce == "mean" else jax.lax.psum

    def local_step(state: TrainState, batch):
        x, y, w = batch  # this device's shard
        n_local = jnp.sum(w)
        weight = n_local * n / jax.lax.psum(n_local, AXIS)  # quickstart_parity_common.shards.loss_weight
        loss, grads = jax.value_and_grad(lambda p: weighted_loss(p, state.apply_fn, x, y, w) * weight)(state.params)
        grads = reduce(grads, AXIS)
        return state.apply_gradients(grads=grads), {"loss": jax.lax.pmean(loss, AXIS)}

    return jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=check_vma)


def make_step(form: str, mesh: Mesh, grad_reduce: str = "mean"):
    """The step ``form`` names (``FORMS``) over ``mesh``, with ``grad_reduce``'s reduction."""
    if form == "sharded":
        return make_sharded_step(float(mesh.shape[AXIS]) if grad_reduce == "sum" else 1.0)
    return make_shard_map_step(mesh, grad_reduce)


@partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def scan_steps(step, state: TrainState, xs, ys, ws):
    """``step`` over a group of global batches ``(S, N*m, ...)`` as one compiled scan (``state`` donated)."""
    return jax.lax.scan(step, state, (xs, ys, ws))


def epoch_groups(n_samples: int, batch_size: int, devices: int, split: str = "exact",
                 same_shard: bool = False) -> list[dict[str, np.ndarray]]:
    """The epoch's global batches laid out for the mesh: per step, shard r occupies rows
    ``[r*m, (r+1)*m)``, padded with index -1 (weight 0) to the largest shard ``m``. Consecutive steps
    of the same ``m`` form one group (the full batches, then the last partial one). ``split`` and
    ``same_shard`` are ``distributed.Config``'s (``same_shard``: the control feeding shard 0 everywhere)."""
    groups: list[dict] = []
    for shards in epoch_shards(n_samples, batch_size, devices, split):
        if same_shard:
            shards = [shards[0]] * devices
        m = max(len(s) for s in shards)
        idx = np.full((devices, m), -1, np.int64)
        for r, s in enumerate(shards):
            idx[r, : len(s)] = s
        if not groups or groups[-1]["m"] != m:
            groups.append({"m": m, "idx": []})
        groups[-1]["idx"].append(idx.reshape(-1))
    return [{"m": g["m"], "idx": np.stack(g["idx"])} for g in groups]


def replicate(params, mesh: Mesh, per_device: list | None = None):
    """``params`` on every device of ``mesh`` (``P()``). ``per_device`` (the seed control) builds the
    "replicated" array from a different tree on each device, as separately seeded hosts would."""
    sharding = NamedSharding(mesh, P())
    if per_device is None:
        return jax.device_put(params, sharding)
    devs = list(mesh.devices.flat)
    # Over several processes each one places only its own devices' copies, as separately seeded hosts do.
    here = jax.process_index()
    return jax.tree.map(lambda *leaves: jax.make_array_from_single_device_arrays(
        leaves[0].shape, sharding, [jax.device_put(leaf, d) for leaf, d in zip(leaves, devs, strict=True)
                                    if d.process_index == here]), *per_device)


def replica_mismatches(tree) -> list[str]:
    """Leaves whose copies differ between devices (empty: truly replicated)."""
    bad = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        copies = [np.asarray(s.data) for s in leaf.addressable_shards]
        if any(not np.array_equal(copies[0], c) for c in copies[1:]):
            bad.append(jax.tree_util.keystr(path))
    return bad


def shards_seen(idx: jax.Array, mesh: Mesh) -> list[list[np.ndarray] | None]:
    """``[device][step] -> indices`` read back from each device's shard of the placed index array
    (None for a device of another process: only its own process can read it)."""
    by_device = {s.device: np.asarray(s.data) for s in idx.addressable_shards}
    return [[row[row >= 0] for row in by_device[d]] if d in by_device else None for d in mesh.devices.flat]


def place_rows(rows, idx: np.ndarray, sharding: NamedSharding) -> list[jax.Array]:
    """The global arrays ``rows(idx)`` (a function of an index array ``(S, N*m)`` returning arrays of
    that leading shape), sharded along axis 1. In one process they are built whole and placed; over
    several processes (``jax.distributed``) each process builds only the columns its own devices
    hold and ``jax.make_array_from_process_local_data`` assembles the global arrays, so no process
    gathers another's shard of the batch."""
    if jax.process_count() == 1:
        return [jax.device_put(a, sharding) for a in rows(idx)]
    spans = [sl[1] for sl in sharding.addressable_devices_indices_map(idx.shape).values()]
    lo, hi = min(s.start for s in spans), max(s.stop for s in spans)
    if sum(s.stop - s.start for s in spans) != hi - lo:  # one contiguous block per process: the mesh's order
        raise ValueError(f"process {jax.process_index()}'s devices hold columns {spans}, not one contiguous block")
    return [jax.make_array_from_process_local_data(sharding, a, (idx.shape[0], idx.shape[1], *a.shape[2:]))
            for a in rows(idx[:, lo:hi])]
