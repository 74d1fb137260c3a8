"""Compare pytrees leaf by leaf, and the two models layer by layer, naming where they diverge.

The pattern is optax's ``test_utils``: flatten both trees, check that the structure matches, then
``np.testing.assert_allclose`` each leaf with both ``rtol`` and ``atol``. torch is the reference.

Non-finite values fail, in either tree, even where both hold the same inf or NaN (unlike
``assert_allclose``, which counts inf == inf and NaN == NaN as equal): these functions judge trained
numbers, and an inf or NaN there means a run diverged, not that two runs agree.
``parity/test_compare.py`` tests every function here on hand-made inputs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from jax_impl.model import NeuralNetwork


@dataclass(frozen=True)
class LeafDiff:
    """How far one leaf is from its reference."""

    name: str
    max_abs: float
    max_rel: float  # max |a - e| / |e| over elements where e != 0
    ok: bool
    nonfinite: int = 0  # elements that are NaN or inf in actual or expected

    def __str__(self) -> str:
        bad = f", {self.nonfinite} non-finite (NaN/inf)" if self.nonfinite else ""
        return (f"{self.name}: max abs {self.max_abs:.3e}, max rel {self.max_rel:.3e}{bad}"
                f"{'' if self.ok else '  <-- exceeds tolerance'}")


def _to_numpy(leaf) -> np.ndarray:
    if hasattr(leaf, "detach"):  # a torch tensor; avoid importing torch here
        leaf = leaf.detach().cpu().numpy()
    return np.asarray(leaf)


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """``{"a/b/c": leaf}`` for nested mappings and sequences, in insertion order."""
    if isinstance(tree, Mapping):
        out: dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
        return out
    if isinstance(tree, (list, tuple)):
        out = {}
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}/{i}" if prefix else str(i)))
        return out
    return {prefix: _to_numpy(tree)}


def leaf_diff(name: str, actual, expected, rtol: float, atol: float) -> LeafDiff:
    """Max abs and rel error of ``actual`` against ``expected``, and whether
    ``|a - e| <= atol + rtol * |e|`` holds everywhere (``np.testing.assert_allclose``'s rule: ``rtol``
    scales with the reference, ``atol`` does not). Any NaN or inf, in either, is not ok."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != reference shape {e.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf and inf / inf are NaN: reported below
        err = np.abs(a - e)
        nonzero = e != 0
        max_abs = float(err.max()) if err.size else 0.0
        max_rel = float((err[nonzero] / np.abs(e[nonzero])).max()) if nonzero.any() else 0.0
    nonfinite = int(np.count_nonzero(~(np.isfinite(a) & np.isfinite(e))))
    # Written as "all within", never "none beyond": a NaN difference compares False and so fails.
    ok = nonfinite == 0 and bool(np.all(err <= atol + rtol * np.abs(e)))
    return LeafDiff(name, max_abs, max_rel, ok, nonfinite)


def check_structure(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Same leaf names (order aside); the message names the first missing and first extra leaf."""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if extra:
            parts.append(f"unexpected {extra[0]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))
        raise AssertionError("tree structures differ: " + "; ".join(parts))


def compare_trees(actual, expected, rtol: float, atol: float) -> list[LeafDiff]:
    """Every leaf's difference, in the reference's order, after checking the structure."""
    a, e = flatten(actual), flatten(expected)
    check_structure(a, e)
    return [leaf_diff(name, a[name], e[name], rtol, atol) for name in e]


def assert_trees_close(actual, expected, rtol: float, atol: float, what: str = "trees") -> list[LeafDiff]:
    """Raise AssertionError naming the first leaf outside ``rtol``/``atol`` (with its max abs and
    rel error); return all leaf differences when every leaf is close."""
    diffs = compare_trees(actual, expected, rtol, atol)
    a, e = flatten(actual), flatten(expected)
    for d in diffs:
        if not d.ok:
            np.testing.assert_allclose(
                np.asarray(a[d.name], np.float64), np.asarray(e[d.name], np.float64), rtol=rtol, atol=atol,
                err_msg=f"{what}: leaf {d.name} differs (max abs {d.max_abs:.3e}, max rel {d.max_rel:.3e})",
            )
            raise AssertionError(f"{what}: leaf {d.name} differs ({d})")  # NaN/inf: assert_allclose lets equal ones pass
    return diffs


# --- layer by layer ------------------------------------------------------------------------------

def torch_activations(model, x) -> dict[str, np.ndarray]:
    """Output of ``flatten`` and of every module in ``linear_relu_stack`` (forward hooks), named as
    the Flax side names them (``linear_relu_stack_<i>``), plus ``logits``."""
    acts: dict[str, np.ndarray] = {}
    handles = [model.flatten.register_forward_hook(lambda m, i, o: acts.__setitem__("flatten", o.detach().cpu().numpy()))]
    for idx, module in enumerate(model.linear_relu_stack):
        name = f"linear_relu_stack_{idx}"
        handles.append(module.register_forward_hook(
            lambda m, i, o, name=name: acts.__setitem__(name, o.detach().cpu().numpy())))
    try:
        with torch.no_grad():
            acts["logits"] = model(x).cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return acts


def flax_activations(params, hidden: Sequence[int], x) -> dict[str, np.ndarray]:
    """The same layers of ``NeuralNetwork(hidden)``: Dense outputs from ``capture_intermediates``, flatten and
    relu outputs sown by the model, plus ``logits``."""
    logits, state = NeuralNetwork(tuple(hidden)).apply({"params": params}, x, capture_intermediates=True,
                                                       mutable=["intermediates"])
    inter = state["intermediates"]
    acts: dict[str, np.ndarray] = {}
    for name, value in inter.items():
        if name == "__call__":
            continue
        out = value["__call__"] if isinstance(value, Mapping) else value  # Dense module vs sown tuple
        acts[name] = np.asarray(out[0])
    acts["logits"] = np.asarray(logits)
    return acts


def layer_order(hidden: Sequence[int]) -> list[str]:
    """The forward order of the compared layers."""
    return ["flatten"] + [f"linear_relu_stack_{i}" for i in range(2 * len(hidden) + 1)] + ["logits"]


def compare_activations(torch_acts: Mapping[str, np.ndarray], flax_acts: Mapping[str, np.ndarray],
                        hidden: Sequence[int], rtol: float, atol: float) -> tuple[list[LeafDiff], str | None]:
    """Per-layer differences in forward order and the first layer outside tolerance (or None)."""
    order = layer_order(hidden)
    check_structure({k: None for k in flax_acts}, {k: None for k in order})
    check_structure({k: None for k in torch_acts}, {k: None for k in order})
    diffs = [leaf_diff(name, flax_acts[name], torch_acts[name], rtol, atol) for name in order]
    first = next((d.name for d in diffs if not d.ok), None)
    return diffs, first


# --- initialisation -----------------------------------------------------------------------------

# The false-alarm rate each statistical bound of ``uniform_init_violations`` is set for, per leaf and check.
INIT_FALSE_ALARM = 1e-6


def uniform_init_violations(params) -> list[str]:
    """Where ``params`` do not look drawn from U(-b, b), b = 1/sqrt(fan_in), as torch's nn.Linear draws.

    Each bound holds a genuine draw of n values with a false alarm near ``INIT_FALSE_ALARM``:
    - support, |w| <= b rounded up to float32: torch and JAX draw float32 values in [float32(-b), float32(b)),
      the lower end included (JAX: 1 value in 2^23, so 5% of 784x512 kernels hold it), and float32(1/28) is
      1/28 * (1 + 4.5e-8); with float64's b a genuine JAX init (``PRNGKey(5)``) failed.
    - range filled, max |w| >= b * 1e-6**(1/n): |w|/b is U(0, 1), so P(max |w| < c b) = c**n exactly. It sees a
      narrower interval (a wrong fan, a bias drawn 10x too small) that the moments below miss on few values:
      on the last layer's 10-value bias the variance bound is wider than b^2/3 itself.
    - mean, |mean| <= 5 b/sqrt(3n): the mean's sd is b/sqrt(3n); the normal tail beyond 5 sd is 5.7e-7
      (a uniform is strictly sub-Gaussian: at most 2 exp(-12.5) = 7.5e-6 for any n).
    - variance, |var - b^2/3| <= 5 b^2 sqrt(4/45)/sqrt(n): Var(X^2) = E[X^4] - E[X^2]^2 = b^4/5 - b^4/9.
    A constant leaf is flagged on its own (with a clearer message). What the statistics cannot see on
    10 values, at this false-alarm rate: a scale error above 10**-0.6 = 0.25 of b, or U(0, b) (all 10
    values positive is 1 in 1024 for a genuine draw); a port with such an initialiser fails on its kernels.
    """
    problems = []
    for name, layer in params.items():
        kernel = layer.get("kernel")
        if kernel is None or np.ndim(kernel) != 2 or np.shape(kernel)[0] == 0:  # no fan-in, no bound to hold it to
            problems.append(f"{name}: no (fan_in, fan_out) kernel to take the bound from "
                            f"(kernel shape {None if kernel is None else np.shape(kernel)})")
            continue
        fan_in = np.shape(kernel)[0]
        b = 1 / math.sqrt(fan_in)
        top = max(b, float(np.float32(b)))
        for part, w in layer.items():
            w = np.asarray(w, np.float64).ravel()
            n = w.size
            if n == 0:  # min/max of nothing: an empty leaf is no draw at all
                problems.append(f"{name}/{part}: empty")
                continue
            if not np.all(np.isfinite(w)):  # every check below is a ``>``: NaN would pass them all
                problems.append(f"{name}/{part}: {int(np.sum(~np.isfinite(w)))} non-finite values")
                continue
            if n > 1 and w.min() == w.max():  # e.g. a zero bias of 10: too few values for the variance check
                problems.append(f"{name}/{part}: all {n} values equal {w[0]:.4g}")
            largest = np.abs(w).max()
            if largest > top:
                problems.append(f"{name}/{part}: |w| max {largest:.4g} > bound {top:.4g}")
            if largest < b * INIT_FALSE_ALARM ** (1 / n):
                problems.append(f"{name}/{part}: |w| max {largest:.4g} fills only {largest / b:.4g} of the bound {b:.4g}")
            if abs(w.mean()) > 5 * b / math.sqrt(3 * n):
                problems.append(f"{name}/{part}: mean {w.mean():.3g}")
            if abs(w.var() - b * b / 3) > 5 * b * b * math.sqrt(4 / 45) / math.sqrt(n):
                problems.append(f"{name}/{part}: variance {w.var():.4g}, expected {b * b / 3:.4g}")
    return problems
