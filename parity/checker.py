"""The port checker: does a Flax port compute what a torch model computes, and where does it first not?

``check_port(torch_model, flax_model, variables, batch)`` runs both sides on the same inputs and the same
weights, in float32 and in float64 each (four runs), and reports:

- **start**: every torch parameter and persistent buffer (its ``state_dict``) against the port's leaf it
  was converted to, in the layout the values show (``[out, in]`` -> ``[in, out]``, OIHW -> HWIO, GPT-2's
  ``Conv1D`` as is, ...): a conversion that dropped or re-initialised a weight is named here;
- **forward, eval and train mode**: every submodule's output (torch forward hooks; Linen
  ``capture_intermediates`` plus what the module ``sow``s into ``intermediates``; NNX: every submodule's
  ``__call__``), matched by name (``parity.names``: ``h.0`` is ``h/0``, ``h_0``, ``layers_0``...), NCHW
  mapped to NHWC where that is the layout, in torch's execution order, so the first failing entry is
  the **first divergent layer**; in train mode also the running statistics after the forward pass;
- **gradients** of the loss (train mode), per parameter;
- **N optimizer steps** (SGD, Adam or AdamW with ``torch.optim``'s semantics: ``parity.optimizers``):
  per step the loss, every parameter and every buffer.

Tolerances are derived, not guessed. For a compared quantity with values ``t32, t64, j32, j64`` in the
four runs, the triangle inequality gives ``|t32 - j32| <= |t32 - t64| + |t64 - j64| + |j64 - j32|``; for a
correct port ``t64 - j64`` is float64 rounding, so the gap is bounded by what each side's own float32
rounding explains. The tolerance is ``FACTOR`` x that sum plus a float64 floor. A derived bound is only
as honest as its inputs, so a check also fails when

- the two float64 runs disagree beyond float64 rounding (``gap64 > tol64``): a bug is in both precisions,
  and a quantity the two float64 runs disagree on is wrong whatever float32 says;
- a side's float32 run differs from its float64 run by more than rounding can (``ROUNDING_MAX_REL`` of
  the quantity's size: random masks, a fixed dtype, a branch): that error must not widen the bound;
- a float64 run did not compute in float64 (a module that fixes ``dtype=float32``): the report says so
  and how to fix it, instead of deriving a tolerance from a float32 run.

Dropout: each torch ``nn.Dropout`` draws its mask from one numpy stream, and the port's own Flax
``Dropout`` (Linen or NNX) at the matching name applies the same mask with **its own** settings: its
rate, its ``broadcast_dims`` (a per-element torch mask is not shared with a broadcast one: the port gets
a mask of its own shape), and its ``deterministic`` flag (a port that never drops in train mode, or drops
in eval mode, keeps that behaviour and is named in the report).

The checker cannot pass vacuously: no comparable layer, a torch layer without a Flax counterpart (unless
``ignore`` names it with a reason), a weight that does not map, or a non-finite value each fail the report.

Example (runs as is)::

    import numpy as np, torch, flax.linen as nn
    from parity import check_port
    from quickstart_parity_common.convert import kinds_of, state_dict_to_variables

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.out = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 10)
        def forward(self, x):
            return self.out(torch.relu(self.norm(self.fc(x))))

    class FlaxNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.LayerNorm(epsilon=1e-5, name="norm")(nn.Dense(16, name="fc")(x))
            return nn.Dense(10, name="out")(nn.relu(x))

    torch.manual_seed(0)
    model = TorchNet()
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((16, 8)).astype(np.float32), rng.integers(0, 10, 16))
    variables = state_dict_to_variables(model.state_dict(), kinds=kinds_of(model.named_modules()))
    report = check_port(model, FlaxNet(), variables, batch, steps=2)
    assert report.ok, str(report)
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx

from quickstart_parity_common.convert import conv_kernel_to_flax, kinds_of

from . import names as N
from ._engine import Check  # with the tolerance derivation and the masks: the engine parity's runs share
from ._engine import Masks as _Masks
from ._engine import cast_tree as _cast_tree
from ._engine import check as _check
from ._engine import numpy64 as _numpy64
from .optimizers import SGD, Adam, AdamW

__all__ = ["Check", "PortReport", "check_port", "assert_port", "LOSSES", "PortCheckError"]

MASK_SEED = 0


class PortCheckError(ValueError):
    """A misuse of ``check_port`` (bad argument, a model that cannot be run as given): the message says which."""


# --- results -------------------------------------------------------------------------------------------------

@dataclass
class PortReport:
    """What ``check_port`` found; ``ok`` only if every check passed and nothing structural is wrong."""

    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # structural: unmatched names, dtypes, dropout behaviour
    matched: dict[str, str] = field(default_factory=dict)  # torch module -> Flax module, with the rule
    ignored: dict[str, str] = field(default_factory=dict)  # torch module -> the user's reason
    seconds: float = 0.0
    diagnosis: object = None  # parity.diagnose.Diagnosis of the first divergence (None when the report passes)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.checks) and all(c.ok for c in self.checks)

    def phases(self) -> list[str]:
        return list(dict.fromkeys(c.phase for c in self.checks))

    def first_divergence(self, phase: str | None = None) -> Check | None:
        """The first failing check (of ``phase``, or of the whole report in check order)."""
        return next((c for c in self.checks if not c.ok and (phase is None or c.phase == phase)), None)

    def __str__(self) -> str:
        lines = [f"port check: {'PASS' if self.ok else 'FAIL'}"]
        if self.diagnosis is not None:
            lines.append(f"  diagnosis: {self.diagnosis}")
        lines += [f"  problem: {p}" for p in self.problems]
        for phase in self.phases():
            mine = [c for c in self.checks if c.phase == phase]
            bad = [c for c in mine if not c.ok]
            if bad:
                what = "layer" if phase.startswith("forward") else "entry"
                lines.append(f"  {phase}: {len(bad)}/{len(mine)} beyond tolerance; first divergent {what}: {bad[0]}")
            else:
                worst = max(mine, key=lambda c: c.gap / c.tol if c.tol > 0 else 0.0)
                lines.append(f"  {phase}: {len(mine)} compared, all within tolerance (closest: {worst})")
        loose = {t: f for t, f in self.matched.items() if not f.endswith("(exact)")}
        if loose:
            shown = list(loose.items())[:3]
            lines.append(f"  names matched by rule: {len(loose)}, e.g. " + ", ".join(f"{t} -> {f}" for t, f in shown))
        by_reason: dict[str, list[str]] = {}
        for t, why in self.ignored.items():
            by_reason.setdefault(why, []).append(t)
        for why, ts in by_reason.items():
            lines.append(f"  ignored ({why}): " + ", ".join(ts[:4]) + (f" and {len(ts) - 4} more" if len(ts) > 4 else ""))
        return "\n".join(lines)


# --- losses --------------------------------------------------------------------------------------------------

def _ce_torch(out, y):
    return F.cross_entropy(out, y.long())


def _ce_jax(out, y):
    import optax  # noqa: PLC0415 -- optax is imported by parity.optimizers already; kept local to the loss

    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


def _token_ce_torch(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1).long())


def _token_ce_jax(out, y):
    return _ce_jax(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _mse_torch(out, y):
    return F.mse_loss(out, y.to(out.dtype))


def _mse_jax(out, y):
    return jnp.mean((out - y.astype(out.dtype)) ** 2)


# name -> (torch loss(output, targets), JAX loss(output, targets)): each the mean over the batch
LOSSES: dict[str, tuple[Callable, Callable]] = {
    "cross_entropy": (_ce_torch, _ce_jax),  # (B, C) logits, (B,) integer classes
    "token_cross_entropy": (_token_ce_torch, _token_ce_jax),  # (B, T, V) logits, (B, T) integer tokens
    "mse": (_mse_torch, _mse_jax),
}


# --- trees of inputs and outputs -----------------------------------------------------------------------------

def _primary(out):
    """The array a module's output stands for: itself, or the first array of a tuple, dict, ModelOutput or dataclass."""
    if out is None or isinstance(out, (torch.Tensor, jax.Array, np.ndarray)):
        return out
    if isinstance(out, Mapping):
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    elif dataclasses.is_dataclass(out):
        values = [getattr(out, f.name) for f in dataclasses.fields(out)]
    else:
        return None
    for v in values:
        p = _primary(v)
        if p is not None:
            return p
    return None


def _select(out, how):
    if how is None:
        arr = _primary(out)
    elif isinstance(how, str):
        arr = out[how] if isinstance(out, Mapping) else getattr(out, how)
    else:
        arr = how(out)
    if arr is None:
        raise PortCheckError(f"the model's output ({type(out).__name__}) holds no array: give output= to pick one")
    return arr


def _call(fn, inputs, **kw):
    if isinstance(inputs, Mapping):
        return fn(**inputs, **kw)
    if isinstance(inputs, tuple):
        return fn(*inputs, **kw)
    return fn(inputs, **kw)


def _to_torch(tree, dtype):
    """numpy tree -> torch tensors; floating arrays in ``dtype``, integer and bool arrays keep theirs."""
    def one(a):
        a = np.asarray(a)
        t = torch.as_tensor(np.array(a, copy=True))
        return t.to(dtype) if np.issubdtype(a.dtype, np.floating) else t
    return jax.tree_util.tree_map(one, tree)


def _to_jax(tree, dtype):
    def one(a):
        a = np.asarray(a)
        return jnp.asarray(a, dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)
    return jax.tree_util.tree_map(one, tree)


# --- the torch side ------------------------------------------------------------------------------------------

_TORCH_DROPOUTS = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)


def _torch_mask_shape(m, shape):
    if isinstance(m, torch.nn.Dropout):
        return shape
    return tuple(shape[:2]) + (1,) * (len(shape) - 2)  # Dropout1d/2d/3d: one draw per (sample, channel)


def _detached(tree):
    return jax.tree_util.tree_map(lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, tree,
                                  is_leaf=lambda t: isinstance(t, torch.Tensor))


def _torch_forward(model, inputs, train: bool, masks: _Masks | None, dtype, output=None, keep_inputs=None):
    """Run ``model`` (already in ``dtype``); returns (activations in call order, output array, raw output).

    ``keep_inputs``, a dict, receives each module's first call's (args, kwargs): the diagnosis re-runs a layer on them.
    """
    acts: dict[str, np.ndarray] = {}
    handles = []
    model.train(train)
    for name, m in model.named_modules():
        if not name:
            continue
        if train and masks is not None and isinstance(m, _TORCH_DROPOUTS) and m.p > 0:
            def drop(mod, args, out, name=name):
                x = args[0]
                keep = masks.get(name, _torch_mask_shape(mod, tuple(x.shape)), mod.p)
                return x * torch.as_tensor(keep, device=x.device).to(x.dtype) / (1 - mod.p)
            handles.append(m.register_forward_hook(drop))

        def record(mod, args, kwargs, out, name=name):
            arr = _primary(out)
            if isinstance(arr, torch.Tensor) and arr.is_floating_point():
                n = sum(k.split("#")[0] == name for k in acts)
                acts[name if not n else f"{name}#{n + 1}"] = _numpy64(arr)
                if keep_inputs is not None and not n:
                    keep_inputs[name] = (_detached(args), _detached(kwargs))
        handles.append(m.register_forward_hook(record, with_kwargs=True))
    try:
        raw = _call(model, _to_torch(inputs, dtype))
    finally:
        for h in handles:
            h.remove()
    return acts, _select(raw, output), raw


@contextmanager
def _torch_default_dtype(dtype):
    """Tensors the model makes itself (HF's attention masks: ``torch.full(..., finfo(dtype).min)``) in the run's dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _torch_runs(model0, batches, steps, optimizer, loss_fn, dtype, masks, output):
    with _torch_default_dtype(dtype):
        return _torch_runs_in(model0, batches, steps, optimizer, loss_fn, dtype, masks, output)


def _torch_runs_in(model0, batches, steps, optimizer, loss_fn, dtype, masks, output):
    model = copy.deepcopy(model0).to(dtype)
    inputs, y = batches[0]
    keep = dtype == torch.float64  # the float64 run keeps every layer's inputs for the diagnosis
    out = {"eval_inputs": {}, "train_inputs": {}, "model": model if keep else None}
    with torch.no_grad():
        out["eval"], o, _ = _torch_forward(model, inputs, False, masks, dtype, output,
                                           out["eval_inputs"] if keep else None)
        out["eval_out"] = _numpy64(o)
        out["eval_dtype"] = str(o.dtype).replace("torch.", "")
    masks.step = 0
    train_model = copy.deepcopy(model)
    if keep:
        out["model"] = copy.deepcopy(model)  # the float64 model at start (the steps below update ``model``)
    acts, o, _ = _torch_forward(train_model, inputs, True, masks, dtype, output, out["train_inputs"] if keep else None)
    loss_fn(o, _to_torch(y, dtype)).backward()
    out["train"] = acts
    persistent = set(train_model.state_dict())
    out["train_buffers"] = {k: _numpy64(v) for k, v in train_model.named_buffers() if k in persistent}
    out["grads"] = {k: _numpy64(p.grad) for k, p in train_model.named_parameters() if p.grad is not None}
    opt = optimizer.torch(model.parameters())
    out["steps"] = []
    for s in range(steps):
        masks.step = s
        bx, by = batches[s % len(batches)]
        opt.zero_grad()
        _, o, _ = _torch_forward(model, bx, True, masks, dtype, output)
        loss = loss_fn(o, _to_torch(by, dtype))
        loss.backward()
        opt.step()
        out["steps"].append({"loss": np.float64(loss.item()), **{k: _numpy64(v) for k, v in model.state_dict().items()}})
    return out


# --- the Flax side: Linen or NNX behind one interface --------------------------------------------------------

_EVAL_FLAGS = ("deterministic", "use_running_average", "eval")
_TRAIN_FLAGS = ("train", "training", "is_training")


def _mode_kwarg(fn, mode_arg: str | None, train: bool) -> dict:
    if mode_arg is None:
        params = inspect.signature(fn).parameters
        mode_arg = next((a for a in _TRAIN_FLAGS + _EVAL_FLAGS if a in params), None)
        if mode_arg is None:
            return {}
    return {mode_arg: (not train) if mode_arg in _EVAL_FLAGS else train}


def _flat(tree, prefix=()) -> dict[tuple[str, ...], object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def _unflat(flat: Mapping[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = v
    return tree


@dataclass
class _Calls:
    """What the port's dropouts did in one forward pass: name -> (drops?, broadcast_dims, rate)."""

    dropouts: dict[str, tuple[bool, tuple[int, ...], float]] = field(default_factory=dict)


def _drop(x, keep, rate):
    return jnp.where(jnp.asarray(keep), x / (1 - rate), 0).astype(x.dtype) if rate < 1 else jnp.zeros_like(x)


class _Linen:
    """A Linen module with its variables: ``params`` trained, ``batch_stats`` updated in train mode."""

    kind = "Linen"

    def __init__(self, module: nn.Module, variables: Mapping, mode_arg: str | None, dropout_key: int = 0):
        if variables is None or "params" not in variables:
            raise PortCheckError("a Linen port needs its variables with a 'params' collection")
        self.module, self.mode_arg = module, mode_arg
        self.variables = {k: v for k, v in variables.items()}
        self.dropout_key = dropout_key  # the "dropout" stream of draws no nn.Dropout makes (the checker's do not use it)

    def at(self, dtype, dropout_key: int | None = None):
        mod = self.module
        fields = {f.name for f in dataclasses.fields(mod)} if dataclasses.is_dataclass(mod) else set()
        if "dtype" in fields:  # HF's Flax modules fix their computation dtype: run each precision in its own
            mod = mod.clone(dtype=dtype)
        return _Linen(mod, _cast_tree(self.variables, dtype), self.mode_arg,
                      self.dropout_key if dropout_key is None else dropout_key)

    def params(self):
        return _flat(self.variables["params"])

    def stats(self):
        return _flat(self.variables.get("batch_stats", {}))

    def apply(self, params_flat, inputs, train: bool, masks: _Masks, step: int, names_j2t: Mapping[str, str],
              capture: bool, calls: _Calls | None = None):
        """(output, {flax path: capture}, new batch_stats flat, calls) of one forward pass."""
        variables = {**self.variables, "params": _unflat(params_flat)}
        mutable = (["intermediates"] if capture else []) + (["batch_stats"] if train and "batch_stats" in variables else [])
        calls = calls if calls is not None else _Calls()

        def intercept(next_fun, args, kw, context):
            if not (isinstance(context.module, nn.Dropout) and context.method_name == "__call__"):
                return next_fun(*args, **kw)
            mod = context.module
            det = kw.get("deterministic", args[1] if len(args) > 1 else None)
            det = mod.deterministic if det is None else det
            jname = N.flax_name(context.module.path)
            drops = not det and mod.rate > 0
            calls.dropouts[jname] = (drops, tuple(mod.broadcast_dims), float(mod.rate))
            if not drops:
                return next_fun(*args, **kw)
            masks.step = step
            x = args[0]
            keep = masks.for_port(names_j2t.get(jname), tuple(x.shape), mod.broadcast_dims, mod.rate, jname)
            return _drop(x, keep, mod.rate)

        kw = _mode_kwarg(type(self.module).__call__, self.mode_arg, train)
        with nn.intercept_methods(intercept):
            res = _call(lambda *a, **k: self.module.apply(variables, *a, mutable=mutable or False,
                                                          capture_intermediates=capture,
                                                          rngs={"dropout": jax.random.PRNGKey(self.dropout_key)},
                                                          **k), inputs, **kw)
        out, cols = res if mutable else (res, {})
        caps = {}
        if capture:
            for path, value in _flat(cols.get("intermediates", {})).items():
                *mod_path, leaf = path
                base = N.flax_name(mod_path) if leaf == "__call__" else N.flax_name(path)
                values = value if isinstance(value, tuple) else (value,)
                for i, v in enumerate(values):
                    arr = _primary(v)
                    if base and arr is not None and jnp.issubdtype(arr.dtype, jnp.floating):
                        caps[base + (f"#{i + 1}" if i else "")] = arr
        new_stats = _flat(cols["batch_stats"]) if "batch_stats" in cols else None
        return out, caps, new_stats, calls

    def with_stats(self, stats_flat):
        if stats_flat is None:
            return self
        return _Linen(self.module, {**self.variables, "batch_stats": _unflat(stats_flat)}, self.mode_arg, self.dropout_key)


class _NNX:
    """An NNX module: ``nnx.Param`` trained, ``nnx.BatchStat`` updated in train mode (``.train()`` / ``.eval()``)."""

    kind = "NNX"

    def __init__(self, model: nnx.Module):
        self.model = model

    def at(self, dtype, dropout_key: int | None = None):  # NNX draws from the model's own nnx.Rngs: no key to vary
        graphdef, state = nnx.split(self.model)
        model = nnx.merge(graphdef, _cast_tree(state, dtype))
        for _, m in nnx.iter_modules(model):  # a layer built with a fixed dtype computes in the run's
            if getattr(m, "dtype", None) is not None and jnp.issubdtype(m.dtype, jnp.floating):
                m.dtype = dtype
        return _NNX(model)

    def _state(self, kind, model=None):
        return {tuple(str(p) for p in path): v.get_value()
                for path, v in nnx.to_flat_state(nnx.state(self.model if model is None else model, kind))}

    def params(self):
        return self._state(nnx.Param)

    def stats(self):
        return self._state(nnx.BatchStat)

    def apply(self, params_flat, inputs, train, masks, step, names_j2t, capture, calls=None):
        graphdef, params, rest = nnx.split(self.model, nnx.Param, ...)
        # a new State holding ``params_flat`` (traced under grad): the model's own Variables stay untouched
        params = nnx.from_flat_state([(path, var.replace(params_flat[tuple(str(p) for p in path)]))
                                      for path, var in nnx.to_flat_state(params)])
        # fresh Variables for the rest too: BatchNorm writes its statistics, and a Variable made outside a
        # jax.grad trace cannot be written inside it
        rest = nnx.from_flat_state([(path, var.replace(var.get_value())) for path, var in nnx.to_flat_state(rest)])
        model = nnx.merge(graphdef, params, rest)
        model.train() if train else model.eval()
        calls = calls if calls is not None else _Calls()
        paths = {id(m): N.flax_name(p) for p, m in nnx.iter_modules(model) if p}
        caps: dict[str, object] = {}
        classes = {type(m) for _, m in nnx.iter_modules(model)}
        with _patched_calls(classes, paths, caps if capture else None, calls, masks, step, names_j2t):
            out = _call(model, inputs)
        return out, caps, (self._state(nnx.BatchStat, model) if train else None), calls

    def with_stats(self, stats_flat):
        if not stats_flat:
            return self
        graphdef, stats, rest = nnx.split(self.model, nnx.BatchStat, ...)
        stats = nnx.from_flat_state([(path, var.replace(stats_flat[tuple(str(p) for p in path)]))
                                     for path, var in nnx.to_flat_state(stats)])
        return _NNX(nnx.merge(graphdef, stats, rest))


@contextmanager
def _patched_calls(classes, paths, caps, calls, masks, step, names_j2t):
    """Every NNX module class's ``__call__`` records its output (and ``nnx.Dropout`` applies the shared mask)
    while the block runs; restored after, even on error."""
    saved = {}
    active: set[int] = set()  # objects inside their own call: a subclass calling super().__call__ records once

    def wrap(orig):
        def call(self, *args, **kwargs):
            name = paths.get(id(self))
            if id(self) in active or name is None:
                return orig(self, *args, **kwargs)
            active.add(id(self))
            try:
                if isinstance(self, nnx.Dropout):
                    det = kwargs.get("deterministic")
                    det = self.deterministic if det is None else det
                    drops = not det and self.rate > 0
                    calls.dropouts[name] = (drops, tuple(self.broadcast_dims), float(self.rate))
                    if drops:
                        masks.step = step
                        x = args[0]
                        keep = masks.for_port(names_j2t.get(name), tuple(x.shape), self.broadcast_dims, self.rate, name)
                        out = _drop(x, keep, self.rate)
                    else:
                        out = orig(self, *args, **kwargs)
                else:
                    out = orig(self, *args, **kwargs)
            finally:
                active.discard(id(self))
            if caps is not None:
                arr = _primary(out)
                if arr is not None and jnp.issubdtype(arr.dtype, jnp.floating):
                    n = sum(k.split("#")[0] == name for k in caps)
                    caps[name if not n else f"{name}#{n + 1}"] = arr
            return out
        return call

    owners = {next((k for k in cls.__mro__ if "__call__" in vars(k)), None) for cls in classes}
    try:
        for owner in owners - {None}:
            if owner.__module__.startswith("flax.nnx.pytreelib"):  # the metaclass machinery, not a layer
                continue
            saved[owner] = vars(owner)["__call__"]
            owner.__call__ = wrap(saved[owner])
        yield
    finally:
        for owner, orig in saved.items():
            owner.__call__ = orig


def _flax_side(flax_model, variables, mode_arg):
    if isinstance(flax_model, nnx.Module):
        if variables is not None:
            raise PortCheckError("an NNX port holds its own weights: pass variables=None")
        return _NNX(flax_model)
    if isinstance(flax_model, nn.Module):
        return _Linen(flax_model, variables, mode_arg)
    if hasattr(flax_model, "module") and hasattr(flax_model, "params"):  # HF's FlaxPreTrainedModel
        return _Linen(flax_model.module, variables if variables is not None else {"params": flax_model.params}, mode_arg)
    raise PortCheckError(f"the port is a {type(flax_model).__name__}: expected a flax.linen Module (with variables), "
                         "an nnx.Module, or a Hugging Face Flax model")


def _flax_runs(side0, batches, steps, tx, loss_fn, dtype, masks, names_j2t, output, flax_inputs):
    side = side0.at(dtype)
    prep = (lambda a: _to_jax(flax_inputs(a), dtype)) if flax_inputs else (lambda a: _to_jax(a, dtype))
    inputs, y = batches[0]
    out = {}
    params = side.params()
    o, caps, _, calls = side.apply(params, prep(inputs), False, masks, 0, names_j2t, True)
    out["eval"], out["eval_calls"] = {k: _numpy64(v) for k, v in caps.items()}, calls
    sel = _select(o, output)
    out["eval_out"], out["eval_dtype"] = _numpy64(sel), str(sel.dtype)
    o, caps, stats, calls = side.apply(params, prep(inputs), True, masks, 0, names_j2t, True)
    out["train"], out["train_calls"] = {k: _numpy64(v) for k, v in caps.items()}, calls
    out["train_stats"] = {k: _numpy64(v) for k, v in (stats or {}).items()}
    out["start_params"] = {k: _numpy64(v) for k, v in params.items()}
    out["start_stats"] = {k: _numpy64(v) for k, v in side.stats().items()}

    def loss_of(p, s, bx, by, step):
        o, _, stats, _ = s.apply(p, bx, True, masks, step, names_j2t, False)
        return loss_fn(_select(o, output), by), stats

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    first = grad_fn(params, side, prep(inputs), _to_jax(y, dtype), 0)  # the gradient phase is step 1's gradient
    out["grads"] = {k: _numpy64(v) for k, v in first[1].items()}
    opt_state = tx.init(params)
    out["steps"] = []
    for s in range(steps):
        bx, by = batches[s % len(batches)]
        (loss, stats), g = first if s == 0 else grad_fn(params, side, prep(bx), _to_jax(by, dtype), s)
        updates, opt_state = tx.update(g, opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        side = side.with_stats(stats)
        out["steps"].append({"loss": float(loss), "params": {k: _numpy64(v) for k, v in params.items()},
                             "stats": {k: _numpy64(v) for k, v in side.stats().items()}})
    return out


# --- mapping torch's weights onto the port's leaves ----------------------------------------------------------

_LEAF_NAMES = {"weight": ("kernel", "weight", "scale", "embedding", "w"), "bias": ("bias", "b"),
               "running_mean": ("mean", "running_mean"), "running_var": ("var", "running_var"),
               "num_batches_tracked": ("num_batches_tracked",)}


def _layouts(kind: str | None, a: np.ndarray):
    """Candidate (label, fn) layouts of a torch leaf in the port, the kind's own first, then every axis order."""
    n = a.ndim
    first = []
    if n == 2:
        first = [("[out, in] -> [in, out]", lambda w: w.T)] if kind != "gpt2_conv1d" else []
        first += [("as is", lambda w: w), ("transposed", lambda w: w.T)]
    elif n >= 3:
        first = [("OI*k -> *kIO", lambda w: conv_kernel_to_flax(w)),
                 ("IO*k -> *kIO flipped (ConvTranspose)", lambda w: conv_kernel_to_flax(w, transpose=True)),
                 ("as is", lambda w: w)]
    else:
        first = [("as is", lambda w: w)]
    seen = {lab for lab, _ in first}
    for perm in itertools.permutations(range(n)):
        lab = f"axes {perm}"
        if perm != tuple(range(n)) and lab not in seen:
            first.append((lab, lambda w, perm=perm: np.transpose(w, perm)))
    return first


@dataclass
class _Leaf:
    torch_name: str
    flax_path: tuple[str, ...]
    collection: str  # "params" or "stats"
    layout: str
    fn: Callable[[np.ndarray], np.ndarray]


def _map_leaves(report: PortReport, torch_model, module_map: Mapping[str, str], tparams: Mapping[str, np.ndarray],
                tbuffers: Mapping[str, np.ndarray], jparams: Mapping[tuple, np.ndarray], jstats: Mapping[tuple, np.ndarray],
                ignore: Mapping[str, str], layouts: Mapping[str, Callable]) -> list[_Leaf]:
    """Each torch parameter and persistent buffer -> the port's leaf and layout, chosen so that the start values
    agree exactly where they can (the layout the user's conversion used); what cannot map is a problem."""
    kinds = kinds_of(torch_model.named_modules())
    by_module: dict[str, dict[str, tuple[str, tuple]]] = {}
    for coll, tree in (("params", jparams), ("stats", jstats)):
        for path in tree:
            by_module.setdefault(N.flax_name(path[:-1]), {})[path[-1]] = (coll, path)
    leaves = []
    for tname, value in list(tparams.items()) + list(tbuffers.items()):
        module, _, leaf = tname.rpartition(".")
        if N.ignored(module, ignore) is not None or N.ignored(tname, ignore) is not None:
            continue
        if leaf == "num_batches_tracked" and not any("num_batches_tracked" in d for d in by_module.values()):
            continue  # Flax's BatchNorm keeps no counter; torch reads it only with momentum=None
        fmod = module_map.get(module)
        if fmod is None:
            report.problems.append(f"start: torch {tname!r}: its module {module!r} has no Flax counterpart")
            continue
        there = by_module.get(fmod, {})
        cands = [there[n] for n in _LEAF_NAMES.get(leaf, (leaf,)) if n in there]
        want = "stats" if tname in tbuffers else "params"
        cands = [c for c in cands if c[0] == want] or cands
        if not cands:
            report.problems.append(f"start: torch {tname!r} has no leaf in Flax {fmod!r} (it holds {sorted(there)})")
            continue
        coll, path = cands[0]
        j = (jparams if coll == "params" else jstats)[path]
        options = [("user layout", layouts[tname])] if tname in layouts else _layouts(kinds.get(module), value)
        fitting = [(lab, fn) for lab, fn in options if np.shape(fn(value)) == j.shape]
        exact = [(lab, fn) for lab, fn in fitting if np.array_equal(fn(value), j)]
        if not fitting:
            report.problems.append(f"start: torch {tname!r} {tuple(value.shape)} fits no layout of Flax "
                                   f"{N.flax_name(path)} {tuple(j.shape)} (give layouts={{{tname!r}: fn}})")
            continue
        lab, fn = (exact or fitting)[0]
        leaves.append(_Leaf(tname, path, coll, lab, fn))
    return leaves


def _dtype_problems(report, t64, j64):
    for side, run in (("torch", t64), ("JAX", j64)):
        if run["eval_dtype"] != "float64":
            fix = ("build the Flax module with dtype=jnp.float64 for that run, or give the checker a module with a "
                   "`dtype` field (it clones it per precision)" if side == "JAX" else
                   "remove the hard-coded float32 casts (.float(), dtype=torch.float32) from the model")
            report.problems.append(f"the {side} float64 run computed its output in {run['eval_dtype']}, not float64: a "
                                   f"tolerance derived from it would be a float32 run's; {fix}")


def _first_change(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> str | None:
    return next((k for k in a if k in b and not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))), None)


def _torch_randomness(torch_model, inputs, masks: _Masks, output) -> str | None:
    """The first torch layer (in call order) whose float64 train-mode output changes with torch's own RNG while
    every ``nn.Dropout`` applies the shared masks: a draw the checker cannot share (``F.dropout``,
    ``scaled_dot_product_attention(dropout_p=...)``, noise layers). None when the forward is determined."""
    runs = []
    with _torch_default_dtype(torch.float64), torch.no_grad():
        for seed in (1, 2):
            model = copy.deepcopy(torch_model).to(torch.float64)
            with torch.random.fork_rng(devices=[]):  # the user's RNG state stays as it was
                torch.manual_seed(seed)
                masks.step = 0  # step 0's masks are drawn already: both runs read the same ones
                acts, out, _ = _torch_forward(model, inputs, True, masks, torch.float64, output)
            runs.append({**acts, "output": _numpy64(out)})
    return _first_change(*runs)


def _flax_randomness(side, inputs, masks: _Masks, names_j2t) -> str | None:
    """The first port layer whose float64 train-mode output changes with the Linen ``dropout`` key while every
    ``nn.Dropout`` applies the shared masks (e.g. HF's attention dropout inside ``dot_product_attention_weights``).
    NNX ports draw from their own ``nnx.Rngs``: not varied here."""
    if not isinstance(side, _Linen):
        return None
    runs = []
    with jax.enable_x64(True):
        for key in (0, 1):
            probe = side.at(jnp.float64, dropout_key=key)
            out, caps, _, _ = probe.apply(probe.params(), _to_jax(inputs, jnp.float64), True, masks, 0, names_j2t, True)
            runs.append({**{k: np.asarray(v) for k, v in caps.items()}, "output": np.asarray(_primary(out))})
    return _first_change(*runs)


def _dropout_problems(report, torch_model, j32, t2j: Mapping[str, str]):
    drops = {n: m.p for n, m in torch_model.named_modules() if isinstance(m, _TORCH_DROPOUTS) and m.p > 0}
    for name, (drops_eval, _, _) in j32["eval_calls"].dropouts.items():
        if drops_eval:
            report.problems.append(f"forward (eval): JAX dropout {name!r} drops in eval mode (deterministic=False); "
                                   "torch's dropout is the identity in eval")
    for tname, p in drops.items():
        jname = t2j.get(tname)
        call = j32["train_calls"].dropouts.get(jname) if jname else None
        if call is None:
            continue  # no Flax Dropout module there: the layer check names the difference
        drops_train, bdims, rate = call
        if not drops_train:
            report.problems.append(f"forward (train): JAX dropout {jname!r} never drops in train mode "
                                   f"(deterministic=True) while torch's {tname!r} drops with p={p:g}")
        elif bdims and type(dict(torch_model.named_modules())[tname]) is torch.nn.Dropout:
            report.problems.append(f"forward (train): JAX dropout {jname!r} shares one mask along dims {bdims} "
                                   f"(broadcast_dims) where torch's {tname!r} draws one per element")
        elif abs(rate - p) > 0:
            report.problems.append(f"forward (train): JAX dropout {jname!r} has rate {rate:g}, torch's {tname!r} p={p:g}")


def _optimizer(optimizer, lr):
    if optimizer is None:
        return SGD(lr=lr)
    if not isinstance(optimizer, (SGD, Adam, AdamW)):
        raise PortCheckError(f"optimizer is a {type(optimizer).__name__}: expected parity.optimizers.SGD, Adam or AdamW")
    return optimizer


def _loss(loss):
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise PortCheckError(f"loss {loss!r} is not one of {sorted(LOSSES)} (or give a (torch_fn, jax_fn) pair)")
        return LOSSES[loss]
    if isinstance(loss, tuple) and len(loss) == 2 and all(callable(f) for f in loss):
        return loss
    raise PortCheckError("loss must be a name in parity.checker.LOSSES or a (torch_fn, jax_fn) pair")


def check_port(torch_model: torch.nn.Module, flax_model, variables: Mapping | None, batch, steps: int = 3,
               lr: float = 0.1, more_batches: Sequence = (), mask_seed: int = MASK_SEED, *,
               optimizer: SGD | Adam | AdamW | None = None, loss: str | tuple[Callable, Callable] = "cross_entropy",
               output: str | Callable | tuple | None = None, flax_inputs: Callable | None = None,
               names: N.Rule = None, ignore: Mapping[str, str] | None = None,
               layouts: Mapping[str, Callable] | None = None, mode_arg: str | None = None,
               jax_optimizer=None, torch_threads: int | None = 1) -> PortReport:
    """Check that ``flax_model`` computes what ``torch_model`` computes; see the module docstring for how.

    Args:
      torch_model: the reference (left untouched: the checker works on copies).
      flax_model: the port: a Linen module (with ``variables``), an NNX module (``variables=None``; it holds its
        weights), or a Hugging Face Flax model (its ``module`` and ``params``).
      variables: the Linen port's ``{"params", "batch_stats"?}`` holding torch's weights, e.g.
        ``state_dict_to_variables(sd, kinds=kinds_of(model.named_modules()))``; a conversion bug is named at start.
      batch: ``(inputs, targets)``: ``inputs`` an array, a tuple (positional arguments) or a dict (keyword
        arguments) as the torch model takes them; integer arrays stay integer; ``targets`` for the loss.
      steps: optimizer steps, on ``batch`` then ``more_batches`` in turn (0: forward and gradients only).
      lr: the learning rate of the default optimizer, ``SGD(lr)``.
      optimizer: ``parity.optimizers.SGD``, ``Adam`` or ``AdamW`` (torch.optim semantics on both sides).
      jax_optimizer: the port's own optax transformation, checked against ``optimizer``'s torch one (by default
        ``optimizer.optax()``, its proven twin): where a port's training code builds its own optimizer.
      loss: ``"cross_entropy"`` ((B, C) logits), ``"token_cross_entropy"`` ((B, T, V)), ``"mse"``, or a pair
        ``(torch_fn, jax_fn)`` of ``fn(output, targets) -> scalar``.
      output: which part of each side's output is the prediction: a key or attribute (``"logits"``), a function,
        or a ``(torch_how, flax_how)`` pair; by default the first array (of a tuple, dict or ModelOutput).
      flax_inputs: ``inputs -> the port's inputs`` (NCHW -> NHWC images, HF Flax GPT-2's ``position_ids``).
      names: a rule for torch module paths (``{"torch.prefix": "flax/prefix"}``, ``[(regex, repl)]`` or a
        function) tried before the built-in styles (``parity.names``).
      ignore: ``{torch module glob: reason}``: layers with no counterpart on purpose (a tied head, an activation
        Flax runs as a function); each appears in the report with its reason.
      layouts: ``{torch parameter name: fn(torch array) -> the port's array}`` for a layout of the user's own.
      mode_arg: the Linen ``__call__`` argument that sets train/eval (found among ``train``, ``deterministic``, ...
        when not given).
      mask_seed: seed of the numpy dropout masks shared by both sides.
      torch_threads: torch's intra-op threads during the check (restored after): 1 by default, since check-sized
        batches run several times faster on one thread than on a pool the other runs contend for; None keeps
        torch's setting (a large model).

    Returns:
      A ``PortReport``: ``ok``, ``first_divergence(phase)``, ``problems``, ``matched``, and a readable ``str``.

    Raises:
      PortCheckError: on misuse (a negative ``steps``, a torch model without parameters, an unknown loss ...).
    """
    if torch_threads is not None and (isinstance(torch_threads, bool) or not isinstance(torch_threads, int)
                                      or torch_threads < 1):
        raise PortCheckError(f"torch_threads must be an integer >= 1 or None, got {torch_threads!r}")
    threads = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        return _check_port(torch_model, flax_model, variables, batch, steps, lr, more_batches, mask_seed, optimizer, loss,
                           output, flax_inputs, names, ignore, layouts, mode_arg, jax_optimizer)
    finally:
        torch.set_num_threads(threads)


def _check_port(torch_model, flax_model, variables, batch, steps, lr, more_batches, mask_seed, optimizer, loss, output,
                flax_inputs, names, ignore, layouts, mode_arg, jax_optimizer) -> PortReport:
    import time  # noqa: PLC0415 -- only for the report's seconds

    start = time.perf_counter()
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise PortCheckError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(torch_model, torch.nn.Module):
        raise PortCheckError(f"torch_model is a {type(torch_model).__name__}, expected a torch.nn.Module")
    if not any(p.requires_grad for p in torch_model.parameters()):
        raise PortCheckError(f"the torch model ({type(torch_model).__name__}) has no trainable parameters: there is "
                             "nothing to differentiate or step")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise PortCheckError("batch must be (inputs, targets)")
    torch_loss, jax_loss = _loss(loss)
    optimizer = _optimizer(optimizer, lr)
    tx = optimizer.optax() if jax_optimizer is None else jax_optimizer
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise PortCheckError(f"jax_optimizer is a {type(tx).__name__}, expected an optax.GradientTransformation")
    t_out, j_out = output if isinstance(output, tuple) else (output, output)
    ignore = dict(ignore or {})
    side = _flax_side(flax_model, variables, mode_arg)
    batches = [tuple(batch)] + [tuple(b) for b in more_batches]

    report = PortReport()
    masks = _Masks(mask_seed)  # drawn by the first torch run, reused by the other three
    runs = {}
    for label, dtype in (("t32", torch.float32), ("t64", torch.float64)):
        try:
            runs[label] = _torch_runs(torch_model, batches, steps, optimizer, torch_loss, dtype, masks, t_out)
        except (RuntimeError, TypeError, ValueError, IndexError) as e:  # the user's model or inputs: say which
            if isinstance(e, PortCheckError):
                raise
            raise PortCheckError(f"the torch model does not run on the given inputs and loss ({dtype}): "
                                 f"{type(e).__name__}: {e}") from e

    # names: torch modules (all, in execution order of their first output) -> the port's module paths
    tmods = [n for n, _ in torch_model.named_modules() if n]
    jmods = set()
    probe = side.at(jnp.float32)
    try:
        _, caps, _, _ = probe.apply(probe.params(), _to_jax(flax_inputs(batches[0][0]) if flax_inputs else batches[0][0],
                                                              jnp.float32), True, masks, 0, {}, True)
    except Exception as e:  # noqa: BLE001 -- the port not running on these inputs is the user's to fix: say so
        raise PortCheckError(f"the port does not run on the given inputs: {type(e).__name__}: {e}") from e
    jmods |= {k.split("#")[0] for k in caps}
    jmods |= {N.flax_name(p[:-1]) for p in list(probe.params()) + list(probe.stats())}
    matched = N.match(tmods, sorted(jmods), names)
    t2j = {t: f for t, (f, _) in matched.items()}
    report.matched = {t: f"{f} ({level})" for t, (f, level) in matched.items()}
    j2t = {f: t for t, f in t2j.items()}
    masks.step = 0

    runs["j32"] = _flax_runs(side, batches, steps, tx, jax_loss, jnp.float32, masks, j2t, j_out, flax_inputs)
    with jax.enable_x64(True):  # float64 JAX in this process, only inside this block
        runs["j64"] = _flax_runs(side, batches, steps, tx, jax_loss, jnp.float64, masks, j2t, j_out, flax_inputs)
    t32, t64, j32, j64 = runs["t32"], runs["t64"], runs["j32"], runs["j64"]
    _dtype_problems(report, t64, j64)
    _dropout_problems(report, torch_model, j32, t2j)
    # start: the weights the port holds are torch's
    tparams = {k: _numpy64(v) for k, v in torch_model.named_parameters()}
    persistent = set(torch_model.state_dict())
    tbuffers = {k: _numpy64(v) for k, v in torch_model.named_buffers() if k in persistent}
    leaves = _map_leaves(report, torch_model, t2j, tparams, tbuffers, j32["start_params"], j32["start_stats"], ignore,
                         dict(layouts or {}))
    for leaf in leaves:
        j = (j32["start_params"] if leaf.collection == "params" else j32["start_stats"])[leaf.flax_path]
        t = leaf.fn((tparams | tbuffers)[leaf.torch_name])
        report.checks.append(_check("start", leaf.torch_name, t, t, j, j, N.flax_name(leaf.flax_path)))

    leaf_modules = {n for n, m in torch_model.named_modules() if n and not list(m.children())}
    for pattern in ignore:  # a typo in an ignore list must not silently ignore nothing
        if not any(N.ignored(n, {pattern: ""}) is not None for n in tmods):
            report.problems.append(f"ignore: {pattern!r} matches no torch module")
    for mode in ("eval", "train"):
        phase = f"forward ({mode})"
        n = 0
        missing: list[str] = []
        for name in t32[mode]:
            base, _, call = name.partition("#")
            why = N.ignored(base, ignore)
            if why is not None:
                report.ignored[base] = why
                continue
            other = t2j.get(base)
            other = other + (f"#{call}" if call else "") if other is not None else None
            if other is None or other not in j32[mode]:
                if base in leaf_modules:
                    missing.append(name + (f" (matched {other!r}, which records no output)" if other else ""))
                continue
            report.checks.append(_check(phase, name, t32[mode][name], t64[mode][name], j32[mode][other],
                                        j64[mode][other], other))
            n += 1
        for other in j32[mode]:
            base = other.split("#")[0]
            owns = any(N.flax_name(p[:-1]) == base for p in j32["start_params"])
            if base not in j2t and owns:
                report.problems.append(f"{phase}: JAX layer {other!r} has no torch counterpart")
        if missing:
            report.problems.append(
                f"{phase}: {len(missing)} torch layer(s) have no JAX counterpart: " + ", ".join(map(repr, missing[:8]))
                + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
                + " (a step the port runs as a function: sow its output under that name, or ignore={name: why})")
        if n == 0:
            report.problems.append(f"{phase}: no layer could be compared (no submodule outputs matched by name)")
        if mode == "eval":
            report.checks.append(_check(phase, "output", t32["eval_out"], t64["eval_out"], j32["eval_out"],
                                        j64["eval_out"]))
        else:
            for leaf in (lf for lf in leaves if lf.collection == "stats"):
                if leaf.torch_name in t32["train_buffers"] and leaf.flax_path in j32["train_stats"]:
                    report.checks.append(_check(
                        phase, leaf.torch_name, *(leaf.fn(r["train_buffers"][leaf.torch_name]) for r in (t32, t64)),
                        j32["train_stats"][leaf.flax_path], j64["train_stats"][leaf.flax_path], N.flax_name(leaf.flax_path)))

    for leaf in (lf for lf in leaves if lf.collection == "params"):
        if leaf.torch_name in t32["grads"]:
            report.checks.append(_check("gradients", leaf.torch_name,
                                        *(leaf.fn(r["grads"][leaf.torch_name]) for r in (t32, t64)),
                                        j32["grads"][leaf.flax_path], j64["grads"][leaf.flax_path],
                                        N.flax_name(leaf.flax_path)))
    for s in range(steps):
        phase = f"step {s + 1}"
        tj = [r["steps"][s] for r in (t32, t64, j32, j64)]
        report.checks.append(_check(phase, "loss", tj[0]["loss"], tj[1]["loss"], tj[2]["loss"], tj[3]["loss"]))
        for leaf in leaves:
            coll = "params" if leaf.collection == "params" else "stats"
            if leaf.torch_name in tj[0]:
                report.checks.append(_check(phase, leaf.torch_name, leaf.fn(tj[0][leaf.torch_name]),
                                            leaf.fn(tj[1][leaf.torch_name]), tj[2][coll][leaf.flax_path],
                                            tj[3][coll][leaf.flax_path], N.flax_name(leaf.flax_path)))
    for phase in report.phases():
        mine = [c for c in report.checks if c.phase == phase and not c.note]
        size = max((c.scale for c in mine if np.isfinite(c.scale)), default=float("nan"))
        for c in mine:
            c.rounding_scale = size
    # Only a report failing past eval mode pays for the probe: a draw the checker cannot share makes the four runs
    # disagree in train mode (the float64 gap), so it never hides behind a pass.
    train_failed = any(not c.ok for c in report.checks if c.phase not in ("start", "forward (eval)"))
    random_at = {"torch": _torch_randomness(torch_model, batches[0][0], masks, t_out) if train_failed else None,
                 "JAX": _flax_randomness(side, flax_inputs(batches[0][0]) if flax_inputs else batches[0][0], masks, j2t)
                 if train_failed else None}
    for who, where in random_at.items():
        if where is not None:
            report.problems.append(
                f"forward (train): {who}'s train-mode forward draws randomness the checker cannot share, first seen at "
                f"{where!r} (a draw that is not a Dropout module: F.dropout, scaled_dot_product_attention's "
                "dropout_p, attention dropout inside dot_product_attention): its float32 and float64 runs draw other "
                "masks, so train-mode layers, gradients and steps cannot be compared. Set that dropout to 0 for the "
                "check (e.g. the config's attention_probs_dropout_prob=0.0) or make it a Dropout module")

    if any(where is not None for where in random_at.values()):
        from .diagnose import Diagnosis  # noqa: PLC0415

        where = random_at["torch"] or random_at["JAX"]
        report.diagnosis = Diagnosis(f"forward (train): {where}", "dropout the checker cannot share (see the problem "
                                     "above): train-mode differences are the masks, not the port", "eval mode is "
                                     "compared as usual")
    elif not report.ok and report.checks:
        from .diagnose import Context, diagnose  # noqa: PLC0415 -- only a failing report pays for the diagnosis

        first_input = jax.tree_util.tree_leaves(batches[0][0])[0]
        report.diagnosis = diagnose(report, Context(t64, j64, leaves, optimizer, int(np.shape(first_input)[0])),
                                    torch_model, t2j)
    report.seconds = time.perf_counter() - start
    return report


def assert_port(*args, **kwargs) -> PortReport:
    """``check_port`` for a test suite: returns the report when it passes, raises ``AssertionError`` with the
    whole report as the message when it does not (one line in a user's pytest test)."""
    report = check_port(*args, **kwargs)
    if not report.ok:
        raise AssertionError("\n" + str(report))
    return report
