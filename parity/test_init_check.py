"""``uniform_init_violations``, bound by bound, at the sizes the MLP has (issue 29, section 5).

Each bound gets a leaf just inside it and one just outside it (by 1e-6 of the bound's distance from the
expected value, or by one float64 step), and, where the check's ``>`` could be ``>=``, a leaf exactly on it.
The leaves are built, not drawn: an evenly spaced grid over (-b, b) passes every bound, and each case moves
one statistic of it to where it should be. Then the real wrong initialisations a port has, drawn.
"""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch

from jax_impl.model import init_params, torch_linear_init
from parity import harness as H
from parity.compare import INIT_FALSE_ALARM, uniform_init_violations
from reference_torch.model import NeuralNetwork as TorchNeuralNetwork

# leaf: (fan_in, shape); the MLP's three Linear layers, 784 -> 512 -> 512 -> 10.
SIZES = {
    "784x512 kernel": (784, (784, 512)), "784x512 bias": (784, (512,)),
    "512x512 kernel": (512, (512, 512)), "512x512 bias": (512, (512,)),
    "512x10 kernel": (512, (512, 10)), "512x10 bias": (512, (10,)),
}
REL = 1e-6  # how far inside or outside a bound a case sits, relative to the bound's width


def _grid(n: int, b: float) -> np.ndarray:
    """n evenly spaced values in (-b, b): mean 0, variance b^2/3 (1 - 1/n^2), max |w| = b (1 - 1/n)."""
    return b * ((2 * np.arange(n) + 1) / n - 1)


def _violations(size: str, leaf: np.ndarray) -> list[str]:
    """The problems of a layer of ``size`` whose other leaf is a grid (which has none)."""
    fan_in, shape = SIZES[size]
    b = 1 / math.sqrt(fan_in)
    part = "kernel" if len(shape) == 2 else "bias"
    kernel = leaf.reshape(shape) if part == "kernel" else _grid(fan_in * shape[0], b).reshape(fan_in, shape[0])
    layer = {"kernel": kernel, "bias": leaf} if part == "bias" else {"kernel": kernel, "bias": _grid(shape[1], b)}
    return [p for p in uniform_init_violations({"l": layer}) if p.startswith(f"l/{part}:")]


def _params(size: str) -> tuple[int, float, str]:
    fan_in, shape = SIZES[size]
    return math.prod(shape), 1 / math.sqrt(fan_in), "kernel" if len(shape) == 2 else "bias"


def _bisect(make, lo: float, hi: float, stat, target: float) -> float:
    """The smallest float t in [lo, hi] with stat(make(t)) >= target, stat increasing in t (float64 bisection)."""
    while True:
        mid = lo + (hi - lo) / 2
        if mid in (lo, hi):
            return hi
        lo, hi = (mid, hi) if stat(make(mid)) < target else (lo, mid)


def _on(make, lo: float, hi: float, stat, target: float, scale: float) -> np.ndarray:
    """make(t) with stat exactly ``target``: t bisected, then the last value bisected, after moving the first one
    by a few float64 steps (numpy's pairwise sum rounds each block on its own, so one value's steps may skip
    ``target``; a different first value changes where they fall)."""
    start = make(_bisect(make, lo, hi, stat, target))
    for k in range(200):
        base = start.copy()
        base[0] += k * scale * 2.0**-50

        def nudged(t, base=base):
            out = base.copy()
            out[-1] = t
            return out

        w = nudged(_bisect(nudged, base[-1] - 1e-4 * scale, base[-1] + 1e-4 * scale, stat, target))
        if stat(w) == target:
            return w
    raise AssertionError(f"no leaf with the statistic exactly {target!r}")


# --- the support: |w| <= b, b rounded up to float32 -------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_support(size):
    n, b, part = _params(size)
    top = max(b, float(np.float32(b)))
    assert 0 <= top - b <= b * 2.0**-24  # half a float32 step at most: no room for a wrong distribution
    on = _grid(n, b)
    on[0], on[-1] = -top, top  # on the bound, both ends: a ``>=`` would flag it
    assert _violations(size, on) == []
    beyond = _grid(n, b)
    beyond[0] = -np.nextafter(top, 1.0)  # one float64 step past it, on the side np.abs must fold
    assert _violations(size, beyond) == [f"l/{part}: |w| max {-beyond[0]:.4g} > bound {top:.4g}"]
    far = _grid(n, b)
    far[n // 2] = 1.5 * b  # past it in the middle of the leaf: every value is looked at, not the ends
    assert _violations(size, far) == [f"l/{part}: |w| max {1.5 * b:.4g} > bound {top:.4g}"]


def test_support_holds_genuine_float32_draws_at_the_lower_end():
    """JAX's and torch's draws include float32(-b) itself, which is past -1/28 in float64."""
    key5 = init_params(jax.random.PRNGKey(5))
    assert float(np.min(key5["linear_relu_stack_0"]["kernel"])) == -float(np.float32(1 / 28))
    assert uniform_init_violations(key5) == []
    draw = np.asarray(torch_linear_init(784)(jax.random.PRNGKey(5), (784, 512)), np.float64)
    draw[0, 0] = -1 / 28 * (1 + 1e-6)  # but not a value past float32(-b): that is not a float32 draw of U(-b, b)
    assert _violations("784x512 kernel", draw.ravel()) == [
        f"l/kernel: |w| max {1 / 28 * (1 + 1e-6):.4g} > bound {float(np.float32(1 / 28)):.4g}"]


# --- the range filled: max |w| >= b * INIT_FALSE_ALARM**(1/n) ------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_range_filled(size):
    n, b, part = _params(size)
    low = b * INIT_FALSE_ALARM ** (1 / n)
    assert 0.25 * b < low < b
    on = _grid(n, b) * (low / b)
    on[-1] = low  # exactly on it: a ``<=`` would flag it
    assert _violations(size, on) == []
    short = on.copy()
    short[-1] = np.nextafter(low, 0.0)
    largest = np.abs(short).max()
    assert _violations(size, short) == [f"l/{part}: |w| max {largest:.4g} fills only {largest / b:.4g} of the bound {b:.4g}"]
    assert INIT_FALSE_ALARM == 1e-6  # the rate the docstring derives every bound for


# --- the mean: |mean| <= 5 b / sqrt(3 n) -------------------------------------------------------------

def _shifted(n: int, b: float):
    """A leaf family with mean increasing in t, support and variance inside their bounds for every t used."""
    g = _grid(n, b)
    if n >= 100:  # bend the grid, its ends fixed: mean ~ 2/3 t b, the variance grows by 4/45 t^2 b^2 only
        return lambda t: g + t * b * (1 - (g / b) ** 2)
    return lambda t: t * b + (1 - t) * g  # few values: the mean bound is near b, squeeze towards it


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sign", [1, -1])
def test_mean(size, sign):
    n, b, part = _params(size)
    bound = 5 * b / math.sqrt(3 * n)
    make = _shifted(n, b)
    mean = lambda w: float(np.mean(w))  # noqa: E731

    def at(target):
        return sign * make(_bisect(make, 0.0, 0.99, mean, target))

    assert _violations(size, at(bound * (1 - REL))) == []
    out = at(bound * (1 + REL))
    assert _violations(size, out) == [f"l/{part}: mean {out.mean():.3g}"]


# Where numpy's pairwise sum can land on the bound: at the 512x512 layer's bias and the 512x10 kernel its last
# additions round ties to even and step over it, whatever the values (_on tries 200 leaves).
@pytest.mark.parametrize("size", ["784x512 bias", "512x10 bias"])
def test_mean_exactly_on_the_bound_passes(size):
    """A ``>=`` for the ``>`` would flag it."""
    n, b, part = _params(size)
    bound = 5 * b / math.sqrt(3 * n)
    on = _on(_shifted(n, b), 0.0, 0.99, lambda w: float(np.mean(w)), bound, b)
    assert abs(on.mean()) == bound and _violations(size, on) == []


# --- the variance: |var - b^2/3| <= 5 b^2 sqrt(4/45) / sqrt(n) -------------------------------------------

def _spread(n: int, b: float):
    """sign(g) b |g/b|^(1/t): variance b^2/(2/t + 1) increasing in t, mean 0, the ends stay near +-b."""
    u = _grid(n, b) / b
    return lambda t: np.sign(u) * b * np.abs(u) ** (1 / t)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("side", [1, -1])
def test_variance(size, side):
    n, b, part = _params(size)
    width = 5 * b * b * math.sqrt(4 / 45) / math.sqrt(n)
    if side == -1 and width >= b * b / 3:
        pytest.skip(f"{n} values: no variance is below the bound (it is wider than b^2/3)")
    make = _spread(n, b)
    var = lambda w: float(np.var(w))  # noqa: E731

    def at(target):
        return make(_bisect(make, 0.3, 30.0, var, target))

    assert _violations(size, at(b * b / 3 + side * width * (1 - REL))) == []
    out = at(b * b / 3 + side * width * (1 + REL))
    assert _violations(size, out) == [f"l/{part}: variance {out.var():.4g}, expected {b * b / 3:.4g}"]


def test_variance_exactly_on_the_bound_is_no_float64_input():
    """Why the variance check's ``>`` and ``>=`` agree on every input at the MLP's sizes (an equivalent mutant):
    near the bound, var and b^2/3 are within 2x of each other, so ``var - b^2/3`` is exact (Sterbenz) and equals
    the bound only if var == b^2/3 + bound exactly; that sum is no float64 at five sizes, and at the sixth (10
    values) numpy's var, fl(S / 10) for a float64 sum of squares S, steps over it."""
    for size in SIZES:
        n, b, part = _params(size)
        third = b * b / 3
        width = 5 * b * b * math.sqrt(4 / 45) / math.sqrt(n)
        near = [third + width, np.nextafter(third + width, 0.0), np.nextafter(third + width, 1.0)]
        hits = [float(v) for v in near if v - third == width]
        if n != 10:
            assert hits == [], size
            continue
        assert len(hits) == 1, size
        s_low = np.float64(hits[0] * 10)
        while s_low / 10 >= hits[0]:
            s_low = np.nextafter(s_low, 0.0)
        s_high = np.nextafter(s_low, 1.0)  # the next float64 sum: fl(S/10) is monotone in S
        assert s_low / 10 < hits[0] < s_high / 10, size


# --- non-finite and constant leaves ------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite(size, bad):
    n, b, part = _params(size)
    w = _grid(n, b)
    w[n // 3] = bad
    assert _violations(size, w) == [f"l/{part}: 1 non-finite values"]  # and no other check runs on it
    w[-1] = bad
    assert _violations(size, w) == [f"l/{part}: 2 non-finite values"]


@pytest.mark.parametrize("size", SIZES)
def test_constant(size):
    n, b, part = _params(size)
    problems = _violations(size, np.full(n, 0.5 * b))
    assert problems[0] == f"l/{part}: all {n} values equal {0.5 * b:.4g}", problems
    assert _violations(size, np.zeros(n))[0] == f"l/{part}: all {n} values equal 0"
    two = np.full(n, 0.5 * b)
    two[0] = -0.5 * b  # two values are not constant (the other checks may still object)
    assert not any("values equal" in p for p in _violations(size, two))


def test_one_value_leaf():
    """A 1-unit output layer's bias: one genuine value is not "constant", nor too few for the statistics."""
    b = 1 / math.sqrt(512)
    layer = {"kernel": _grid(512, b).reshape(512, 1), "bias": np.array([0.7 * b])}
    assert uniform_init_violations({"l": layer}) == []


@pytest.mark.parametrize("layer,said", [
    ({"kernel": np.zeros((512, 10)), "bias": np.zeros(0)}, "l/bias: empty"),
    ({"kernel": np.zeros((0, 10)), "bias": np.zeros(10)}, "l: no (fan_in, fan_out) kernel"),
    ({"bias": np.zeros(10)}, "l: no (fan_in, fan_out) kernel"),
    ({"kernel": np.zeros(10), "bias": np.zeros(10)}, "l: no (fan_in, fan_out) kernel"),
], ids=["empty leaf", "no fan-in", "no kernel", "1-d kernel"])
def test_degenerate_layers_are_named_not_crashed_on(layer, said):
    """min/max of an empty leaf and 1/sqrt(0) used to raise: a layer the bound cannot apply to is a finding."""
    problems = uniform_init_violations({"l": layer})
    assert any(p.startswith(said) for p in problems), problems


# --- the real wrong initialisations, drawn ------------------------------------------------------------

def _mlp(init) -> dict:
    """{layer: {"kernel", "bias"}} of the 784-512-512-10 MLP, ``init(key, fan_in, fan_out, part, shape)``."""
    rng = np.random.default_rng(0)
    dims = [(784, 512), (512, 512), (512, 10)]
    return {f"l{i}": {"kernel": init(rng, a, c, "kernel", (a, c)), "bias": init(rng, a, c, "bias", (c,))}
            for i, (a, c) in enumerate(dims)}


def _uniform(bound):
    return lambda rng, a, c, part, shape: rng.uniform(-bound(a, c, part), bound(a, c, part), shape)


WRONG = {
    # Flax's defaults: lecun_normal kernels (truncated normal, variance 1/fan_in) and zero biases
    "flax default": lambda rng, a, c, part, shape: (
        np.zeros(shape) if part == "bias"
        else np.asarray(jax.nn.initializers.lecun_normal()(jax.random.PRNGKey(a + c), shape), np.float64)),
    "fan_out for fan_in": _uniform(lambda a, c, part: 1 / math.sqrt(c)),
    "glorot uniform": _uniform(lambda a, c, part: math.sqrt(6 / (a + c))),
    "lecun uniform": _uniform(lambda a, c, part: math.sqrt(3 / a)),
    "first layer's bound everywhere": _uniform(lambda a, c, part: 1 / 28),
    "bias 10x too small": _uniform(lambda a, c, part: (0.1 if part == "bias" else 1) / math.sqrt(a)),
    "U(0, b)": lambda rng, a, c, part, shape: rng.uniform(0, 1 / math.sqrt(a), shape),
}


@pytest.mark.parametrize("what", WRONG)
def test_real_wrong_initialisations_are_flagged(what):
    params = _mlp(WRONG[what])
    problems = uniform_init_violations(params)
    layers = {p.split("/")[0] for p in problems}
    if what in ("fan_out for fan_in", "first layer's bound everywhere"):  # l1 is 512x512: fan_in is fan_out, 1/28 ok
        assert {"l0", "l2"} <= layers if what == "fan_out for fan_in" else {"l1", "l2"} <= layers, problems
    else:
        assert layers == {"l0", "l1", "l2"}, problems
    if what == "bias 10x too small":  # the 10-value bias is caught by the range check, not by its moments
        assert any(p.startswith("l2/bias: |w| max") and "fills only" in p for p in problems), problems


@pytest.mark.parametrize("seed", range(4))
def test_genuine_initialisations_pass(seed):
    torch.manual_seed(seed)
    assert uniform_init_violations(H.torch_to_flax(TorchNeuralNetwork().state_dict())) == []
    assert uniform_init_violations(init_params(jax.random.PRNGKey(seed))) == []
