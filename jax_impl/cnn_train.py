"""The quickstart with ``--model cnn``: ``train.run``'s loop around ``cnn.CNN``; mirrors ``reference_torch/cnn_train.py``.

The CNN carries state besides its params (BatchNorm's ``batch_stats``) and needs randomness in
training (Dropout), so its step threads both: ``batch_stats`` come back from ``apply(...,
mutable=["batch_stats"])``, and the dropout key of step ``n`` is ``fold_in(key, n)``. An epoch is
the jitted step per batch (``train_epoch``); ``scan_epoch`` is the one-scan form of
``train.train_epoch``, slower for convolutions on XLA:CPU. Evaluation and prediction are
``train.evaluate`` and ``train.predict``, which apply ``batch_stats`` where the state has them.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state
from flax.traverse_util import flatten_dict

from quickstart_parity_common.checkpoint import save_final
from quickstart_parity_common.cli import Progress
from quickstart_parity_common.report import (
    check_finite,
    check_finite_params,
    end_epoch,
    epoch_header,
    prediction_line,
)

from . import checkpoint, loops
from .cnn import CNN, init_variables
from .data import device_dataset, load_fashion_mnist
from .train import (
    Batch,
    Config,
    check_outputs,
    evaluate,
    loss_fn,
    make_optimizer,
    predict,
    resolve_device,
)

__all__ = [
    "CNNState",
    "create_train_state",
    "evaluate",
    "predict",
    "run",
    "scan_epoch",
    "train_epoch",
    "train_step",
]


class CNNState(train_state.TrainState):
    """TrainState plus BatchNorm's running statistics and the dropout key."""

    batch_stats: Any
    key: jax.Array


def create_train_state(variables, config: Config, device: jax.Device) -> CNNState:
    """A CNNState for ``CNN`` with ``make_optimizer(config.lr, config.momentum, config.weight_decay)``
    and its own copy of ``variables`` on ``device`` (the epoch donates the state's buffers)."""
    variables = jax.device_put(jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), variables), device)
    state = CNNState.create(apply_fn=CNN().apply, params=variables["params"], batch_stats=variables["batch_stats"],
                            key=jax.device_put(jax.random.PRNGKey(config.seed + 1), device),
                            tx=make_optimizer(config.lr, config.momentum, config.weight_decay))
    return state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), device))


def _train_step(state: CNNState, batch: Batch) -> tuple[CNNState, dict]:
    x, y = batch
    dropout_key = jax.random.fold_in(state.key, state.step)

    def compute_loss(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                         mutable=["batch_stats"], rngs={"dropout": dropout_key})
        return loss_fn(logits, y), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads).replace(batch_stats=batch_stats), {"loss": loss}


train_step = jax.jit(_train_step)
train_step.__doc__ = """One SGD step: ``(state, (x, y)) -> (state, {"loss": mean CE before the update})``, BatchNorm's
statistics updated and the step's dropout key ``fold_in(state.key, state.step)``. Pure, jitted."""


def train_epoch(state: CNNState, data: Batch, batch_size: int = 64, log=print) -> tuple[CNNState, np.ndarray]:
    """One pass in file order: the jitted ``train_step`` per batch of the device-resident set
    (``loops.step_epoch``; see ``scan_epoch`` for why not one scan). Returns every step's loss."""
    return loops.step_epoch(train_step, state, data, batch_size, log)


def scan_epoch(state: CNNState, data: Batch, batch_size: int = 64, log=print) -> tuple[CNNState, np.ndarray]:
    """``train_epoch`` as one compiled ``lax.scan`` (``state`` donated): the MLP's form, and the
    faster one on GPU. On XLA:CPU a convolution inside a loop body runs several times slower than
    the same step dispatched alone (jax-ml/jax#12868); ``benchmarks.run --model cnn`` times both."""
    return loops.scan_epoch(_train_step, state, data, batch_size, log)


def run(config: Config, progress: Progress | None = None) -> dict:
    """``train.run`` with ``CNN``: train, save its variables, load them back, predict; the same printed lines as torch."""
    out = print if config.verbose else (lambda *a, **k: None)
    progress = progress if progress is not None else Progress(epochs=config.epochs)
    device = resolve_device(config.device)
    check_outputs(config)
    out(f"Using {device.platform} device")
    training_data = load_fashion_mnist(config.data_dir, train=True)
    test_data = load_fashion_mnist(config.data_dir, train=False)
    train_arrays, test_arrays = device_dataset(*training_data, device), device_dataset(*test_data, device)

    state = create_train_state(init_variables(jax.random.PRNGKey(config.seed)), config, device)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    for t in range(config.epochs):
        progress.epoch = t + 1
        out(epoch_header(t + 1))
        start = time.perf_counter()
        state, losses = train_epoch(state, train_arrays, config.batch_size, log=out)  # losses read = synced
        history["epoch_s"].append(time.perf_counter() - start)
        check_finite(losses, t + 1)
        check_finite_params(flatten_dict({"params": state.params, "batch_stats": state.batch_stats}, sep="/"), t + 1)
        accuracy, avg_loss = evaluate(state, test_arrays, config.batch_size)
        end_epoch(history, t + 1, accuracy, avg_loss, losses, out, config.verbose)
    progress.trained = True
    out("Done!")

    if config.save:
        save_final(lambda p: checkpoint.save({"params": state.params, "batch_stats": state.batch_stats}, p),
                   config.save, None)
        out(f"Saved JAX Model State to {config.save}")
        variables = checkpoint.load(config.save, init_variables(jax.random.PRNGKey(0)))
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
        out(f"Loaded JAX Model State from {config.save}")
    predicted, actual = predict(state, test_data)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["variables"] = {"params": state.params, "batch_stats": state.batch_stats}
    return history
