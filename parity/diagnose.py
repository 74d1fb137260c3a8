"""Why the first divergent entry of a port check diverges: the known porting mistakes, each computed and tested.

``diagnose(report, ctx)`` looks at the report's first failing check and computes, from torch's own float64 run,
what each known mistake at that place would produce; a candidate that reproduces the port's float64 value
within the check's own derived tolerance is the diagnosis, with the gap as its evidence. A failure no candidate
explains gets "no known cause", with what was ruled out. A passing report gets no diagnosis.

The catalogue, by where the divergence is first seen:

- ``start`` (the port's weight is not torch's in any layout): a kernel reshaped instead of transposed; a weight
  left at zero; a weight left at its random initial value (only described: its statistics, not torch's);
- a layer's output: the layer re-run on its captured float64 inputs with each mistake applied: a norm's epsilon
  (1e-6 Flax's default, 1e-5 torch's, 1e-3, 1e-8, 1e-12), GELU tanh against exact (both ways) and other
  activations, convolution padding (Flax's ``'SAME'``, ``'VALID'``), a convolution kernel reshaped, a dropped bias,
  a Linear weight not transposed, the flatten order (NHWC), softmax over another axis, the attention scale
  missing; the layer's children (an MLP's activation) and then its parents (an attention block) are tried when
  the layer's own mistakes do not match, since a step that runs as a function in Flax shows in the next module;
- BatchNorm's running statistics: Flax's momentum convention given torch's number, the biased batch variance;
- gradients: torch's tied weights kept apart in the port; a loss scaled by a constant (sum instead of mean);
- the first optimizer step: Adam's eps inside the square root, AdamW's decay coupled (L2), Adam's decay
  decoupled, optax's AdamW default decay, bias correction off, the learning rate times or over the batch size.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from quickstart_parity_common.convert import conv_kernel_to_flax

__all__ = ["Diagnosis", "diagnose"]

EPSILONS = (1e-6, 1e-5, 1e-3, 1e-8, 1e-12)


@dataclass
class Diagnosis:
    """The cause of a report's first divergence, or what was ruled out."""

    where: str  # "forward (eval): transformer.h.0.ln_1"
    cause: str | None  # None: no catalogued cause matched
    evidence: str = ""
    ruled_out: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.cause:
            return f"{self.where}: {self.cause} ({self.evidence})"
        more = len(self.ruled_out) - 12
        tried = ", ".join(self.ruled_out[:12]) + (f" and {more} more" if more > 0 else "")
        text = f"{self.where}: no known cause (ruled out: {tried or 'nothing in the catalogue applies to this entry'})"
        return text + (f"; {self.evidence}" if self.evidence else "")


@dataclass
class Context:
    """What the four runs leave for the diagnosis (set by ``check_port``)."""

    t64: dict
    j64: dict
    leaves: list  # checker._Leaf: torch name -> the port's leaf and layout
    optimizer: object
    batch_size: int


def _mx(a) -> float:
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def _gap(cand: np.ndarray, j: np.ndarray) -> float:
    """The smallest max-gap over the layouts a torch array can have in the port (as, NCHW -> NHWC, broadcast)."""
    cand, j = np.asarray(cand, np.float64), np.asarray(j, np.float64)
    best = float("inf")
    options = [cand] + ([np.moveaxis(cand, 1, -1)] if cand.ndim >= 3 else [])
    for c in options:
        try:
            a, b = np.broadcast_arrays(c, j)
        except ValueError:
            continue
        if a.shape == j.shape or c.shape == j.shape:
            best = min(best, _mx(a - b))
    return best


def _tree64(tree):
    return jax.tree_util.tree_map(lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                                  tree, is_leaf=lambda t: isinstance(t, torch.Tensor))


def _primary(out):
    from .checker import _primary as p  # noqa: PLC0415 -- one definition of "the array an output stands for"

    return p(out)


# --- layer mistakes: each yields (label, a mutated float64 copy of the module) ------------------------------

def _flax_same(x_len: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Flax/XLA ``'SAME'`` padding of one axis: total (out - 1) * s + (k - 1) * d + 1 - in, the extra on the high side."""
    out = -(-x_len // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - x_len, 0)
    return total // 2, total - total // 2


class _PaddedConv(torch.nn.Module):
    """A convolution with explicit per-side padding (what Flax's ``'SAME'`` computes)."""

    def __init__(self, conv, same: bool):
        super().__init__()
        self.conv, self.same = conv, same

    def forward(self, x, *args, **kwargs):
        c = self.conv
        if self.same:
            n = x.ndim - 2
            pads = []
            for i in reversed(range(n)):  # F.pad takes the last axis first
                pads += list(_flax_same(x.shape[2 + i], c.kernel_size[i], c.stride[i], c.dilation[i]))
            x = F.pad(x, pads)
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
        return fn(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


class _Replace(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, *args, **kwargs):
        return self.fn(x)


class _SdpaScale(torch.nn.Module):
    """An attention module run with ``F.scaled_dot_product_attention``'s scale replaced (missing: 1; applied twice:
    1/d), where the module calls it (HF's sdpa attentions and most modern ones do)."""

    def __init__(self, attention, power: float):
        super().__init__()
        self.attention, self.power = attention, power

    def forward(self, *args, **kwargs):
        orig = F.scaled_dot_product_attention
        power = self.power

        def sdpa(q, k, v, *a, scale=None, **kw):
            return orig(q, k, v, *a, scale=float(q.shape[-1]) ** -power, **kw)

        torch.nn.functional.scaled_dot_product_attention = sdpa
        try:
            return self.attention(*args, **kwargs)
        finally:
            torch.nn.functional.scaled_dot_product_attention = orig


def _mistakes(m: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    kind = type(m).__name__
    for attr in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(m, attr, None)
        if isinstance(value, float):
            for e in EPSILONS:
                if not np.isclose(e, value, rtol=1e-6):
                    alt = copy.deepcopy(m)
                    setattr(alt, attr, e)
                    yield f"the JAX side's {kind} epsilon is {e:g} where torch's is {value:g}", alt
    approx = getattr(m, "approximate", None)
    if isinstance(m, torch.nn.GELU) or "GELU" in kind:
        own = approx if isinstance(approx, str) else ("tanh" if kind in ("NewGELUActivation", "GELUTanh",
                                                                          "PytorchGELUTanh", "FastGELUActivation")
                                                      else "none")
        other = "none" if own == "tanh" else "tanh"
        yield (f"the JAX side computes {'tanh-approximate' if other == 'tanh' else 'exact'} GELU where torch's is "
               f"{'exact' if own == 'none' else 'tanh-approximate'} ({own!r})"), torch.nn.GELU(approximate=other)
        yield "the JAX side uses ReLU where torch uses GELU", torch.nn.ReLU()
    elif isinstance(m, (torch.nn.ReLU, torch.nn.SiLU, torch.nn.Tanh, torch.nn.Sigmoid)):
        for alt, name in ((torch.nn.GELU(), "exact GELU"), (torch.nn.GELU(approximate="tanh"), "tanh GELU"),
                          (torch.nn.ReLU(), "ReLU"), (torch.nn.SiLU(), "SiLU")):
            if type(alt) is not type(m) or isinstance(m, torch.nn.GELU):
                yield f"the JAX side uses {name} where torch uses {kind}", alt
    if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        yield "the JAX side pads 'SAME' (Flax's default string) where torch pads explicitly", _PaddedConv(m, True)
        yield "the JAX side pads 'VALID' (no padding) where torch pads", _PaddedConv(m, False)
        w = m.weight.detach()
        n = w.ndim - 2
        flax_shape = tuple(w.shape[2:]) + (w.shape[1], w.shape[0])
        reshaped = torch.from_numpy(np.ascontiguousarray(
            np.asarray(w.numpy()).reshape(flax_shape).transpose(n + 1, n, *range(n))))
        alt = copy.deepcopy(m)
        alt.weight = torch.nn.Parameter(reshaped)
        yield "the JAX side's kernel is torch's weight reshaped to [*k, I, O] instead of transposed", alt
    if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and m.bias is not None:
        alt = copy.deepcopy(m)
        alt.bias = None
        yield f"the JAX side's {kind} has no bias (use_bias=False, or the bias dropped)", alt
    if isinstance(m, torch.nn.Linear) and m.weight.shape[0] == m.weight.shape[1]:
        alt = copy.deepcopy(m)
        alt.weight = torch.nn.Parameter(m.weight.detach().T.clone())
        yield "the JAX side's kernel is torch's weight as is ([out, in] not transposed to [in, out])", alt
    if kind == "Conv1D" and hasattr(m, "weight"):  # HF GPT-2: [in, out]
        if m.weight.shape[0] == m.weight.shape[1]:
            alt = copy.deepcopy(m)
            alt.weight = torch.nn.Parameter(m.weight.detach().T.clone())
            yield "the JAX side's kernel is GPT-2's Conv1D weight transposed (it is stored [in, out] already)", alt
        alt = copy.deepcopy(m)
        alt.bias = torch.nn.Parameter(torch.zeros_like(m.bias))
        yield "the JAX side's Conv1D has no bias", alt
    if isinstance(m, torch.nn.Flatten):
        yield ("the JAX side flattens NHWC (channels last) where torch flattens NCHW",
               _Replace(lambda x: torch.flatten(torch.movedim(x, 1, -1), 1) if x.ndim >= 3 else x))
    if isinstance(m, torch.nn.Softmax):
        for d in range(-3, 3):
            if d != m.dim:
                yield f"the JAX side's softmax is over axis {d} where torch's is over {m.dim}", torch.nn.Softmax(dim=d)
    if "Attention" in kind:
        yield "the JAX side's attention has no 1/sqrt(head_dim) scale (attention scale missing)", _SdpaScale(m, 0.0)
        yield "the JAX side's attention scales by 1/head_dim (the 1/sqrt(head_dim) applied twice)", _SdpaScale(m, 1.0)
    if getattr(m, "scale_attn_weights", None) is True:  # HF GPT-2's eager attention
        alt = copy.deepcopy(m)
        alt.scale_attn_weights = False
        yield "the JAX side's attention has no 1/sqrt(head_dim) scale (attention scale missing)", alt
    scaling = getattr(m, "scaling", None)
    if isinstance(scaling, float):
        for factor, what in ((1 / scaling, "missing"), (scaling, "applied twice")):
            alt = copy.deepcopy(m)
            alt.scaling = scaling * factor
            yield f"the JAX side's attention scale is {what}", alt


def _with_children(m: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """``m``'s own mistakes, then each direct child's, applied inside a copy of ``m``."""
    yield from _mistakes(m)
    for cname, child in m.named_children():
        for label, alt_child in _mistakes(child):
            alt = copy.deepcopy(m)
            setattr(alt, cname, alt_child)
            yield f"{cname}: {label}", alt


# --- per phase ------------------------------------------------------------------------------------------------

def _forward(check, ctx: Context, mode: str, t2j, report) -> Diagnosis:
    where = f"{check.phase}: {check.name}"
    if check.name == "output":
        return Diagnosis(where, None, evidence="every compared layer agrees: the port changes the output after its last "
                         "layer (an extra scale, activation or temperature)")
    model = ctx.t64["model"]
    modules = dict(model.named_modules())
    captured = ctx.t64[f"{mode}_inputs"]
    jcaps = ctx.j64[mode]
    tols = {c.name: c.tol for c in report.checks if c.phase == check.phase}
    ruled: list[str] = []
    name = check.name.split("#")[0]
    chain = [name]
    while "." in chain[-1]:
        chain.append(chain[-1].rpartition(".")[0])  # the layer, then its parents
    for target in chain:
        jname = t2j.get(target)
        if target not in modules or target not in captured or jname not in jcaps:
            continue
        args, kwargs = captured[target]
        tol = tols.get(target, check.tol)
        mod = modules[target]
        for label, alt in _with_children(mod):
            alt = alt.double() if isinstance(alt, torch.nn.Module) else alt
            alt.train(mode == "train")
            try:
                with torch.no_grad():
                    out = _primary(alt(*_tree64(copy.deepcopy(args)), **_tree64(copy.deepcopy(kwargs))))
            except (RuntimeError, TypeError, ValueError, IndexError):
                continue
            if not isinstance(out, torch.Tensor):
                continue
            gap = _gap(out.detach().numpy(), jcaps[jname])
            where_label = label if target == name else f"{target}: {label}"
            if gap <= tol:
                return Diagnosis(where, where_label, f"the port's float64 output of {target} matches torch with this "
                                 f"change to {gap:.1e} <= tol {tol:.1e}")
            ruled.append(f"{where_label} ({gap:.1e})")
    return Diagnosis(where, None, ruled_out=ruled)


def _running_stats(check, ctx: Context) -> Diagnosis:
    where = f"{check.phase}: {check.name}"
    module, _, buf = check.name.rpartition(".")
    m = dict(ctx.t64["model"].named_modules()).get(module)
    cap = ctx.t64["train_inputs"].get(module)
    leaf = next((lf for lf in ctx.leaves if lf.torch_name == check.name), None)
    if m is None or cap is None or leaf is None or not isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
        return Diagnosis(where, None)
    j = ctx.j64["train_stats"].get(leaf.flax_path)
    x = cap[0][0].detach().double().numpy()
    axes = (0,) + tuple(range(2, x.ndim))
    n = x.size // x.shape[1]
    mean, var_b = x.mean(axis=axes), x.var(axis=axes)
    var_u = var_b * n / max(n - 1, 1)
    p = m.momentum if m.momentum is not None else 0.1
    r0 = {"running_mean": m.running_mean.double().numpy(), "running_var": m.running_var.double().numpy()}[buf]
    batch = {"running_mean": {"": mean}, "running_var": {"the unbiased": var_u, "the biased": var_b}}[buf]
    ruled = []
    for what, b in batch.items():
        for conv, value in (("torch's", (1 - p) * r0 + p * b), ("Flax's", p * r0 + (1 - p) * b)):
            if conv == "torch's" and what in ("", "the unbiased"):
                continue  # torch's own update
            label = (f"the JAX side updates {buf} with {what} batch variance" if what else f"the JAX side updates {buf}")
            if conv == "Flax's":
                label += f" using Flax's momentum convention with torch's number (momentum={p:g} keeps {p:g} of the " \
                         f"old value; torch's {p:g} is Flax's {1 - p:g})"
            elif what == "the biased":
                label += f" (Flax's BatchNorm does; torch uses the unbiased one, n/(n-1) with n={n})"
            gap = _mx(value - j) if j is not None and np.shape(value) == np.shape(j) else float("inf")
            if gap <= check.tol:
                return Diagnosis(where, label, f"matches to {gap:.1e} <= tol {check.tol:.1e}")
            ruled.append(f"{label} ({gap:.1e})")
    return Diagnosis(where, None, ruled_out=ruled)


def _start(check, ctx: Context) -> Diagnosis:
    where = f"{check.phase}: {check.name}"
    leaf = next((lf for lf in ctx.leaves if lf.torch_name == check.name), None)
    if leaf is None:
        return Diagnosis(where, None)
    t = dict(ctx.t64["model"].state_dict())[check.name].double().numpy()
    j = ctx.j64["start_params" if leaf.collection == "params" else "start_stats"][leaf.flax_path]
    ruled = []
    if t.size == j.size and np.array_equal(t.reshape(j.shape), j):
        return Diagnosis(where, f"the port's {'/'.join(leaf.flax_path)} is torch's weight reshaped to {j.shape} instead "
                                "of transposed", "equal element for element")
    ruled.append("reshaped instead of transposed")
    if t.ndim >= 3 and np.shape(conv_kernel_to_flax(t)) == j.shape:
        unflipped = conv_kernel_to_flax(t.transpose(1, 0, *range(2, t.ndim)))
        if unflipped.shape == j.shape and np.array_equal(unflipped, j):
            return Diagnosis(where, "the port's transposed-convolution kernel is not spatially flipped", "equal")
        ruled.append("a transposed convolution's kernel not flipped")
    if not np.any(j):
        return Diagnosis(where, "the port's weight is all zeros: it was never loaded", "max |port| = 0")
    ruled.append("zeros")
    return Diagnosis(where, None, evidence=f"the port's value has std {np.std(j):.3g} and mean {np.mean(j):.3g} where "
                     f"torch's has {np.std(t):.3g} and {np.mean(t):.3g}: a conversion that skipped this weight leaves "
                     "its random initial value", ruled_out=ruled)


def _gradients(check, ctx: Context, torch_model) -> Diagnosis:
    where = f"{check.phase}: {check.name}"
    ruled = []
    sd = torch_model.state_dict(keep_vars=True)
    target = sd.get(check.name)
    if target is not None:
        tied = [k for k, v in sd.items() if k != check.name and v is target]
        if tied:
            return Diagnosis(where, f"torch ties {check.name} to {', '.join(tied)} (one tensor, both gradients summed); "
                                    "the port keeps them apart", "the torch state_dict shares the storage")
    ruled.append("tied weights")
    leaf = next((lf for lf in ctx.leaves if lf.torch_name == check.name), None)
    module = dict(torch_model.named_modules()).get(check.name.rpartition(".")[0])
    pad = getattr(module, "padding_idx", None) if isinstance(module, torch.nn.Embedding) else None
    if leaf is not None and pad is not None:
        t = leaf.fn(ctx.t64["grads"][check.name])
        j = np.array(ctx.j64["grads"][leaf.flax_path], np.float64)
        if not np.any(t[pad]) and np.any(j[pad]) and _mx(np.delete(t, pad, 0) - np.delete(j, pad, 0)) <= check.tol:
            return Diagnosis(where, f"torch's Embedding has padding_idx={pad}: its row {pad} gets no gradient, the "
                                    "port's embedding trains it", "every other row agrees within tolerance")
        ruled.append("an Embedding's padding_idx")
    if leaf is not None:
        t = leaf.fn(ctx.t64["grads"][check.name])
        j = ctx.j64["grads"][leaf.flax_path]
        denom = float(np.vdot(t, t))
        if denom > 0:
            k = float(np.vdot(t, j)) / denom
            if _mx(k * t - j) <= check.tol and not np.isclose(k, 1.0):
                return Diagnosis(where, f"the port's loss is {k:.4g} x torch's (a sum where torch averages: the batch "
                                        f"is {ctx.batch_size})" if np.isclose(k, ctx.batch_size, rtol=1e-3) else
                                        f"the port's loss is {k:.4g} x torch's", f"every gradient {k:.4g} x torch's")
        ruled.append("a loss scaled by a constant")
    return Diagnosis(where, None, ruled_out=ruled)


def _optimizer_candidates(opt, batch: int) -> Iterator[tuple[str, optax.GradientTransformation]]:
    from .optimizers import SGD, Adam, AdamW  # noqa: PLC0415 -- the spec types the checker was given

    lr = opt.lr
    if isinstance(opt, (Adam, AdamW)):
        b1, b2 = opt.betas
        wd = opt.weight_decay
        yield ("Adam's eps is inside the square root (optax eps_root) where torch adds it after",
               optax.chain(*([optax.add_decayed_weights(wd)] if isinstance(opt, Adam) and wd else []),
                           optax.scale_by_adam(b1, b2, eps=0.0, eps_root=opt.eps),
                           *([optax.add_decayed_weights(wd)] if isinstance(opt, AdamW) and wd else []), optax.scale(-lr)))
        if isinstance(opt, AdamW):
            yield ("AdamW's weight decay is coupled (L2 in the gradient, Adam's) where torch decouples it",
                   optax.chain(optax.add_decayed_weights(wd), optax.adam(lr, b1, b2, opt.eps)))
            yield "optax.adamw's default weight decay (1e-4) where torch's AdamW is " + f"{wd:g}", \
                optax.adamw(lr, b1, b2, opt.eps, weight_decay=1e-4)
        elif wd:
            yield ("Adam's weight decay is decoupled (AdamW's) where torch's Adam adds it to the gradient",
                   optax.adamw(lr, b1, b2, opt.eps, weight_decay=wd))
        yield "Adam without bias correction", optax.chain(
            *([optax.add_decayed_weights(wd)] if isinstance(opt, Adam) and wd else []),
            _no_bias_correction(b1, b2, opt.eps), optax.scale(-lr))
    for factor, what in ((batch, "times"), (1 / batch, "divided by")):
        yield (f"the learning rate is torch's {what} the batch size ({batch})",
               dataclasses.replace(opt, lr=lr * factor).optax())
    if isinstance(opt, SGD) and opt.weight_decay and opt.momentum:
        yield "SGD's weight decay is applied after the momentum (torch adds it to the gradient first)", optax.chain(
            optax.sgd(lr, momentum=opt.momentum), optax.add_decayed_weights(opt.weight_decay * -lr))


def _no_bias_correction(b1, b2, eps):
    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return (zeros, zeros)

    def update(g, state, params=None):
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state[0], g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state[1], g)
        return jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), m, v), (m, v)

    return optax.GradientTransformation(init, update)


def _step(check, ctx: Context) -> Diagnosis:
    where = f"{check.phase}: {check.name}"
    if check.phase != "step 1" or check.name == "loss":
        return Diagnosis(where, None, evidence="the first step agrees: what differs is carried in the optimizer's state "
                         "(a moment's update, AMSGrad's maximum, a momentum buffer) or the learning-rate schedule")
    leaf = next((lf for lf in ctx.leaves if lf.torch_name == check.name and lf.collection == "params"), None)
    if leaf is None:
        return Diagnosis(where, None)
    ruled = []
    with jax.enable_x64(True):
        p0 = {k: jnp.asarray(v) for k, v in ctx.j64["start_params"].items()}
        g = {k: jnp.asarray(v) for k, v in ctx.j64["grads"].items()}
        j1 = ctx.j64["steps"][0]["params"][leaf.flax_path]
        for label, tx in _optimizer_candidates(ctx.optimizer, ctx.batch_size):
            try:
                updates, _ = tx.update(g, tx.init(p0), p0)
            except (TypeError, ValueError):
                continue
            cand = np.asarray(p0[leaf.flax_path] + updates[leaf.flax_path], np.float64)
            gap = _mx(cand - j1)
            if gap <= check.tol:
                return Diagnosis(where, label, f"one step so matches the port's {check.name} to {gap:.1e} <= tol "
                                               f"{check.tol:.1e}")
            ruled.append(f"{label} ({gap:.1e})")
    return Diagnosis(where, None, ruled_out=ruled)


def diagnose(report, ctx: Context, torch_model, t2j) -> Diagnosis | None:
    """The diagnosis of ``report``'s first divergence (None when the report passes or nothing diverged)."""
    first = report.first_divergence()
    if first is None or first.note:
        return None
    if first.phase == "start":
        return _start(first, ctx)
    if first.phase.startswith("forward"):
        mode = "eval" if "eval" in first.phase else "train"
        if first.name.endswith(("running_mean", "running_var")):
            return _running_stats(first, ctx)
        return _forward(first, ctx, mode, t2j, report)
    if first.phase == "gradients":
        return _gradients(first, ctx, torch_model)
    return _step(first, ctx)

