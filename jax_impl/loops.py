"""The compiled loops behind ``train.py`` and ``cnn_train.py``: what torch writes as a Python ``for``.

torch's tutorial iterates a DataLoader in Python and prints from inside the loop. A JAX epoch is
instead one jitted ``lax.scan`` over batches sliced in place from the device-resident set, and its
"loss:" lines come out of a host callback. This module holds that machinery once, for any pure
``step(state, batch) -> (state, {"loss": ...})``, so each side's ``train.py`` keeps only the lines
that are the lesson (docs/design.md, "The mirror"). It has no torch twin on purpose.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from quickstart_parity_common.report import LOG_EVERY, loss_line, loss_lines

__all__ = ["Batch", "Step", "batch", "eval_batches", "scan_epoch", "step_epoch", "variables"]

Batch = tuple[jax.Array, jax.Array]  # (x float32 (B, 784) or (B, 1, 28, 28), y int32 (B,))
Step = Callable[[Any, Batch], tuple[Any, dict]]  # pure: (state, batch) -> (state, {"loss": scalar})


def batch(x: jax.Array, y: jax.Array, i, batch_size: int) -> Batch:
    """Batch ``i`` read in place from the device-resident set: no reshaped copy of the epoch."""
    return (jax.lax.dynamic_slice_in_dim(x, i * batch_size, batch_size),
            jax.lax.dynamic_slice_in_dim(y, i * batch_size, batch_size))


# Where the compiled epoch's "loss:" lines go. A module-level sink because the host callback is
# traced once into the compiled epoch; making ``log`` a static argument would compile once per
# function passed. ``scan_epoch`` sets it for the duration of one call.
_log_sink = [print]


def _log_loss(loss, i, size: int, batch_size: int) -> None:
    """Host side of the epoch's callback: the tutorial's line for batch ``i`` (its real length)."""
    length = min(batch_size, size - int(i) * batch_size)
    _log_sink[0](loss_line(float(loss), (int(i) + 1) * length, size))


def _maybe_log(loss, i, size: int, batch_size: int) -> None:
    """Every LOG_EVERY batches, print from inside the compiled epoch, as the tutorial's loop does."""
    jax.lax.cond(i % LOG_EVERY == 0,
                 lambda: jax.debug.callback(partial(_log_loss, size=size, batch_size=batch_size), loss, i, ordered=True),
                 lambda: None)


# ``step`` is static (a function is hashable): one compiled epoch per step function and batch size.
@partial(jax.jit, static_argnums=(0, 4, 5), donate_argnums=(1,))  # step, batch_size, verbose
def _scan_epoch(step: Step, state, x: jax.Array, y: jax.Array, batch_size: int, verbose: bool = False):
    n = x.shape[0]
    full = n // batch_size

    def body(s, i):
        s, metrics = step(s, batch(x, y, i, batch_size))
        if verbose:
            _maybe_log(metrics["loss"], i, n, batch_size)
        return s, metrics["loss"]

    losses = jnp.zeros((0,), jnp.float32)
    if full:  # a set smaller than one batch has only the partial batch (the scan body could not slice)
        state, losses = jax.lax.scan(body, state, jnp.arange(full))  # losses: (full,)
    if n > full * batch_size:  # the DataLoader's last partial batch, as its own (smaller) step
        state, tail = step(state, (x[full * batch_size:], y[full * batch_size:]))
        if verbose:
            _maybe_log(tail["loss"], full, n, batch_size)
        losses = jnp.concatenate([losses, tail["loss"][None]])
    return state, losses


def scan_epoch(step: Step, state, data: Batch, batch_size: int = 64, log=print) -> tuple[Any, np.ndarray]:
    """One pass over ``data`` in file order as one compiled ``lax.scan`` of the pure ``step``.

    ``state`` is donated. Returns the new state and every step's loss (host float32, one read
    after the epoch, which also waits for the device). Unless ``log`` is None, the tutorial's
    "loss:" lines go to ``log`` while the epoch runs, from a host callback every LOG_EVERY batches.
    """
    x, y = data
    _log_sink[0] = log if log is not None else print
    try:
        state, losses = _scan_epoch(step, state, x, y, batch_size, log is not None)
        losses = np.asarray(losses)
    finally:
        _log_sink[0] = print
    return state, losses


def step_epoch(step: Step, state, data: Batch, batch_size: int = 64, log=print) -> tuple[Any, np.ndarray]:
    """One pass in file order, the jitted ``step`` dispatched once per batch, as Flax's ``examples/mnist``
    loops. Returns every step's loss (host float32, read once at the end, which also waits for the
    device); the "loss:" lines go to ``log`` after the epoch (no host sync inside it)."""
    x, y = data
    n = x.shape[0]
    losses = []
    for i in range(0, n, batch_size):
        state, metrics = step(state, (x[i:i + batch_size], y[i:i + batch_size]))
        losses.append(metrics["loss"])
    losses = np.asarray(jnp.stack(losses)) if losses else np.zeros((0,), np.float32)
    if log is not None:
        for line in loss_lines(losses, batch_size, n):
            log(line)
    return state, losses


def variables(state) -> dict:
    """What ``state.apply_fn`` takes in eval mode: the params, and the CNN's ``batch_stats`` if it has them."""
    return {"params": state.params, **({"batch_stats": state.batch_stats} if hasattr(state, "batch_stats") else {})}


@partial(jax.jit, static_argnums=(0, 4))  # loss_fn, batch_size
def _eval_batches(loss_fn, state, x: jax.Array, y: jax.Array, batch_size: int):
    def batch_metrics(xb, yb):
        pred = state.apply_fn(variables(state), xb)
        return loss_fn(pred, yb), jnp.sum(jnp.argmax(pred, axis=1) == yb)

    n = x.shape[0]
    full = n // batch_size
    losses, correct = jnp.zeros((0,), jnp.float32), jnp.zeros((), jnp.int32)
    if full:  # as in _scan_epoch: fewer than one batch leaves only the partial one
        losses, correct = jax.lax.map(lambda i: batch_metrics(*batch(x, y, i, batch_size)), jnp.arange(full))
        correct = jnp.sum(correct)
    if n > full * batch_size:
        tail_loss, tail_correct = batch_metrics(x[full * batch_size:], y[full * batch_size:])
        losses = jnp.concatenate([losses, tail_loss[None]])
        correct = correct + tail_correct
    return losses, correct


def eval_batches(loss_fn: Callable[[jax.Array, jax.Array], jax.Array], state, data: Batch,
                 batch_size: int = 64) -> tuple[np.ndarray, int]:
    """Every test batch's mean ``loss_fn`` (host float32, in order) and the number of correct predictions,
    in one compiled pass (eval mode: no dropout, BatchNorm's running statistics)."""
    x, y = data
    losses, correct = _eval_batches(loss_fn, state, x, y, batch_size)
    return np.asarray(losses), int(correct)
