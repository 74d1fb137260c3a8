"""The engine parity's runs share: the tolerance a check derives from four runs, and the dropout masks both sides apply.

``parity.checker`` (the port checker) and ``parity.cnn_side_by_side`` (``python -m parity --model NAME`` for the
pairs without calibrated tolerances) judge their quantities with ``check``: for values ``t32, t64, j32, j64`` of
torch and JAX in float32 and float64, the gap ``|t32 - j32|`` must stay within ``FACTOR x (|t32 - t64| + |j32 -
j64|)`` plus a float64 floor, the float64 runs must agree to float64 rounding, and neither float32 run may be
further from its float64 twin than rounding can be (``Check.reason``; the derivation is ``parity.checker``'s
docstring). ``Masks`` is the one numpy stream the four runs read their dropout masks from.

A private module (by its name) of the package: these are parity's own internal names, not the public
surface (``parity/__init__.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch

__all__ = ["Check", "Masks", "cast_tree", "check", "max_abs", "numpy64", "FACTOR", "FLOOR_ULPS", "F64_MARGIN",
           "EPS_RATIO", "ROUNDING_MAX_REL"]

FACTOR = 2.0  # tolerance = FACTOR x (torch32 - torch64 error + jax32 - jax64 error): the bound, with room
FLOOR_ULPS = 64  # float64 ulps of the quantity's magnitude: the float64 runs' own disagreement
# The float64 runs' gap of a correct port is float64 rounding: the float32 errors scaled by eps64/eps32
# (2**-29), with three orders of margin for the different summation orders of the two libraries.
F64_MARGIN = 1e3
EPS_RATIO = float(np.finfo(np.float64).eps / np.finfo(np.float32).eps)
# A float32 run further than this fraction of a quantity's size from its float64 twin is not rounding
# (randomness, a fixed dtype, a data-dependent branch). It is judged against the largest quantity of its phase,
# since rounding amplified by a ReLU kink or by cancellation to zero (a bias before BatchNorm) is measured there.
ROUNDING_MAX_REL = 1e-2


@dataclass
class Check:
    """One compared quantity: a layer's output, a gradient, a parameter or buffer, a loss."""

    phase: str  # "start", "forward (eval)", "forward (train)", "gradients", "step 3"
    name: str  # torch's name (module path, parameter or buffer key, "loss")
    gap: float  # max |torch32 - jax32|
    tol: float
    err_torch: float  # max |torch32 - torch64|
    err_jax: float  # max |jax32 - jax64|
    gap64: float  # max |torch64 - jax64|
    tol64: float = float("inf")
    scale: float = float("inf")  # max |torch64|, |jax64|: the quantity's size
    # the size rounding is judged against: the largest quantity of the phase, since a mathematically zero
    # quantity (the gradient of a bias before BatchNorm) is float32 cancellation of terms of that size
    rounding_scale: float = float("nan")
    note: str = ""  # set for a check that could not compare (shapes), with the reason
    jax_name: str = ""

    @property
    def reason(self) -> str:
        """Why the check fails ("" when it passes)."""
        if self.note:
            return self.note
        if not all(np.isfinite(v) for v in (self.gap, self.tol, self.gap64, self.err_torch, self.err_jax)):
            return "non-finite value"
        if self.gap > self.tol:
            return "float32 gap beyond tolerance"
        if self.gap64 > self.tol64:
            return (f"the float64 runs disagree ({self.gap64:.2e} > {self.tol64:.2e}, float64 rounding): "
                    "not a rounding difference")
        size = self.scale if np.isnan(self.rounding_scale) else max(self.scale, self.rounding_scale)
        for side, err in (("torch", self.err_torch), ("JAX", self.err_jax)):
            if err > ROUNDING_MAX_REL * size:
                return (f"{side}'s float32 run differs from its float64 run by {err:.2e}, more than rounding can "
                        f"({ROUNDING_MAX_REL:g} of the size {size:.2e} of this phase's quantities: randomness, a fixed "
                        "dtype or a branch); the tolerance is not widened by it")
        return ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def __str__(self) -> str:
        if self.note:
            return f"{self.name}: {self.note}"
        why = self.reason
        text = (f"{self.name}: max |torch - jax| {self.gap:.3e} {'>' if why.startswith('float32 gap') else '<='} "
                f"tol {self.tol:.3e} (= {FACTOR:g} x (torch32 err {self.err_torch:.2e} + jax32 err {self.err_jax:.2e}) "
                f"vs float64; float64 gap {self.gap64:.2e})")
        if why and not why.startswith("float32 gap"):
            text += f"; FAIL: {why}"
        return text



def layout_candidates(t: np.ndarray, j: np.ndarray):
    if t.shape == j.shape:
        yield t
    if t.ndim >= 3:
        moved = np.moveaxis(t, 1, -1)  # NCHW -> NHWC, NCL -> NLC
        if moved.shape == j.shape:
            yield moved
    if t.shape != j.shape and t.ndim == j.ndim:
        try:
            bt, _ = np.broadcast_arrays(t, j)  # a (1, T, C) capture against (B, T, C)
            yield bt
        except ValueError:
            pass


def check(phase: str, name: str, t32, t64, j32, j64, jax_name: str = "") -> Check:
    t32, t64, j32, j64 = (np.asarray(a, np.float64) for a in (t32, t64, j32, j64))
    if j64.shape != j32.shape or t32.shape != t64.shape:
        return Check(phase, name, float("inf"), 0.0, float("nan"), float("nan"), float("nan"), jax_name=jax_name,
                     note="the float32 and float64 runs gave different shapes")
    # where several layouts fit (equal dimensions), the one the float64 runs agree on is the layout
    options = []
    for cand64, cand32 in zip(layout_candidates(t64, j64), layout_candidates(t32, j32), strict=False):
        j64b = np.broadcast_to(j64, cand64.shape) if j64.shape != cand64.shape else j64
        j32b = np.broadcast_to(j32, cand32.shape) if j32.shape != cand32.shape else j32
        options.append((max_abs(cand64 - j64b), cand32, cand64, j32b, j64b))
    if not options:
        return Check(phase, name, float("inf"), 0.0, float("nan"), float("nan"), float("nan"), jax_name=jax_name,
                     note=f"shape {tuple(t32.shape)} (torch) has no layout matching {tuple(j32.shape)} (JAX)")
    options.sort(key=lambda o: o[0] if np.isfinite(o[0]) else np.inf)
    _, t32, t64, j32, j64 = options[0]
    err_t, err_j = max_abs(t32 - t64), max_abs(j32 - j64)
    scale = max(max_abs(t64), max_abs(j64))
    floor = FLOOR_ULPS * np.finfo(np.float64).eps * scale
    tol = FACTOR * (err_t + err_j) + floor
    tol64 = F64_MARGIN * EPS_RATIO * (err_t + err_j) + floor
    return Check(phase, name, max_abs(t32 - j32), tol, err_t, err_j, max_abs(t64 - j64), tol64, scale, jax_name=jax_name)


def max_abs(a) -> float:
    a = np.asarray(a)
    return float(np.max(np.abs(a))) if a.size else 0.0


class Masks:
    """Dropout masks drawn once in numpy, keyed by (step, layer); the four runs read the same ones."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.store: dict[tuple[int, str], np.ndarray] = {}
        self.step = 0

    def get(self, name: str, shape: tuple[int, ...], p: float) -> np.ndarray:
        key = (self.step, name)
        if key not in self.store:
            self.store[key] = self.rng.random(shape) >= p
        return self.store[key]

    def for_port(self, torch_name: str | None, shape: tuple[int, ...], broadcast_dims: Sequence[int], rate: float,
                 jax_name: str) -> np.ndarray:
        """The keep-mask the port's dropout applies, of the port's own mask shape (its ``broadcast_dims`` set to 1).

        torch's mask (NCHW) is shared where it has that shape in the port's layout; otherwise (a broadcast mask
        against torch's per-element one, no torch dropout of that name) the port gets a mask of its own, drawn
        from the same stream and the same for its float32 and float64 runs, so its own semantics show.
        """
        want = tuple(1 if d in {b % len(shape) for b in broadcast_dims} else n for d, n in enumerate(shape))
        key = (self.step, torch_name) if torch_name else None
        if key in self.store:
            t = self.store[key]
            for cand in (t, np.moveaxis(t, 1, -1) if t.ndim >= 3 else None):
                if cand is not None and cand.shape == want:
                    return cand
        return self.get(f"{jax_name} (JAX's own)", want, rate)


def numpy64(t) -> np.ndarray:
    """A float64 copy: ``.double().numpy()`` of a float64 tensor would share memory with it, and the
    optimizer's in-place updates would rewrite a recorded step."""
    if isinstance(t, torch.Tensor):
        return np.array(t.detach().cpu().double().numpy(), copy=True)
    return np.array(np.asarray(t), dtype=np.float64, copy=True)


def cast_tree(tree, dtype):
    def one(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return a  # NNX's RNG keys travel with the model
        return jnp.asarray(np.asarray(a), dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a)
    return jax.tree_util.tree_map(one, tree)
