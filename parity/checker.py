"""The port checker: does a Flax module compute what a torch module computes, and where does it first not?

``check_port(torch_module, flax_module, variables, batch)`` runs both sides on the same batch and the
same weights, four times each way (float32 and float64, torch and JAX), and reports:

- **forward, eval and train mode**: every submodule's output, captured with torch forward hooks and
  Flax's ``capture_intermediates`` (plus whatever the Flax module ``sow``s into ``intermediates``
  for steps that are functions there, like ``relu``), matched by name (torch ``block.0.conv`` is Flax
  ``block_0/conv``, ``quickstart_parity_common.convert.flax_path``), NCHW mapped to NHWC before comparing, in torch's
  execution order, so the first failing entry is the **first divergent layer**; in train mode also
  the BatchNorm running statistics after the forward pass;
- **gradients** of the mean cross-entropy (train mode), per parameter in torch's order and layout;
- **N SGD steps**: per step the loss, every parameter and every buffer (running statistics).

Dropout cannot match across RNGs, so in train mode each torch ``nn.Dropout`` and each Flax
``nn.Dropout`` get the same mask, drawn once in numpy (``keep = U[0,1) >= p``) and applied as
``x * keep / (1 - p)`` with each side's own ``p`` / ``rate``; the framework's own scaling is proven
separately (``parity/test_cnn.py``).

Tolerances are derived, not guessed. For every compared quantity ``q``, with ``t32, t64, j32, j64``
its values in the four runs, the triangle inequality gives, elementwise,
``|t32 - j32| <= |t32 - t64| + |t64 - j64| + |j64 - j32|``. For a correct port ``t64 - j64`` is
float64 rounding, so ``max|t32 - j32|`` cannot exceed ``max|t32 - t64| + max|j32 - j64|``, what
each side's own float32 rounding explains. The tolerance is ``FACTOR`` times that sum, plus a
float64 floor (``FLOOR_ULPS`` float64 ulps of the quantity's scale) for quantities float32 computes
exactly. A port bug is in both precisions of the JAX side, so it shows in ``|t32 - j32|`` and not
in ``|j32 - j64|``. (A side whose float32 is deliberately coarse, e.g. TF32 matmuls, raises its own
error and so the tolerance: run the checker with full float32 precision.)

The checker cannot pass vacuously: no comparable layer, a torch layer without a Flax counterpart
(or the reverse), a shape that no layout maps, or a non-finite value (``gap <= tol`` is false for
NaN) each fail the report.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from quickstart_parity_common.convert import flax_path, torch_path, variables_to_state_dict

FACTOR = 2.0  # tolerance = FACTOR x (torch32 - torch64 error + jax32 - jax64 error): the bound, with room
FLOOR_ULPS = 64  # float64 ulps of the quantity's magnitude: the float64 runs' own disagreement
MASK_SEED = 0


@dataclass
class Check:
    """One compared quantity: a layer's output, a gradient, a parameter or buffer after a step, a loss."""

    phase: str  # "forward (eval)", "forward (train)", "gradients", "step 3"
    name: str  # torch's name (module path, parameter or buffer key, "loss")
    gap: float  # max |torch32 - jax32|
    tol: float
    err_torch: float  # max |torch32 - torch64|
    err_jax: float  # max |jax32 - jax64|
    gap64: float  # max |torch64 - jax64|
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.gap) and np.isfinite(self.tol) and self.gap <= self.tol)

    def __str__(self) -> str:
        if self.note:
            return f"{self.name}: {self.note}"
        return (f"{self.name}: max |torch - jax| {self.gap:.3e} {'<=' if self.ok else '>'} tol {self.tol:.3e} "
                f"(= {FACTOR:g} x (torch32 err {self.err_torch:.2e} + jax32 err {self.err_jax:.2e}) vs float64; "
                f"float64 gap {self.gap64:.2e})")


@dataclass
class PortReport:
    """What ``check_port`` found; ``ok`` only if every check passed and nothing structural is wrong."""

    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # structural: unmatched names, nothing compared

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
        return "\n".join(lines)


# --- the four runs -------------------------------------------------------------------------------------------

def _numpy64(t: torch.Tensor) -> np.ndarray:
    """A float64 copy: ``.double().numpy()`` of a float64 tensor would share memory with it, and the
    optimizer's in-place updates would rewrite a recorded step."""
    return np.array(t.detach().cpu().double().numpy(), copy=True)


def _leaf_modules(module: torch.nn.Module) -> set[str]:
    return {name for name, m in module.named_modules() if name and not list(m.children())}


class _Masks:
    """Dropout masks drawn once in numpy, keyed by (step, layer); both sides read the same ones."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.store: dict[tuple[int, str], np.ndarray] = {}
        self.step = 0

    def get(self, name: str, shape: tuple[int, ...], p: float) -> np.ndarray:
        key = (self.step, name)
        if key not in self.store:
            self.store[key] = self.rng.random(shape) >= p
        return self.store[key]


def _torch_forward(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, train: bool, masks: _Masks | None,
                   dtype: torch.dtype):
    """Run ``model`` (already in ``dtype``) on ``x``; returns (activations in call order, logits, loss)."""
    acts: dict[str, np.ndarray] = {}
    handles = []
    model.train(train)
    for name, m in model.named_modules():
        if not name:
            continue
        if train and masks is not None and isinstance(m, torch.nn.Dropout):
            def drop(mod, inputs, output, name=name):
                keep = masks.get(name, tuple(inputs[0].shape), mod.p)
                return inputs[0] * torch.as_tensor(keep, device=inputs[0].device).to(inputs[0].dtype) / (1 - mod.p)
            handles.append(m.register_forward_hook(drop))

        def record(mod, inputs, output, name=name):
            if isinstance(output, torch.Tensor):
                key = name if name not in acts else f"{name}#{sum(k.split('#')[0] == name for k in acts) + 1}"
                acts[key] = _numpy64(output)
        handles.append(m.register_forward_hook(record))
    try:
        logits = model(torch.as_tensor(x, dtype=dtype))
        loss = F.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long))
    finally:
        for h in handles:
            h.remove()
    return acts, logits, loss


def _torch_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: _numpy64(v) for k, v in model.state_dict().items()}


def _torch_buffers(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: _numpy64(v) for k, v in model.named_buffers()}


def _torch_runs(module, batches, steps, lr, dtype, masks):
    model = copy.deepcopy(module).to(dtype)
    x, y = batches[0]
    out = {}
    with torch.no_grad():
        out["eval"], logits, loss = _torch_forward(model, x, y, False, masks, dtype)
        out["eval_logits"] = _numpy64(logits)
    masks.step = 0
    train_model = copy.deepcopy(model)
    acts, logits, loss = _torch_forward(train_model, x, y, True, masks, dtype)
    loss.backward()
    out["train"] = acts
    out["train_buffers"] = _torch_buffers(train_model)
    out["grads"] = {k: _numpy64(p.grad) for k, p in train_model.named_parameters() if p.grad is not None}
    out["param_names"] = [k for k, _ in train_model.named_parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out["steps"] = []
    for s in range(steps):
        masks.step = s
        bx, by = batches[s % len(batches)]
        opt.zero_grad()
        _, _, loss = _torch_forward(model, bx, by, True, masks, dtype)
        loss.backward()
        opt.step()
        out["steps"].append({"loss": np.float64(loss.item()), **_torch_state(model)})
    out["leaves"] = _leaf_modules(model)
    return out


def _takes_train(module: nn.Module) -> bool:
    return "train" in inspect.signature(type(module).__call__).parameters


def _is_dropout(context) -> bool:
    return isinstance(context.module, nn.Dropout) and context.method_name == "__call__" and context.module.rate > 0


def _flax_apply(module: nn.Module, variables, x, masks: Mapping[str, jax.Array], train: bool, capture: bool):
    """One ``apply``; returns (logits, {collection: tree}) with batch_stats/intermediates when asked.

    In train mode each ``nn.Dropout`` named in ``masks`` (torch names) applies that mask instead of
    drawing one; ``masks`` may be traced, so this runs under ``jit``.
    """
    kwargs = {"train": train} if _takes_train(module) else {}
    mutable = (["intermediates"] if capture else []) + (["batch_stats"] if train and "batch_stats" in variables else [])

    def intercept(next_fun, args, kw, context):
        name = torch_path(tuple(context.module.path)) if _is_dropout(context) else None
        if train and name in masks:
            return jnp.where(masks[name], args[0] / (1 - context.module.rate), 0)
        return next_fun(*args, **kw)

    with nn.intercept_methods(intercept):
        out = module.apply(variables, x, mutable=mutable or False, capture_intermediates=capture,
                           rngs={"dropout": jax.random.PRNGKey(0)}, **kwargs)
    return out if mutable else (out, {})


def _dropout_shapes(module: nn.Module, variables, x) -> dict[str, tuple[tuple[int, ...], float]]:
    """Torch name -> (input shape, rate) of every Flax ``nn.Dropout`` called in train mode (abstract evaluation)."""
    shapes: dict[str, tuple[tuple[int, ...], float]] = {}

    def intercept(next_fun, args, kw, context):
        if _is_dropout(context):
            shapes[torch_path(tuple(context.module.path))] = (tuple(args[0].shape), context.module.rate)
        return next_fun(*args, **kw)

    with nn.intercept_methods(intercept):
        jax.eval_shape(lambda v, x: _flax_apply(module, v, x, {}, True, False), variables, x)
    return shapes


def _flax_masks(masks: _Masks, step: int, shapes: Mapping[str, tuple[tuple[int, ...], float]]) -> dict:
    """The step's masks in the Flax layout: torch's (drawn first, NCHW) moved to NHWC where that is the shape."""
    masks.step = step
    out = {}
    for name, (shape, rate) in shapes.items():
        keep = masks.get(name, shape, rate)
        if keep.shape != shape and keep.ndim in (3, 4) and np.moveaxis(keep, 1, -1).shape == shape:
            keep = np.moveaxis(keep, 1, -1)
        out[name] = jnp.asarray(keep)
    return out


def _intermediates(tree) -> dict[str, np.ndarray]:
    """Flax ``intermediates`` flattened to ``{"block_0/conv": array}`` (``__call__`` dropped, root skipped)."""
    out: dict[str, np.ndarray] = {}

    def walk(node, path):
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, path + (k,))
                continue
            p = path if k == "__call__" else path + (k,)
            if not p:
                continue  # the root module's own output: the logits, compared separately
            for i, value in enumerate(v):
                out["/".join(p) + (f"#{i + 1}" if i else "")] = np.asarray(value, np.float64)

    walk(tree, ())
    return out


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a), dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else jnp.asarray(a),
        tree)


def _flax_runs(module, variables, batches, steps, lr, dtype, masks: _Masks):
    variables = _cast(dict(variables), dtype)
    x, y = (jnp.asarray(batches[0][0], dtype), jnp.asarray(batches[0][1]))
    shapes = _dropout_shapes(module, variables, x)
    out = {}
    forward = jax.jit(partial(_flax_apply, module, capture=True), static_argnames="train")
    logits, cols = forward(variables, x, {}, train=False)
    out["eval"], out["eval_logits"] = _intermediates(cols.get("intermediates", {})), np.asarray(logits, np.float64)
    logits, cols = forward(variables, x, _flax_masks(masks, 0, shapes), train=True)
    out["train"] = _intermediates(cols.get("intermediates", {}))
    out["train_vars"] = {"params": variables["params"],
                         **({"batch_stats": cols["batch_stats"]} if "batch_stats" in cols else {})}
    tx = optax.sgd(lr)

    def loss_fn(params, others, bx, by, step_masks):
        logits, cols = _flax_apply(module, {"params": params, **others}, bx, step_masks, True, False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, by).mean(), cols

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    others = {k: v for k, v in variables.items() if k != "params"}
    (_, _), out["grads"] = grad_fn(variables["params"], others, x, y, _flax_masks(masks, 0, shapes))
    params, opt_state = variables["params"], tx.init(variables["params"])
    out["steps"] = []
    for s in range(steps):
        bx, by = batches[s % len(batches)]
        (loss, cols), g = grad_fn(params, others, jnp.asarray(bx, dtype), jnp.asarray(by), _flax_masks(masks, s, shapes))
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        if "batch_stats" in cols:
            others = {**others, "batch_stats": cols["batch_stats"]}
        out["steps"].append({"loss": float(loss), "params": params, **others})
    return out


# --- comparing -----------------------------------------------------------------------------------------------

def _to_flax_layout(t: np.ndarray, j: np.ndarray) -> tuple[np.ndarray | None, str]:
    """torch's array in the JAX side's layout: NCHW -> NHWC, NCL -> NLC, else as is; None if no layout fits."""
    if t.ndim in (3, 4):
        moved = np.moveaxis(t, 1, -1)
        if moved.shape == j.shape:
            return moved, ""
    if t.shape == j.shape:
        return t, ""
    return None, f"shape {tuple(t.shape)} (torch) has no layout matching {tuple(j.shape)} (JAX)"


def _check(phase: str, name: str, t32, t64, j32, j64) -> Check:
    t32, t64, j32, j64 = (np.asarray(a, np.float64) for a in (t32, t64, j32, j64))
    mapped = [_to_flax_layout(t, j32) for t in (t32, t64)]
    if mapped[0][0] is None or j64.shape != j32.shape:
        return Check(phase, name, float("inf"), 0.0, float("nan"), float("nan"), float("nan"),
                     note=mapped[0][1] or "shapes differ")
    t32, t64 = mapped[0][0], mapped[1][0]

    def mx(a):
        return float(np.max(np.abs(a))) if a.size else 0.0

    err_t, err_j = mx(t32 - t64), mx(j32 - j64)
    floor = FLOOR_ULPS * np.finfo(np.float64).eps * max(mx(t64), mx(j64))
    return Check(phase, name, mx(t32 - j32), FACTOR * (err_t + err_j) + floor, err_t, err_j, mx(t64 - j64))


def _compare_named(report: PortReport, phase: str, t32: Mapping, t64: Mapping, j32: Mapping, j64: Mapping,
                   order: Sequence[str], required: set[str], translate: Callable[[str], str]) -> tuple[int, set[str]]:
    """Compare the torch entries in ``order`` with their JAX counterparts; unmatched required entries are problems."""
    n = 0
    matched = set()
    for name in order:
        other = translate(name)
        if other not in j32:
            if name.split("#")[0] in required:
                report.problems.append(f"{phase}: torch {name!r} has no JAX counterpart {other!r}")
            continue
        matched.add(other)
        report.checks.append(_check(phase, name, t32[name], t64[name], j32[other], j64[other]))
        n += 1
    return n, matched


def _layer_name(torch_name: str) -> str:
    base, _, call = torch_name.partition("#")
    return "/".join(flax_path(base)) + (f"#{call}" if call else "")


def check_port(torch_module: torch.nn.Module, flax_module: nn.Module, variables: Mapping, batch,
               steps: int = 3, lr: float = 0.1, more_batches: Sequence = (), mask_seed: int = MASK_SEED) -> PortReport:
    """Check that ``flax_module`` with ``variables`` computes what ``torch_module`` computes.

    Args:
      torch_module: the reference (left untouched: the checker works on copies).
      flax_module: the port; called as ``apply(variables, x)`` or, if its ``__call__`` takes
        ``train``, ``apply(variables, x, train=...)`` with ``batch_stats`` mutable in train mode.
      variables: the port's ``{"params", "batch_stats"?}``, typically
        ``quickstart_parity_common.convert.state_dict_to_variables(torch_module.state_dict())``; a conversion bug
        shows as a divergence at the layer it touches.
      batch: ``(x, y)`` numpy, the same array given to both sides; ``y`` integer class labels for the
        mean cross-entropy whose gradients and SGD steps are compared.
      steps: SGD steps (``torch.optim.SGD(lr)`` vs ``optax.sgd(lr)``), on ``batch`` then ``more_batches``
        in turn.
      mask_seed: seed of the numpy dropout masks shared by both sides.

    Returns:
      A ``PortReport``: ``ok``, ``first_divergence(phase)``, ``problems``, and a readable ``str``.
    """
    x, y = (np.asarray(a) for a in batch)
    batches = [(x, y)] + [tuple(np.asarray(a) for a in b) for b in more_batches]
    runs = {}
    masks = _Masks(mask_seed)  # drawn by the first run, reused by the other three
    for label, dtype in (("32", torch.float32), ("64", torch.float64)):
        runs["t" + label] = _torch_runs(torch_module, batches, steps, lr, dtype, masks)
    runs["j32"] = _flax_runs(flax_module, variables, batches, steps, lr, jnp.float32, masks)
    with jax.enable_x64(True):  # float64 JAX in this process, only inside this block
        runs["j64"] = _flax_runs(flax_module, variables, batches, steps, lr, jnp.float64, masks)
    t32, t64, j32, j64 = runs["t32"], runs["t64"], runs["j32"], runs["j64"]

    report = PortReport()
    required = t32["leaves"]
    for mode in ("eval", "train"):
        phase = f"forward ({mode})"
        n, matched = _compare_named(report, phase, t32[mode], t64[mode], j32[mode], j64[mode], list(t32[mode]),
                                    required, _layer_name)
        for other in j32[mode]:
            if other not in matched:
                report.problems.append(f"{phase}: JAX layer {other!r} has no torch counterpart")
        if n == 0:
            report.problems.append(f"{phase}: no layer could be compared (no submodule outputs matched by name)")
        if mode == "eval":
            report.checks.append(_check(phase, "logits", t32["eval_logits"], t64["eval_logits"], j32["eval_logits"],
                                        j64["eval_logits"]))
        else:
            _compare_states(report, phase, t32["train_buffers"], t64["train_buffers"],
                            j32["train_vars"], j64["train_vars"], only=list(t32["train_buffers"]))
            # Flax's own nn.BatchNorm keeps no num_batches_tracked; torch reads it only with momentum=None.

    grads = [variables_to_state_dict_safe(report, "gradients", {"params": r["grads"]}) for r in (j32, j64)]
    if grads[0] is not None:
        _compare_named(report, "gradients", t32["grads"], t64["grads"], grads[0], grads[1], t32["param_names"],
                       set(t32["param_names"]), lambda k: k)
    for s in range(steps):
        phase = f"step {s + 1}"
        tj = [r["steps"][s] for r in (t32, t64, j32, j64)]
        report.checks.append(_check(phase, "loss", tj[0]["loss"], tj[1]["loss"], tj[2]["loss"], tj[3]["loss"]))
        states = [{k: v for k, v in st.items() if k != "loss"} for st in tj]
        _compare_states(report, phase, states[0], states[1], states[2], states[3], only=list(states[0]))
    return report


def variables_to_state_dict_safe(report: PortReport, phase: str, variables) -> dict | None:
    """``variables_to_state_dict`` in torch layout (float64), or a problem in the report if it does not convert."""
    try:
        return {k: np.asarray(v, np.float64) for k, v in variables_to_state_dict(jax.device_get(variables)).items()}
    except ValueError as e:
        report.problems.append(f"{phase}: the JAX tree does not convert to torch names: {e}")
        return None


def _compare_states(report, phase, t32, t64, jv32, jv64, only):
    j = [variables_to_state_dict_safe(report, phase, {c: v for c, v in jv.items() if c in ("params", "batch_stats")})
         for jv in (jv32, jv64)]
    if j[0] is None:
        return
    required = {k for k in only if not k.endswith("num_batches_tracked")}  # compared where both sides have it
    _compare_named(report, phase, t32, t64, j[0], j[1], only, required, lambda k: k)
