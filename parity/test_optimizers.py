"""``parity.optimizers``: torch.optim's SGD, Adam and AdamW reproduced by optax, proven in float64.

A small nonconvex problem (a tanh MLP, mean cross-entropy, fixed random data in four batches taken
in turn), each framework computing its own gradients: torch ``float64`` against JAX under
``jax.enable_x64`` (in this process, only inside the block, as ``parity.checker`` runs it). After
``STEPS`` steps every parameter agrees to ``F64_ATOL`` relative, for every configuration; each
negative control (one classic porting mistake in the optax chain) lands many orders of magnitude
further away; and torch's optimizer state equals optax's, found by name with ``optax.tree_utils``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import fields

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from parity.optimizers import SGD, TORCH_TO_OPTAX_STATE, Adam, AdamW
from parity.tolerances import F64_ATOL

STEPS = 120
N_IN, N_HIDDEN, N_CLASSES, BATCH, N_BATCHES = 8, 16, 4, 16, 4
NAMES = ("w1", "b1", "w2", "b2")  # torch's layout on both sides ([out, in] weights): no conversion to get wrong
# A control must move the parameters this far (relative): 1e6 x F64_ATOL, float32's rounding level,
# so the checker's float32 runs would see it too, not only the float64 ones.
CONTROL_MIN = 1e6 * F64_ATOL


def _problem():
    rng = np.random.default_rng(23)
    init = {"w1": rng.normal(size=(N_HIDDEN, N_IN)) / np.sqrt(N_IN), "b1": 0.1 * rng.normal(size=N_HIDDEN),
            "w2": rng.normal(size=(N_CLASSES, N_HIDDEN)) / np.sqrt(N_HIDDEN), "b2": 0.1 * rng.normal(size=N_CLASSES)}
    x = rng.normal(size=(N_BATCHES, BATCH, N_IN))
    y = rng.integers(0, N_CLASSES, size=(N_BATCHES, BATCH))
    return init, x, y


INIT, X, Y = _problem()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tensors this small run ~20x faster on one thread (two threads' hand-offs cost more than the
    work, worse on a shared machine); the arithmetic is the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def torch_run(config):
    """torch float64: (final params, optimizer state per parameter name, losses)."""
    params = [torch.tensor(INIT[k], dtype=torch.float64, requires_grad=True) for k in NAMES]
    opt = config.torch(params)
    losses = []
    for step in range(STEPS):
        x, y = torch.from_numpy(X[step % N_BATCHES]), torch.from_numpy(Y[step % N_BATCHES])
        w1, b1, w2, b2 = params
        loss = torch.nn.functional.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = {k: p.detach().numpy().copy() for k, p in zip(NAMES, params, strict=True)}
    state = {k: {name: (v.item() if v.ndim == 0 else v.numpy().copy()) for name, v in opt.state[p].items()
                 if v is not None} for k, p in zip(NAMES, params, strict=True)}
    return final, state, np.array(losses)


def _loss(params, x, y):
    logits = jnp.tanh(x @ params["w1"].T + params["b1"]) @ params["w2"].T + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


# Compiled once for every run; each optimizer's update is compiled on its own (a scan over both,
# recompiled per optimizer, took ~2.5x longer here for the same arithmetic).
_loss_and_grads = jax.jit(jax.value_and_grad(_loss))


def jax_run(tx: optax.GradientTransformation):
    """JAX x64: (final params, the optax state, losses), all numpy; gradients and update each jitted."""
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v, jnp.float64) for k, v in INIT.items()}
        state = tx.init(params)
        batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(X, Y, strict=True)]

        @jax.jit
        def update(grads, state, params):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        losses = []
        for step in range(STEPS):
            loss, grads = _loss_and_grads(params, *batches[step % N_BATCHES])
            params, state = update(grads, state, params)
            losses.append(loss)
        params, state, losses = jax.device_get((params, state, jnp.stack(losses)))
    # Honest float64: a run that silently computed in float32 would agree to 1e-7 only, but say so first.
    assert all(v.dtype == np.float64 for v in params.values()) and losses.dtype == np.float64
    return params, state, losses


@functools.cache
def config_run(config):
    """``jax_run(config.optax())``, once per configuration (the tests of parameters and of state share it)."""
    return jax_run(config.optax())


def relative_gap(a: dict, b: dict) -> float:
    """The largest over parameters of max |a - b| / max |a|."""
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(a[k]).max()) for k in NAMES)


CONFIGS = [
    SGD(0.1), SGD(0.1, weight_decay=1e-2), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, weight_decay=1e-2),
    SGD(0.1, momentum=0.9, nesterov=True), SGD(0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    SGD(0.1, momentum=0.9, dampening=0.3), SGD(0.1, momentum=0.9, weight_decay=1e-2, dampening=0.3),
    Adam(1e-2), Adam(1e-2, weight_decay=1e-2), Adam(1e-2, amsgrad=True), Adam(1e-2, weight_decay=1e-2, amsgrad=True),
    AdamW(1e-2, weight_decay=0.0), AdamW(1e-2), AdamW(1e-2, amsgrad=True), AdamW(1e-2, weight_decay=0.0, amsgrad=True),
]


def _id(config) -> str:
    """``AdamW-lr0.01-amsgrad``: the class and the fields that differ from its defaults (lr always)."""
    parts = [type(config).__name__, f"lr{config.lr:g}"]
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name != "lr" and value != f.default:
            parts.append(f.name if value is True else f"{f.name}{value:g}")
    return "-".join(parts)


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_float64_parameters_agree(config):
    t_params, _, t_losses = torch_run(config)
    j_params, _, j_losses = config_run(config)
    gap = relative_gap(t_params, j_params)
    moved = relative_gap(INIT, t_params)
    print(f"{_id(config)}: params rel gap {gap:.2e} (moved {moved:.2e}), loss gap {np.abs(t_losses - j_losses).max():.2e}")
    assert moved > 1e-2  # the steps really trained: agreement is not the initial values agreeing
    assert gap <= F64_ATOL
    assert np.abs(t_losses - j_losses).max() <= F64_ATOL


@pytest.mark.parametrize("config", [c for c in CONFIGS if not isinstance(c, SGD) or c.momentum], ids=_id)
def test_state_and_step_count_agree(config):
    _, t_state, _ = torch_run(config)
    _, j_state, _ = config_run(config)
    compared = 0
    for k in NAMES:
        for t_name, value in t_state[k].items():
            if t_name == "step":
                count = optax.tree_utils.tree_get(j_state, TORCH_TO_OPTAX_STATE[t_name])
                assert value == STEPS and int(count) == STEPS, (k, value, count)
                continue
            j_leaf = optax.tree_utils.tree_get(j_state, TORCH_TO_OPTAX_STATE[t_name])[k]
            gap = float(np.abs(value - j_leaf).max() / np.abs(value).max())
            assert gap <= F64_ATOL, (k, t_name, gap)
            compared += 1
    buffers = 1 if isinstance(config, SGD) else 2 + config.amsgrad
    assert compared == buffers * len(NAMES)  # every buffer torch keeps was found and compared


def _adam_without_bias_correction(b1, b2, eps):
    def update(g, state, params=None):
        mu = optax.tree_utils.tree_update_moment(g, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(g, state.nu, b2, 2)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

    return optax.GradientTransformation(optax.scale_by_adam(b1, b2, eps).init, update)


LR = 1e-2
CONTROLS = {
    # torch's optimizer, and the optax chain a port might write for it instead
    "eps inside the root": (Adam(LR), lambda: optax.chain(optax.scale_by_adam(eps=0.0, eps_root=1e-8),
                                                          optax.scale(-LR))),
    "AdamW decay coupled": (AdamW(LR), lambda: Adam(LR, weight_decay=1e-2).optax()),
    "Adam decay decoupled": (Adam(LR, weight_decay=1e-2), lambda: AdamW(LR, weight_decay=1e-2).optax()),
    "bias correction off": (Adam(LR), lambda: optax.chain(_adam_without_bias_correction(0.9, 0.999, 1e-8),
                                                          optax.scale(-LR))),
    "optax.adamw default decay": (AdamW(LR), lambda: optax.adamw(LR)),
    "betas swapped": (Adam(LR), lambda: Adam(LR, betas=(0.999, 0.9)).optax()),
    "optax.amsgrad": (Adam(LR, amsgrad=True), lambda: optax.amsgrad(LR)),
    "SGD dampening dropped": (SGD(0.1, momentum=0.9, dampening=0.3), lambda: SGD(0.1, momentum=0.9).optax()),
    "SGD decay after momentum": (SGD(0.1, momentum=0.9, weight_decay=1e-2),
                                 lambda: optax.chain(optax.sgd(0.1, momentum=0.9), optax.add_decayed_weights(1e-2))),
}


@pytest.mark.parametrize("name", CONTROLS)
def test_negative_control_is_detected(name):
    config, wrong = CONTROLS[name]
    t_params, _, _ = torch_run(config)
    deviation = relative_gap(t_params, jax_run(wrong())[0])
    print(f"{name}: params rel deviation {deviation:.2e} (vs {_id(config)})")
    assert deviation > CONTROL_MIN


@pytest.mark.parametrize("config,builtin", [
    (Adam(LR), lambda: optax.adam(LR)),
    (AdamW(LR), lambda: optax.adamw(LR, weight_decay=1e-2)),
    (SGD(0.1, momentum=0.9, nesterov=True), lambda: optax.sgd(0.1, momentum=0.9, nesterov=True)),
], ids=["adam", "adamw-wd1e-2", "sgd-nesterov"])
def test_optax_builtins_match_when_told_torchs_settings(config, builtin):
    """Where optax's own optimizer is torch's (given torch's settings), it agrees too: the chains above
    differ from it only where torch does."""
    assert relative_gap(torch_run(config)[0], jax_run(builtin())[0]) <= F64_ATOL


# Every piece of every chain once: decay, Nesterov, the two transforms of parity.optimizers, scale_by_adam.
FLOAT32_CONFIGS = [SGD(0.1, momentum=0.9, weight_decay=1e-2, dampening=0.3),
                   SGD(0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
                   Adam(1e-2, weight_decay=1e-2, amsgrad=True), AdamW(1e-2)]


@pytest.mark.parametrize("config", FLOAT32_CONFIGS, ids=_id)
def test_float32_stays_float32(config):
    """The checker's float32 runs use the same chains: no hyperparameter or state may widen them."""
    params = {k: jnp.asarray(v, jnp.float32) for k, v in INIT.items()}
    tx = config.optax()
    state = tx.init(params)
    for step in range(2):
        _, grads = _loss_and_grads(params, jnp.asarray(X[step], jnp.float32), jnp.asarray(Y[step], jnp.int32))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    leaves = jax.tree.leaves((params, state))
    assert all(v.dtype == jnp.float32 for v in leaves if jnp.issubdtype(v.dtype, jnp.floating))
    assert all(v.dtype == jnp.int32 for v in leaves if jnp.issubdtype(v.dtype, jnp.integer))


@pytest.mark.parametrize("make,field", [
    (lambda: SGD(0.0), "SGD.lr"), (lambda: SGD(float("nan")), "SGD.lr"), (lambda: SGD(True), "SGD.lr"),
    (lambda: SGD(0.1, momentum=1.0), "SGD.momentum"), (lambda: SGD(0.1, weight_decay=-1e-4), "SGD.weight_decay"),
    (lambda: SGD(0.1, dampening=1.5), "SGD.dampening"), (lambda: SGD(0.1, nesterov=True), "SGD.nesterov"),
    (lambda: SGD(0.1, momentum=0.9, dampening=0.1, nesterov=True), "SGD.nesterov"),
    (lambda: SGD(0.1, nesterov=1), "SGD.nesterov"),
    (lambda: Adam(lr=float("inf")), "Adam.lr"), (lambda: Adam(betas=(0.9, 1.0)), "Adam.betas[1]"),
    (lambda: Adam(betas=(-0.1, 0.999)), "Adam.betas[0]"), (lambda: Adam(betas=(0.9,)), "Adam.betas"),
    (lambda: Adam(betas="ab"), "Adam.betas"), (lambda: Adam(eps=-1e-8), "Adam.eps"),
    (lambda: Adam(weight_decay=float("nan")), "Adam.weight_decay"), (lambda: Adam(amsgrad="yes"), "Adam.amsgrad"),
    (lambda: AdamW(lr="1e-3"), "AdamW.lr"), (lambda: AdamW(weight_decay=-0.01), "AdamW.weight_decay"),
])
def test_bad_hyperparameter_names_its_field(make, field):
    with pytest.raises(ValueError, match="^" + re.escape(field) + " "):
        make()


def test_values_are_normalised_and_hashable():
    a = Adam(lr=np.float32(0.5), betas=[0.8, 0.9])
    assert a.betas == (0.8, 0.9) and type(a.lr) is float and hash(a) == hash(Adam(0.5, (0.8, 0.9)))
    assert AdamW().weight_decay == 1e-2 and Adam().weight_decay == 0.0  # torch's defaults, not optax's
    assert not isinstance(AdamW(), Adam)
    with pytest.raises(AttributeError):
        a.lr = 1.0  # frozen
    assert "\n" not in AdamW(amsgrad=True).describe() and "torch.optim.AdamW" in AdamW().describe()
