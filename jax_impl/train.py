"""Training and evaluation as pure compiled functions: one ``lax.scan`` per epoch, no Python per step."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from common.cli import DeviceError
from common.data import CLASSES
from common.report import check_finite, epoch_header, loss_lines, prediction_line, test_line

from . import checkpoint
from .data import device_dataset, load_fashion_mnist, to_float
from .model import MLP, init_params

TrainState = train_state.TrainState
Batch = tuple[jax.Array, jax.Array]  # (x float32 (B, 784), y int32 (B,))


@dataclass
class Config:
    """The quickstart's settings; the same fields as ``reference_torch.train.Config`` (no ``threads``)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    save: str = "model.msgpack"
    hidden: tuple[int, ...] = (512, 512)
    verbose: bool = True


def resolve_device(name: str) -> jax.Device:
    """``auto`` picks a GPU if JAX has one, else the CPU; an absent device is DeviceError."""
    if name not in ("auto", "cpu", "cuda", "gpu"):
        raise DeviceError(f"--device {name}: unknown device (use auto, cpu or cuda)")
    if name != "cpu":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if name != "auto":
                raise DeviceError(f"--device {name}: JAX {jax.__version__} sees no CUDA device on this machine "
                                  "(install jax[cuda12] on a machine with a GPU)") from None
    return jax.devices("cpu")[0]


def make_optimizer(lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The optax twin of ``torch.optim.SGD(lr, momentum, weight_decay)`` (dampening 0, no Nesterov).

    torch adds ``weight_decay * p`` to the gradient *before* the momentum buffer, and its buffer
    starts as the first gradient; ``add_decayed_weights`` first, then ``optax.sgd``'s trace
    (``t = g + momentum * t``, from zeros) computes the same. The other order is a classic porting
    bug, caught by ``parity/test_optimizer.py``.
    """
    sgd = optax.sgd(lr, momentum=momentum or None)
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if weight_decay else sgd


def create_train_state(params, lr: float = 1e-3, hidden=(512, 512), device: jax.Device | None = None,
                       momentum: float = 0.0, weight_decay: float = 0.0) -> TrainState:
    """A TrainState for ``MLP(hidden)`` with ``make_optimizer(lr, momentum, weight_decay)``
    (the tutorial's plain ``optax.sgd(lr)`` by default).

    The state gets its own copy of ``params``, placed on ``device`` (default: where ``params``
    already are, else JAX's default device): ``train_epoch`` donates the state's buffers, and the
    caller's ``params`` must survive that.
    """
    if device is None:
        first = jax.tree_util.tree_leaves(params)[0]
        device = next(iter(first.devices())) if isinstance(first, jax.Array) and first.committed else jax.devices()[0]
    # Every leaf placed on the device now (committed) and ``step`` a strong int32: as they will be
    # after the first update. A weakly typed Python-int step or an uncommitted leaf would be a
    # different input signature, and the second epoch would compile again.
    params = jax.device_put(jax.tree_util.tree_map(lambda p: jnp.array(p, copy=True), params), device)
    state = TrainState.create(apply_fn=MLP(tuple(hidden)).apply, params=params,
                              tx=make_optimizer(lr, momentum, weight_decay))
    return state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), device))


def loss_fn(params, apply_fn, x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch, as ``nn.CrossEntropyLoss()``."""
    logits = apply_fn({"params": params}, x)  # (B, 10)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    x, y = batch
    loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn, x, y)
    return state.apply_gradients(grads=grads), {"loss": loss}


train_step = jax.jit(_train_step)
train_step.__doc__ = """One SGD step: ``(state, (x, y)) -> (state, {"loss": mean CE before the update})``. Pure, jitted."""


def _batch(x: jax.Array, y: jax.Array, i, batch_size: int) -> Batch:
    """Batch ``i`` read in place from the device-resident set: no reshaped copy of the epoch."""
    return (jax.lax.dynamic_slice_in_dim(x, i * batch_size, batch_size),
            jax.lax.dynamic_slice_in_dim(y, i * batch_size, batch_size))


@partial(jax.jit, static_argnames=("batch_size",), donate_argnums=(0,))
def _train_epoch(state: TrainState, x: jax.Array, y: jax.Array, batch_size: int):
    n = x.shape[0]
    full = n // batch_size
    losses = jnp.zeros((0,), jnp.float32)
    if full:  # a set smaller than one batch has only the partial batch (the scan body could not slice)
        state, metrics = jax.lax.scan(lambda s, i: _train_step(s, _batch(x, y, i, batch_size)), state, jnp.arange(full))
        losses = metrics["loss"]  # (full,)
    if n > full * batch_size:  # the DataLoader's last partial batch, as its own (smaller) step
        state, tail = _train_step(state, (x[full * batch_size:], y[full * batch_size:]))
        losses = jnp.concatenate([losses, tail["loss"][None]])
    return state, losses


def train_epoch(state: TrainState, data: Batch, batch_size: int = 64, log=print) -> tuple[TrainState, np.ndarray]:
    """One pass over ``data`` (device arrays) in file order, compiled as a single scan.

    ``state`` is donated. Returns the new state and every step's loss (host float32, one read
    after the epoch); prints the tutorial's "loss:" lines from them unless ``log`` is None.
    """
    x, y = data
    state, losses = _train_epoch(state, x, y, batch_size)
    losses = np.asarray(losses)
    if log is not None:
        for line in loss_lines(losses, batch_size, x.shape[0]):
            log(line)
    return state, losses


@partial(jax.jit, static_argnames=("batch_size",))
def _eval_batches(state: TrainState, x: jax.Array, y: jax.Array, batch_size: int):
    def batch_metrics(params, xb, yb):
        logits = state.apply_fn({"params": params}, xb)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, jnp.sum(jnp.argmax(logits, axis=1) == yb)

    n = x.shape[0]
    full = n // batch_size
    losses, correct = jnp.zeros((0,), jnp.float32), jnp.zeros((), jnp.int32)
    if full:  # as in _train_epoch: fewer than one batch leaves only the partial one
        losses, correct = jax.lax.map(lambda i: batch_metrics(state.params, *_batch(x, y, i, batch_size)), jnp.arange(full))
        correct = jnp.sum(correct)
    if n > full * batch_size:
        tail_loss, tail_correct = batch_metrics(state.params, x[full * batch_size:], y[full * batch_size:])
        losses = jnp.concatenate([losses, tail_loss[None]])
        correct = correct + tail_correct
    return losses, correct


def evaluate(state: TrainState, data: Batch, batch_size: int = 64) -> tuple[float, float]:
    """The tutorial's test arithmetic: (correct / size, mean of the per-batch mean losses).

    Batch losses are summed on the host in float64, one by one, as the tutorial's
    ``test_loss += loss.item()`` does.
    """
    x, y = data
    losses, correct = _eval_batches(state, x, y, batch_size)
    test_loss = 0.0
    for value in np.asarray(losses):
        test_loss += float(value)
    return int(correct) / x.shape[0], test_loss / len(losses)


def predict(params, hidden, images: np.ndarray, labels: np.ndarray, index: int = 0) -> tuple[str, str]:
    """(predicted class name, actual class name) of ``images[index]``."""
    logits = MLP(tuple(hidden)).apply({"params": params}, to_float(images[index : index + 1]))
    return CLASSES[int(jnp.argmax(logits[0]))], CLASSES[int(labels[index])]


def run(config: Config) -> dict:
    """The whole quickstart in JAX: train, save, load back, predict; the same printed lines as torch."""
    out = print if config.verbose else (lambda *a, **k: None)
    device = resolve_device(config.device)
    out(f"Using {device.platform} device")
    train_images, train_labels = load_fashion_mnist(config.data_dir, train=True)
    test_images, test_labels = load_fashion_mnist(config.data_dir, train=False)
    train_data = device_dataset(train_images, train_labels, device)
    test_data = device_dataset(test_images, test_labels, device)

    params = jax.device_put(init_params(jax.random.PRNGKey(config.seed), config.hidden), device)
    state = create_train_state(params, config.lr, config.hidden, momentum=config.momentum, weight_decay=config.weight_decay)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    for t in range(config.epochs):
        out(epoch_header(t + 1))
        start = time.perf_counter()
        state, losses = train_epoch(state, train_data, config.batch_size, log=out)  # losses read = synced
        history["epoch_s"].append(time.perf_counter() - start)
        check_finite(losses, t + 1)
        accuracy, avg_loss = evaluate(state, test_data, config.batch_size)
        out(test_line(accuracy, avg_loss))
        if config.verbose:
            print(f"[epoch {t + 1}: {history['epoch_s'][-1]:.2f} s training]", file=sys.stderr)
        history["accuracy"].append(accuracy)
        history["avg_loss"].append(avg_loss)
        history["losses"].append(losses)
    out("Done!")

    params = state.params
    if config.save:
        checkpoint.save(params, config.save)
        out(f"Saved JAX Model State to {config.save}")
        params = checkpoint.load(config.save, init_params(jax.random.PRNGKey(0), config.hidden))
        out(f"Loaded JAX Model State from {config.save}")
    predicted, actual = predict(params, config.hidden, test_images, test_labels)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["params"] = params
    return history
