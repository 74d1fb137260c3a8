"""Optimizer pairs for the port checker's step phase: one description, built as ``torch.optim`` and as optax.

Each of ``SGD``, ``Adam`` and ``AdamW`` holds ``torch.optim``'s hyperparameters (its names, its
defaults) and builds both sides: ``.torch(params)`` the ``torch.optim`` optimizer, ``.optax()`` an
``optax.GradientTransformation`` that computes the same update, term for term, so a port's training
steps can be compared at all. Where optax's ready-made optimizer differs from torch's, the chain here
follows torch, and says where:

- **Adam's weight decay** is L2: ``g + wd * p`` *before* the moments (``add_decayed_weights`` first).
  ``optax.adamw`` and AdamW's decay are decoupled: ``p -= lr * wd * p``, outside the moments.
- **AdamW's default decay** is torch's 1e-2; ``optax.adamw``'s default is 1e-4.
- **eps** sits outside the square root, after bias correction: ``m_hat / (sqrt(v_hat) + eps)``
  (optax's ``eps``, not its ``eps_root``).
- **AMSGrad**: torch keeps the running maximum of the *raw* second moment and divides it by the
  current step's bias correction; ``optax.scale_by_amsgrad`` keeps the maximum of the bias-corrected
  moments (each divided by its own step's correction), a different optimizer. ``scale_by_torch_amsgrad``
  is torch's.
- **SGD's dampening**: torch's momentum buffer starts as the first (undamped) gradient, then
  ``buf = momentum * buf + (1 - dampening) * g``; ``optax.trace`` has no dampening.

Held in float64 (torch ``float64`` vs JAX under ``jax.enable_x64``) by ``parity/test_optimizers.py``,
with a negative control for each of the differences above.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import torch

from jax_impl.train import make_optimizer

__all__ = ["SGD", "Adam", "AdamW", "DampenedTraceState", "TORCH_TO_OPTAX_STATE", "scale_by_torch_amsgrad",
           "torch_dampened_trace"]

# torch's per-parameter state keys -> the optax state field holding the same tensor, for
# ``optax.tree_utils.tree_get(state, name)[leaf]``; torch's ``step`` is optax's ``count``.
TORCH_TO_OPTAX_STATE = {"exp_avg": "mu", "exp_avg_sq": "nu", "max_exp_avg_sq": "nu_max", "momentum_buffer": "trace",
                        "step": "count"}


def _number(value, where: str, lo: float, hi: float = math.inf, *, lo_open: bool = False,
            hi_open: bool = False) -> float:
    """``value`` as a float in [lo, hi] (open ends as given), else ValueError naming ``where``."""
    # bool is a Real in Python; ``lr=True`` is a typo, never a learning rate.
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{where} must be a real number, got {value!r}")
    value = float(value)
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if not math.isfinite(value) or below or above:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open or hi == math.inf else ']'}"
        raise ValueError(f"{where} must be finite and in {span}, got {value!r}")
    return value


def _validate(owner, name: str, *bounds, **open_ends) -> None:
    """Check the field ``name`` and store it as a float (frozen: set once, here)."""
    where = f"{type(owner).__name__}.{name}"
    object.__setattr__(owner, name, _number(getattr(owner, name), where, *bounds, **open_ends))


def _flag(owner, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, bool):
        raise ValueError(f"{type(owner).__name__}.{name} must be True or False, got {value!r}")


def _describe(owner, torch_name: str, optax_form: str) -> str:
    args = ", ".join(f"{f.name}={getattr(owner, f.name)!r}" for f in fields(owner))
    return f"{type(owner).__name__}({args}): torch.optim.{torch_name} | optax {optax_form}"


class DampenedTraceState(NamedTuple):
    """``torch_dampened_trace``'s state: ``trace`` is torch's ``momentum_buffer``, ``count`` the steps taken."""

    count: jax.Array  # int32 scalar
    trace: optax.Params


def torch_dampened_trace(momentum: float, dampening: float) -> optax.GradientTransformation:
    """torch SGD's momentum buffer with dampening: the first gradient as it is, then
    ``buf = momentum * buf + (1 - dampening) * g``. (``optax.trace`` starts from zeros with no
    dampening, which equals torch only at ``dampening == 0``.)"""

    def init_fn(params):
        return DampenedTraceState(count=jnp.zeros([], jnp.int32), trace=optax.tree_utils.tree_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        trace = jax.tree.map(lambda g, t: jnp.where(first, g, momentum * t + (1 - dampening) * g), updates, state.trace)
        return trace, DampenedTraceState(count=optax.safe_increment(state.count), trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_torch_amsgrad(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """torch's AMSGrad direction: ``m_hat / (sqrt(max_t v_t) / sqrt(1 - b2^t) + eps)``, the maximum
    taken over the raw second moments (torch's ``max_exp_avg_sq``). The state is optax's
    ``ScaleByAmsgradState``, so ``nu_max`` is where ``optax.scale_by_amsgrad`` keeps its own maximum."""

    def init_fn(params):
        zeros = optax.tree_utils.tree_zeros_like
        return optax.ScaleByAmsgradState(count=jnp.zeros([], jnp.int32), mu=zeros(params), nu=zeros(params),
                                         nu_max=zeros(params))

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree_utils.tree_update_moment(updates, state.mu, b1, 1)
        nu = optax.tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu)
        mu_hat = optax.tree_utils.tree_bias_correction(mu, b1, count)
        nu_hat = optax.tree_utils.tree_bias_correction(nu_max, b2, count)
        direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return direction, optax.ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


@dataclass(frozen=True)
class SGD:
    """``torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)``."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0

    def __post_init__(self):
        _validate(self, "lr", 0.0, lo_open=True)
        # momentum >= 1 never forgets a gradient: the buffer grows without bound.
        _validate(self, "momentum", 0.0, 1.0, hi_open=True)
        _validate(self, "weight_decay", 0.0)
        _validate(self, "dampening", 0.0, 1.0)
        _flag(self, "nesterov")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):  # torch's own rule
            raise ValueError("SGD.nesterov needs momentum > 0 and dampening 0, got "
                             f"momentum={self.momentum!r}, dampening={self.dampening!r}")

    def torch(self, params):
        # foreach=False: the single-tensor loop, the same arithmetic on every device.
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                               weight_decay=self.weight_decay, nesterov=self.nesterov, foreach=False)

    def optax(self) -> optax.GradientTransformation:
        decay = [optax.add_decayed_weights(self.weight_decay)] if self.weight_decay else []
        if self.nesterov:  # optax.trace's Nesterov form is torch's: g + momentum * buf
            return optax.chain(*decay, optax.sgd(self.lr, momentum=self.momentum, nesterov=True))
        if self.momentum and self.dampening:
            return optax.chain(*decay, torch_dampened_trace(self.momentum, self.dampening), optax.scale(-self.lr))
        # dampening without momentum does nothing in torch either
        return make_optimizer(self.lr, self.momentum, self.weight_decay)

    def describe(self) -> str:
        decay = "add_decayed_weights, " if self.weight_decay else ""
        if self.nesterov:
            form = f"chain({decay}sgd(nesterov=True))"
        elif self.momentum and self.dampening:
            form = f"chain({decay}torch_dampened_trace, scale(-lr))"
        else:
            form = f"jax_impl.train.make_optimizer: chain({decay}sgd)"
        return _describe(self, "SGD", form)


@dataclass(frozen=True)
class _AdamFamily:
    """What Adam and AdamW share; they differ in where weight decay goes (and its default)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False

    _decoupled = False  # class constant, not a field

    def __post_init__(self):
        _validate(self, "lr", 0.0, lo_open=True)
        where = f"{type(self).__name__}.betas"
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"{where} must be a pair (beta1, beta2), got {betas!r}")
        object.__setattr__(self, "betas", tuple(_number(b, f"{where}[{i}]", 0.0, 1.0, hi_open=True)
                                                for i, b in enumerate(betas)))
        _validate(self, "eps", 0.0)
        _validate(self, "weight_decay", 0.0)
        _flag(self, "amsgrad")

    def torch(self, params):
        cls = torch.optim.AdamW if self._decoupled else torch.optim.Adam
        # foreach=False, fused=False: the single-tensor loop, the same arithmetic on every device.
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                   amsgrad=self.amsgrad, foreach=False, fused=False)

    def _direction(self) -> optax.GradientTransformation:
        b1, b2 = self.betas
        if self.amsgrad:
            return scale_by_torch_amsgrad(b1, b2, self.eps)
        return optax.scale_by_adam(b1, b2, eps=self.eps, eps_root=0.0)

    def optax(self) -> optax.GradientTransformation:
        if not self.weight_decay:
            return optax.chain(self._direction(), optax.scale(-self.lr))
        decay = optax.add_decayed_weights(self.weight_decay)
        if self._decoupled:
            # -lr * (direction + wd * p): torch's p *= 1 - lr * wd, then p -= lr * direction, in one sum
            # (the direction does not depend on p, so the order is rounding only).
            return optax.chain(self._direction(), decay, optax.scale(-self.lr))
        return optax.chain(decay, self._direction(), optax.scale(-self.lr))

    def describe(self) -> str:
        direction = "scale_by_torch_amsgrad" if self.amsgrad else "scale_by_adam(eps_root=0)"
        if not self.weight_decay:
            form = f"chain({direction}, scale(-lr))"
        elif self._decoupled:
            form = f"chain({direction}, add_decayed_weights, scale(-lr))"
        else:
            form = f"chain(add_decayed_weights, {direction}, scale(-lr))"
        return _describe(self, type(self).__name__, form)


@dataclass(frozen=True)
class Adam(_AdamFamily):
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay, amsgrad)``: weight decay is L2, added to
    the gradient before the moments."""


# Not a subclass of Adam: isinstance(AdamW(...), Adam) would let a check for coupled decay accept AdamW.
@dataclass(frozen=True)
class AdamW(_AdamFamily):
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay, amsgrad)``: decoupled weight decay,
    ``p -= lr * wd * p``, with torch's default ``wd = 1e-2`` (``optax.adamw``'s is 1e-4)."""

    weight_decay: float = 1e-2

    _decoupled = True
