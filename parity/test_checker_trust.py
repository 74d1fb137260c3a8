"""No wrong PASS: ports that are wrong in ways the derived tolerances once hid, through the public ``check_port``.

Issue 29's classes: a port whose dropout never drops, shares one mask across the batch, drops in eval mode,
or has another rate (the checker once swapped its own masks into every Flax Dropout, so it checked its own
dropout, not the port's); a quantity whose float32 and float64 runs differ by more than rounding (it once
widened its own tolerance); misuse that once ran silently (``steps=-1``, a torch model without parameters).
Each class in Linen and, where the API differs, NNX. The correct twins pass, so each failure is the bug's.
"""
from __future__ import annotations

import copy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from parity import PortCheckError, check_port
from quickstart_parity_common.convert import kinds_of, state_dict_to_variables


class TorchDrop(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 32)
        self.drop = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.fc(x))))


class LinenDrop(nn.Module):
    bug: str = ""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="fc")(x))
        if self.bug == "never drops":
            x = nn.Dropout(0.5, deterministic=True, name="drop")(x)
        elif self.bug == "one mask per batch":
            x = nn.Dropout(0.5, broadcast_dims=(0,), name="drop")(x, deterministic=not train)
        elif self.bug == "drops in eval":
            x = nn.Dropout(0.5, name="drop")(x, deterministic=False)
        elif self.bug == "rate 0.3":
            x = nn.Dropout(0.3, name="drop")(x, deterministic=not train)
        else:
            x = nn.Dropout(0.5, name="drop")(x, deterministic=not train)
        return nn.Dense(10, name="out")(x)


class NNXDrop(nnx.Module):
    def __init__(self, bug: str = "", rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.fc = nnx.Linear(8, 32, rngs=rngs)
        self.drop = nnx.Dropout(0.5, broadcast_dims=(0,) if bug == "one mask per batch" else (), rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)
        self.bug = bug

    def __call__(self, x):
        x = nnx.relu(self.fc(x))
        if self.bug in ("drops in eval", "never drops"):  # the call's flag overrides .train()/.eval()
            x = self.drop(x, deterministic=self.bug == "never drops")
        else:
            x = self.drop(x)
        return self.out(x)


def nnx_from_torch(model: TorchDrop, bug: str = "") -> NNXDrop:
    """The user's loader: torch's weights into the NNX port ([out, in] -> [in, out])."""
    port = NNXDrop(bug)
    for name in ("fc", "out"):
        layer = getattr(model, name)
        getattr(port, name).kernel[...] = jnp.asarray(layer.weight.detach().numpy().T)
        getattr(port, name).bias[...] = jnp.asarray(layer.bias.detach().numpy())
    return port


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = TorchDrop()
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((16, 8)).astype(np.float32), rng.integers(0, 10, 16))
    return model, state_dict_to_variables(model.state_dict(), kinds=kinds_of(model.named_modules())), batch


def check(case, api, bug, steps=1):
    model, variables, batch = case
    if api == "linen":
        report = check_port(model, LinenDrop(bug), variables, batch, steps=steps)
    else:
        report = check_port(model, nnx_from_torch(model, bug), None, batch, steps=steps)
    print(f"--- {api}: {bug or 'correct'} ---\n{report}")
    return report


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_correct_dropout_port_passes(case, api):
    report = check(case, api, "", steps=2)
    assert report.ok, str(report)
    assert report.diagnosis is None
    drop = [c for c in report.checks if c.phase == "forward (train)" and c.name == "drop"]
    assert drop and drop[0].gap <= drop[0].tol  # the port's own dropout applied torch's mask


@pytest.mark.parametrize("api", ["linen", "nnx"])
@pytest.mark.parametrize("bug, says", [
    ("never drops", "never drops in train mode"),
    ("one mask per batch", "shares one mask along dims (0,)"),
    ("drops in eval", "drops in eval mode"),
])
def test_wrong_dropout_port_fails_naming_it(case, api, bug, says):
    report = check(case, api, bug)
    assert not report.ok
    assert any(says in p for p in report.problems), str(report)
    mode = "forward (eval)" if bug == "drops in eval" else "forward (train)"
    first = report.first_divergence(mode)
    assert first is not None and first.name == "drop", str(report)


def test_other_rate_fails(case):
    report = check(case, "linen", "rate 0.3")
    assert not report.ok
    assert any("rate 0.3" in p for p in report.problems), str(report)
    assert report.first_divergence("forward (train)").name == "drop"


def test_eval_dropout_does_not_widen_its_tolerance(case):
    """Issue 29's report printed ``drop: ... 2.353e+00 <= tol 8.615e+00``: the float32 and float64 JAX runs drew
    other masks, so the JAX "rounding error" was the bug's size. The float64 runs disagreeing fails the check."""
    report = check(case, "linen", "drops in eval")
    drop = next(c for c in report.checks if c.phase == "forward (eval)" and c.name == "drop")
    assert not drop.ok
    assert "float64 runs disagree" in drop.reason or drop.gap > drop.tol, str(drop)


class Float32Only(nn.Module):
    """A port that computes something else in float32 only (a dtype-dependent branch): its float32-vs-float64
    error is the bug, not rounding, and must not become its tolerance."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="fc")(x))
        x = nn.Dropout(0.5, name="drop")(x, deterministic=not train)
        y = nn.Dense(10, name="out")(x)
        return y * 1.2 if y.dtype == jnp.float32 else y


def test_float32_only_difference_is_not_rounding(case):
    model, variables, batch = case
    report = check_port(model, Float32Only(), variables, batch, steps=0)
    print(report)
    assert not report.ok
    out = next(c for c in report.checks if c.phase == "forward (eval)" and c.name == "output")
    assert out.gap <= out.tol  # the old verdict: inside the inflated bound
    assert "more than rounding can" in out.reason, str(out)


class FixedDtype(nn.Module):
    """HF's Flax modules fix their computation dtype: a float64 run that is a float32 run in disguise."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="fc", dtype=jnp.float32)(x))
        x = nn.Dropout(0.5, name="drop")(x, deterministic=not train)
        return nn.Dense(10, name="out", dtype=jnp.float32)(x)


def test_float64_run_in_float32_is_named(case):
    model, variables, batch = case
    report = check_port(model, FixedDtype(), variables, batch, steps=0)
    assert not report.ok
    assert any("float64 run computed its output in float32" in p for p in report.problems), str(report)


class ClonedDtype(nn.Module):
    """A module with a ``dtype`` field (as HF's are): the checker runs each precision in its own."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="fc", dtype=self.dtype)(x))
        x = nn.Dropout(0.5, name="drop")(x, deterministic=not train)
        return nn.Dense(10, name="out", dtype=self.dtype)(x)


def test_module_with_dtype_field_runs_float64(case):
    model, variables, batch = case
    assert check_port(model, ClonedDtype(), variables, batch, steps=1).ok


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_bad_steps_refused(case, steps):
    model, variables, batch = case
    with pytest.raises(PortCheckError, match="steps must be an integer >= 0"):
        check_port(model, LinenDrop(), variables, batch, steps=steps)


def test_torch_model_without_parameters_refused(case):
    _, variables, batch = case
    with pytest.raises(PortCheckError, match="no trainable parameters"):
        check_port(torch.nn.ReLU(), LinenDrop(), variables, batch)


def test_port_that_does_not_run_is_refused(case):
    model, variables, _ = case
    x = np.ones((4, 5), np.float32)  # 5 features where both models take 8
    with pytest.raises(PortCheckError, match="does not run on the given inputs"):
        check_port(model, LinenDrop(), variables, (x, np.zeros(4, int)))


def test_ignore_pattern_matching_nothing_fails(case):
    model, variables, batch = case
    report = check_port(model, LinenDrop(), variables, batch, steps=0, ignore={"dorp": "a typo"})
    assert not report.ok
    assert any("'dorp' matches no torch module" in p for p in report.problems), str(report)


def test_square_captures_keep_their_layout():
    """A (B, T, C) output with T == C is compared as is, an NCHW one with C == H == W moved to NHWC: the layout
    is the one the float64 runs agree on, not the first whose shape fits."""
    from parity.checker import _check  # noqa: PLC0415 -- the comparison itself, on hand-made arrays

    rng = np.random.default_rng(0)
    seq = rng.standard_normal((2, 4, 4))  # (B, T, C), T == C
    assert _check("f", "attn", seq, seq, seq, seq).gap == 0.0
    nchw = rng.standard_normal((2, 3, 3, 3))
    nhwc = np.moveaxis(nchw, 1, -1)
    assert _check("f", "conv", nchw, nchw, nhwc, nhwc).gap == 0.0
    wrong = _check("f", "conv", nchw, nchw, nhwc + 1, nhwc + 1)  # neither layout agrees: still fails
    assert not wrong.ok


class Scaled(nn.Module):
    """A bug with no catalogued cause: every layer right, the output scaled."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32, name="fc")(x))
        x = nn.Dropout(0.5, name="drop")(x, deterministic=not train)
        return nn.Dense(10, name="out")(x) * 1.01


def test_unknown_causes_are_not_misdiagnosed(case):
    model, variables, batch = case
    report = check_port(model, Scaled(), variables, batch, steps=0)
    assert not report.ok and report.diagnosis.cause is None
    assert "after its last layer" in str(report.diagnosis), str(report)
    scaled = {"params": {**variables["params"], "fc": {**variables["params"]["fc"],
                                                       "kernel": variables["params"]["fc"]["kernel"] * 1.01}}}
    report = check_port(model, LinenDrop(), scaled, batch, steps=0)
    assert report.first_divergence().name == "fc.weight"
    assert report.diagnosis.cause is None and "no known cause (ruled out: reshaped" in str(report.diagnosis), str(report)


def test_tolerance_is_the_derived_bound():
    """tol = FACTOR (2) x (|t32 - t64| + |j32 - j64|) + 64 float64 ulps of the size, on hand-made values, so the bound
    itself is what is tested, not a bug far beyond it: errors of 1e-7 on each side give 4e-7; a 5e-7 gap fails."""
    from parity.checker import _check  # noqa: PLC0415 -- the comparison itself

    one, err = np.ones(3), 1e-7
    floor = 64 * np.finfo(np.float64).eps
    opposite = _check("f", "x", one + err, one, one - err, one)  # gap 2e-7 = err_t + err_j: the largest rounding allows
    assert opposite.ok and np.isclose(opposite.tol, 4 * err + floor), str(opposite)
    beyond = _check("f", "x", one + err, one, one + err + 5e-7, one + 5e-7)
    assert not beyond.ok and beyond.reason == "float32 gap beyond tolerance" and beyond.gap > beyond.tol


def test_float64_disagreement_fails_what_the_float32_bound_passes():
    """A port off by 0.4% in both precisions whose float32 run also strays 0.5% from its float64 one (below the 1%
    rounding limit): the float32 bound, widened by that stray error, passes it; the float64 runs' disagreement fails."""
    from parity.checker import _check  # noqa: PLC0415 -- the comparison itself, on hand-made arrays

    one = np.ones(4)
    c = _check("f", "x", one + 1e-7, one, one * 1.004 - 5e-3, one * 1.004)
    assert c.gap <= c.tol  # the float32 verdict alone would pass
    assert not c.ok and "float64 runs disagree" in c.reason, str(c)


def test_verdict_edges_by_hand():
    """Each clause of ``Check.reason`` on values that sit on it (the generated mutants of the verdict found these
    unpinned): no layout fails; NaN fails; all-zero quantities (gap 0 = tol 0) pass; a float32 error judged against
    the phase's size (cancellation to zero) passes, against its own tiny size it would not; 1% of the size is the limit."""
    from parity.checker import _check  # noqa: PLC0415

    one = np.ones(4)
    assert not _check("f", "x", one, one, np.ones(5), np.ones(5)).ok  # shapes no layout maps
    assert not _check("f", "x", one * np.nan, one, one, one).ok
    z = np.zeros(3)
    assert _check("f", "x", z, z, z, z).ok  # exact and equal: gap 0 <= tol 0, gap64 0 <= tol64 0, err 0 <= 0
    c = _check("f", "bias", one * 1e-6, one * 1e-15, one * 2e-6, one * 1e-15)  # a gradient that cancels to ~0
    assert not c.ok  # judged against its own size 1e-15 the float32 error is not rounding
    c.rounding_scale = 1.0  # ... against its phase's largest quantity it is
    assert c.ok, c.reason
    ten = one * 10
    assert _check("f", "x", ten + 0.05, ten, ten - 0.04, ten).ok  # errors 0.5% of 10: rounding allowed
    stray = _check("f", "x", ten + 0.05, ten, ten - 0.2, ten)  # JAX's float32 2% from its float64: not rounding
    assert not stray.ok and "more than rounding can" in stray.reason


class TorchEmbed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(12, 8, padding_idx=0)  # as HF's BERT builds its word embeddings
        self.out = torch.nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(self.embed(ids).mean(1))


class FlaxEmbed(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(3, name="out")(nn.Embed(12, 8, name="embed")(ids).mean(1))


def test_padding_idx_found_on_the_gradients():
    """Found on HF BERT, a pair the checker was not written for: torch's ``padding_idx`` row gets no gradient, Flax's
    ``nn.Embed`` has no such row; the forward agrees, the gradient of that one row does not."""
    torch.manual_seed(0)
    model = TorchEmbed()
    ids = np.array([[0, 3, 5, 0], [1, 2, 0, 7]])  # token 0 is the padding index
    variables = state_dict_to_variables(model.state_dict(), kinds=kinds_of(model.named_modules()))
    report = check_port(model, FlaxEmbed(), variables, (ids, np.array([0, 2])), steps=0)
    assert all(c.ok for c in report.checks if c.phase.startswith("forward"))
    assert report.first_divergence().name == "embed.weight" and report.first_divergence().phase == "gradients"
    assert "padding_idx=0" in report.diagnosis.cause, str(report)


# --- randomness the checker cannot share ----------------------------------------------------------------------

class FunctionalDrop(torch.nn.Module):
    """Dropout as a function call (``F.dropout``), as attention layers do inside ``scaled_dot_product_attention``:
    not an ``nn.Dropout``, so no shared mask reaches it."""

    def forward(self, x):
        return torch.nn.functional.dropout(x, 0.5, self.training)


class OwnDraw(nn.Module):
    """A Linen layer drawing its mask from the ``dropout`` stream itself, as HF's attention dropout does."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        if not train:
            return x
        keep = jax.random.bernoulli(self.make_rng("dropout"), 0.5, x.shape)
        return jnp.where(keep, x / 0.5, 0)


class LinenOwnDraw(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = OwnDraw(name="drop")(nn.relu(nn.Dense(32, name="fc")(x)), train)
        return nn.Dense(10, name="out")(x)


@pytest.mark.parametrize("side", ["torch", "JAX"])
def test_dropout_the_checker_cannot_share_is_named_not_misdiagnosed(case, side):
    """HF ViT's attention dropout (SDPA's dropout_p in torch, dot_product_attention's in Flax) made every train-mode
    check fail with a wrong diagnosis ("attention scale missing"): the four runs drew four masks. Now the layer
    that draws is named on the side that draws, eval mode still compares, and the diagnosis says it is the masks."""
    model, variables, batch = case
    if side == "torch":
        model = copy.deepcopy(model)
        model.drop = FunctionalDrop()
        port = LinenDrop()
    else:
        port = LinenOwnDraw()
    report = check_port(model, port, variables, batch, steps=1)
    print(report)
    said = [p for p in report.problems if "draws randomness the checker cannot share" in p]
    assert not report.ok and len(said) == 1 and said[0].startswith(f"forward (train): {side}'s"), str(report)
    assert "'drop'" in said[0], said
    assert "dropout the checker cannot share" in report.diagnosis.cause, str(report)
    assert all(c.ok for c in report.checks if c.phase in ("start", "forward (eval)")), str(report)
