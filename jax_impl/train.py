"""The tutorial's training and test loops, and the whole quickstart as one importable function.

The loops are pure compiled functions (``loops.py``): one ``lax.scan`` per epoch, no Python per step.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from quickstart_parity_common import checkpoint as common_checkpoint
from quickstart_parity_common.checkpoint import (
    DATA_FIELD,
    check_resume_epochs,
    claim_checkpoint_dir,
    latest_resume_path,
    resume_path,
    save_final,
)
from quickstart_parity_common.cli import DeviceError, Progress
from quickstart_parity_common.data import CLASSES, data_identity
from quickstart_parity_common.report import (
    check_finite,
    check_finite_params,
    check_finite_test,
    end_epoch,
    epoch_header,
    prediction_line,
    test_line,
)

from . import checkpoint, loops
from .data import device_dataset, load_fashion_mnist, to_float
from .model import build_model, init_params

__all__ = [
    "Batch",
    "Config",
    "DeviceError",
    "TrainState",
    "check_outputs",
    "create_train_state",
    "evaluate",
    "loss_fn",
    "make_optimizer",
    "predict",
    "resolve_device",
    "run",
    "train_epoch",
    "train_step",
]

TrainState = train_state.TrainState
Batch = loops.Batch  # (x float32 (B, 784), y int32 (B,))


@dataclass
class Config:
    """The quickstart's settings; ``reference_torch.train.Config`` has the same fields (and ``threads``, ``download``)."""

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
    model: str = "mlp"
    checkpoint_dir: str = ""
    resume: bool = False
    load: str = ""
    limit_train: int = 0
    verbose: bool = True


def resolve_device(name: str) -> jax.Device:
    """``auto`` picks a GPU if JAX has one, else the CPU; an absent device is DeviceError."""
    if name not in ("auto", "cpu", "cuda", "gpu"):
        raise DeviceError(f"--device {name}: unknown device (use auto, cpu or cuda)")
    platforms = os.environ.get("JAX_PLATFORMS", "")
    try:  # every backend JAX_PLATFORMS names starts here, or none does
        jax.devices()
    except (RuntimeError, AssertionError) as e:  # an unknown name; or (an assert) a known one not installed here
        first = " ".join(str(e).split())[:300] or "no backend it names starts on this machine (unset it to let JAX choose)"
        raise DeviceError(f"JAX_PLATFORMS={platforms!r}: {first}") from None
    if name != "cpu":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:
            if name != "auto":
                raise DeviceError(f"--device {name}: JAX {jax.__version__} sees no CUDA device on this machine "
                                  "(install jax[cuda12] on a machine with a GPU)") from None
    try:
        return jax.devices("cpu")[0]
    except (RuntimeError, AssertionError):  # JAX_PLATFORMS=cuda leaves the CPU backend unstarted: an assert
        raise DeviceError(f"--device cpu: JAX_PLATFORMS={platforms!r} does not include cpu "
                          "(unset it or add cpu)") from None


def make_optimizer(lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """``optax.sgd``, as ``torch.optim.SGD(lr, momentum, weight_decay)`` (dampening 0, no Nesterov).

    torch adds ``weight_decay * p`` to the gradient *before* the momentum buffer, and its buffer
    starts as the first gradient; ``add_decayed_weights`` first, then ``optax.sgd``'s trace
    (``t = g + momentum * t``, from zeros) computes the same. The other order is a classic porting
    bug, caught by ``parity/test_optimizer.py``.
    """
    sgd = optax.sgd(lr, momentum=momentum or None)
    return optax.chain(optax.add_decayed_weights(weight_decay), sgd) if weight_decay else sgd


def create_train_state(params, lr: float = 1e-3, hidden=(512, 512), device: jax.Device | None = None,
                       momentum: float = 0.0, weight_decay: float = 0.0, model: str = "mlp") -> TrainState:
    """A TrainState for ``build_model(model, hidden)`` with ``make_optimizer(lr, momentum, weight_decay)``
    (the tutorial's plain ``optax.sgd(lr)`` by default): what torch keeps in the model and the optimizer.

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
    state = TrainState.create(apply_fn=build_model(model, hidden).apply, params=params,
                              tx=make_optimizer(lr, momentum, weight_decay))
    return jax.device_put(state.replace(step=jnp.zeros((), jnp.int32)), device)


def loss_fn(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy over the batch, as ``nn.CrossEntropyLoss()``: ``loss_fn(logits, y)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    x, y = batch

    def compute_loss(params):
        return loss_fn(state.apply_fn({"params": params}, x), y)

    loss, grads = jax.value_and_grad(compute_loss)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}


train_step = jax.jit(_train_step)
train_step.__doc__ = """One SGD step: ``(state, (x, y)) -> (state, {"loss": mean CE before the update})``. Pure, jitted."""


def train_epoch(state: TrainState, data: Batch, batch_size: int = 64, log=print) -> tuple[TrainState, np.ndarray]:
    """One pass over ``data`` (the tutorial's ``train``), compiled as one scan; returns every step's loss.

    ``state`` is donated. Losses (host float32) are read once at the end (which also waits for
    the device); the tutorial's "loss:" lines go to ``log`` every 100 batches from a host callback
    inside the compiled epoch (``loops.scan_epoch``). ``log=None`` keeps it silent.
    """
    return loops.scan_epoch(_train_step, state, data, batch_size, log)


def evaluate(state: TrainState, data: Batch, batch_size: int = 64) -> tuple[float, float]:
    """The tutorial's ``test`` arithmetic: (correct / size, mean of the per-batch mean losses)."""
    size = data[0].shape[0]
    losses, correct = loops.eval_batches(loss_fn, state, data, batch_size)  # eval mode, one compiled pass
    num_batches = len(losses)
    test_loss = 0
    for loss in losses:
        test_loss += float(loss)
    test_loss /= num_batches
    correct /= size
    return correct, test_loss


def predict(state: TrainState, test_data: tuple[np.ndarray, np.ndarray], index: int = 0) -> tuple[str, str]:
    """The tutorial's final prediction: (predicted class name, actual class name) of ``test_data[index]``."""
    x, y = test_data[0][index : index + 1], test_data[1][index]
    x = to_float(x)
    pred = state.apply_fn(loops.variables(state), x)
    return CLASSES[int(pred[0].argmax(0))], CLASSES[int(y)]


def check_outputs(config: Config) -> None:
    """Before any work: the save target and the checkpoint folder must be writable, so a run's
    work is never lost at the end (CheckpointError otherwise); quickstart_parity_common.checkpoint.check_outputs."""
    common_checkpoint.check_outputs(config.save, config.load, config.checkpoint_dir, config.resume)


def run(config: Config, progress: Progress | None = None) -> dict:
    """The whole quickstart: train ``config.epochs`` epochs, save, load back, predict.

    With ``checkpoint_dir`` a resumable checkpoint is written after every epoch, and ``resume``
    continues from the latest one; ``load`` evaluates a saved model instead of training.
    Prints the tutorial's lines on stdout (epoch times on stderr) and returns what it measured;
    ``progress`` follows where it is (for the line Ctrl-C prints).
    """
    out = print if config.verbose else (lambda *a, **k: None)
    progress = progress if progress is not None else Progress()
    progress.epochs, progress.checkpoint_dir = config.epochs, config.checkpoint_dir
    device = resolve_device(config.device)
    check_outputs(config)
    out(f"Using {device.platform} device")
    training_data = load_fashion_mnist(config.data_dir, train=True, limit=config.limit_train)
    test_data = load_fashion_mnist(config.data_dir, train=False)
    train_arrays, test_arrays = device_dataset(*training_data, device), device_dataset(*test_data, device)

    rng = jax.random.PRNGKey(config.seed)  # nothing but the initialisation draws from it
    params = jax.device_put(init_params(rng, config.hidden, config.model), device)
    state = create_train_state(params, config.lr, config.hidden, device, config.momentum, config.weight_decay, config.model)
    run_config = asdict(config)
    if config.checkpoint_dir:  # the folder is this run's from here on: its flags and its data
        run_config[DATA_FIELD] = data_identity(load_fashion_mnist(config.data_dir, train=True), test_data) \
            if config.limit_train else data_identity(training_data, test_data)
        claim_checkpoint_dir(config.checkpoint_dir, run_config)

    history = {"accuracy": [], "avg_loss": [], "epoch_s": [], "losses": []}
    first_epoch, epochs = 0, config.epochs
    if config.load:
        state = state.replace(params=jax.device_put(checkpoint.load(config.load, state.params), device))
        out(f"Loaded JAX Model State from {config.load}")
        epochs = 0
    elif config.resume:
        path = latest_resume_path(config.checkpoint_dir, checkpoint.SUFFIX)
        state, rng, first_epoch = checkpoint.load_resume(path, state, rng, run_config)
        check_resume_epochs(first_epoch, epochs, path)
        progress.checkpoint, progress.step = str(path), int(state.step)
        out(f"Resumed from {path} after epoch {first_epoch}")
    for t in range(first_epoch, epochs):
        progress.epoch = t + 1
        out(epoch_header(t + 1))
        start = time.perf_counter()
        state, losses = train_epoch(state, train_arrays, config.batch_size, log=out)  # losses read = synced
        history["epoch_s"].append(time.perf_counter() - start)
        check_finite(losses, t + 1)
        check_finite_params(checkpoint.flatten(jax.device_get(state.params)), t + 1)
        accuracy, avg_loss = evaluate(state, test_arrays, config.batch_size)
        end_epoch(history, t + 1, accuracy, avg_loss, losses, out, config.verbose)  # a NaN test loss stops here
        if config.checkpoint_dir:
            path = resume_path(config.checkpoint_dir, t + 1, checkpoint.SUFFIX)
            checkpoint.save_resume(path, state, rng, t + 1, run_config)
            progress.checkpoint = str(path)
        progress.step = int(state.step)
    progress.trained = True
    if config.load:
        accuracy, avg_loss = evaluate(state, test_arrays, config.batch_size)
        check_finite_test(avg_loss)
        out(test_line(accuracy, avg_loss))
        history["accuracy"].append(accuracy)
        history["avg_loss"].append(avg_loss)
    else:
        out("Done!")

    if config.save and not config.load:
        save_final(lambda p: checkpoint.save(state.params, p), config.save, progress.checkpoint)
        out(f"Saved JAX Model State to {config.save}")
        params = init_params(jax.random.PRNGKey(0), config.hidden, config.model)
        state = state.replace(params=checkpoint.load(config.save, params))
        out(f"Loaded JAX Model State from {config.save}")
    predicted, actual = predict(state, test_data)
    out(prediction_line(predicted, actual))
    history["prediction"] = (predicted, actual)
    history["params"] = state.params
    return history
