"""``python -m parity --model cnn`` (and every registered pair without calibrated tolerances): both models trained
side by side from the same weights, on the same batches, with the same dropout masks, in float32 and float64,
judged step by step.

The pair comes from the registry (``quickstart_parity_pairs``): each side's constructor, the conversion, and the
dropout sites with their mask shapes. Both sides build their optimizer the way their quickstart does
(``make_optimizer``) and train with their quickstart's loss. Dropout masks are drawn once in numpy per step
and site and given to both sides, since the two RNGs cannot match. Tolerances are the port checker's
(``parity._engine.check``): per step and per parameter, ``FACTOR x (|torch32 - torch64| + |jax32 - jax64|)``
(plus a float64 floor), so the float64 runs of both sides are part of the command. The report has the
shape of the MLP's (``side_by_side.make_report``).
"""
from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jax_impl import train as jtrain
from quickstart_parity_common.convert import state_dict_to_variables, variables_to_state_dict
from quickstart_parity_common.models import DropoutSite
from quickstart_parity_pairs import Pair, pair
from reference_torch import train as ttrain

from . import harness as H
from ._engine import Masks, cast_tree, check, numpy64
from .precision import describe
from .side_by_side import report_head

TABLE_HEADER = ("| epoch | torch acc | jax acc | torch test loss | jax test loss | max step-loss gap | its tol "
                "| torch s | jax s |")
_TORCH_DROPOUTS = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout,
                   torch.nn.FeatureAlphaDropout)


def _sites(p: Pair) -> dict[str, DropoutSite]:
    return {s.name: s for s in p.dropout}


def _torch_masked(model: torch.nn.Module, p: Pair, masks: Masks) -> None:
    """Every Dropout of ``model`` applies the shared mask of its site (in train mode); one the registry does
    not list would draw torch's own masks, so it is refused."""
    sites = _sites(p)
    for name, m in model.named_modules():
        if not isinstance(m, _TORCH_DROPOUTS) or m.p == 0:
            continue
        if name not in sites:
            raise ValueError(f"--model {p.name}: torch's {type(m).__name__} {name!r} is not a dropout site of the "
                             f"registry (quickstart_parity_common.models: {', '.join(sites) or 'none'})")
        if type(m) is not torch.nn.Dropout:  # a site's mask is one draw per feature: nn.Dropout's, not a channel's
            raise ValueError(f"--model {p.name}: dropout site {name!r} is a {type(m).__name__}; the shared masks "
                             "are per feature (nn.Dropout)")
        site = sites[name]

        def drop(mod, args, out, site=site):
            if not mod.training:
                return out
            x = args[0]
            keep = masks.get(site.name, (len(x), site.features), mod.p)
            return x * torch.as_tensor(keep, device=x.device).to(x.dtype) / (1 - mod.p)

        m.register_forward_hook(drop)


def _torch_train(p: Pair, sd, train: H.Split, test: H.Split, cfg, dtype, masks: Masks):
    model = p.torch_module(tuple(cfg.hidden))
    model.load_state_dict(sd)
    model = model.to(dtype)
    _torch_masked(model, p, masks)
    opt = ttrain.make_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay)
    losses, evals, secs = [], [], []
    n, bs = len(train.x), cfg.batch_size
    step = 0
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        model.train()
        for i in range(0, n, bs):
            masks.step = step
            opt.zero_grad()
            logits = model(torch.as_tensor(train.x[i:i + bs]).to(dtype))
            loss = ttrain.loss_fn(logits, torch.as_tensor(train.y[i:i + bs]).long())
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        secs.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():  # the whole test set as one batch, in the run's precision
            logits = model(torch.as_tensor(test.x, dtype=dtype))
            evals.append(((logits.argmax(1).numpy() == test.y).mean(),
                          ttrain.loss_fn(logits, torch.as_tensor(test.y).long()).item()))
    state = {k: numpy64(v) for k, v in model.state_dict().items()}
    return np.array(losses), state, evals, secs


def _flax_apply(p: Pair, module, variables, x, keep: dict, train: bool):
    """``module.apply`` in train or eval mode, its collections besides ``params`` updated in train mode and each
    dropout site applying its ``keep`` mask (traced: one compiled step serves every step's masks);
    returns (logits, the updated collections)."""
    mode = {"train": train} if "train" in inspect.signature(module.__call__).parameters else {}
    mutable = ([c for c in variables if c != "params"] if train else []) or False  # apply returns a pair unless False
    sites = _sites(p)

    def intercept(next_fun, args, kw, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__" and train:
            if context.module.name not in sites:
                raise ValueError(f"--model {p.name}: Flax's Dropout {context.module.name!r} is not a dropout site of "
                                 f"the registry (quickstart_parity_common.models: {', '.join(sites) or 'none'})")
            rate = context.module.rate
            return jnp.where(keep[context.module.name], args[0] / (1 - rate), 0)
        return next_fun(*args, **kw)

    with nn.intercept_methods(intercept):
        out = module.apply(variables, x, **mode, mutable=mutable, rngs={"dropout": jax.random.PRNGKey(0)})
    return out if mutable else (out, {})


def _jax_train(p: Pair, sd, train: H.Split, test: H.Split, cfg, dtype, masks: Masks):
    module = p.jax.module(tuple(cfg.hidden))
    variables = cast_tree(state_dict_to_variables(sd), dtype)
    params, others = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = jtrain.make_optimizer(cfg.lr, cfg.momentum, cfg.weight_decay)
    opt_state = tx.init(params)

    @jax.jit
    def step_fn(params, others, opt_state, x, y, keep):
        def loss_fn(q):
            logits, cols = _flax_apply(p, module, {"params": q, **others}, x, keep, True)
            return jtrain.loss_fn(logits, y), cols

        (loss, cols), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), {**others, **cols}, opt_state, loss

    losses, evals, secs = [], [], []
    n, bs = len(train.x), cfg.batch_size
    step = 0
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        for i in range(0, n, bs):
            masks.step = step
            x = train.x[i:i + bs]
            keep = {s.name: jnp.asarray(masks.get(s.name, (len(x), s.features), s.p)) for s in p.dropout}
            params, others, opt_state, loss = step_fn(params, others, opt_state, jnp.asarray(x, dtype),
                                                      jnp.asarray(train.y[i:i + bs]), keep)
            losses.append(float(loss))
            step += 1
        secs.append(time.perf_counter() - start)
        logits, _ = _flax_apply(p, module, {"params": params, **others}, jnp.asarray(test.x, dtype), {}, False)
        logits = np.asarray(logits, np.float64)
        ce = float(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(test.y)).mean())
        evals.append(((logits.argmax(1) == test.y).mean(), ce))
    final = variables_to_state_dict(jax.device_get({"params": params, **others}))
    state = {k: np.asarray(v, np.float64) for k, v in final.items()}
    return np.array(losses), state, evals, secs


def run(cfg) -> dict:
    """Train both models of ``cfg.model`` ``cfg.epochs`` epochs in float32 and float64; print the table; returns
    the report (also written as ``<out_dir>/parity_<model>.json``)."""
    out = print if cfg.verbose else (lambda *a, **k: None)
    p = pair(cfg.model)
    train, test = H.real_data(cfg.data_dir)
    torch.manual_seed(cfg.seed)
    sd = p.torch_module(tuple(cfg.hidden)).state_dict()
    masks = Masks(cfg.seed)  # one draw per (step, site), shared by the four runs
    t32 = _torch_train(p, sd, train, test, cfg, torch.float32, masks)
    j32 = _jax_train(p, sd, train, test, cfg, jnp.float32, masks)
    t64 = _torch_train(p, sd, train, test, cfg, torch.float64, masks)
    with jax.enable_x64(True):
        j64 = _jax_train(p, sd, train, test, cfg, jnp.float64, masks)
    per_step = [check("steps", f"loss {s + 1}", t32[0][s], t64[0][s], j32[0][s], j64[0][s]) for s in range(len(t32[0]))]
    params = [check("final", k, t32[1][k], t64[1][k], j32[1][k], j64[1][k]) for k in t32[1]]
    bad_steps = [c for c in per_step if not c.ok]
    bad_params = [c for c in params if not c.ok]
    steps_per_epoch = -(-len(train.x) // cfg.batch_size)
    out(TABLE_HEADER)
    out("|------:|----------:|--------:|----------------:|--------------:|------------------:|--------:|--------:|------:|")
    rows = []
    for e in range(cfg.epochs):
        mine = per_step[e * steps_per_epoch:(e + 1) * steps_per_epoch]
        worst = max(mine, key=lambda c: c.gap)
        rows.append({"epoch": e + 1, "torch_accuracy": t32[2][e][0], "jax_accuracy": j32[2][e][0],
                     "torch_test_loss": t32[2][e][1], "jax_test_loss": j32[2][e][1], "max_step_loss_diff": worst.gap,
                     "max_step_loss_tol": worst.tol, "torch_epoch_s": t32[3][e], "jax_epoch_s": j32[3][e]})
        out(f"| {e + 1} | {100 * t32[2][e][0]:.2f}% | {100 * j32[2][e][0]:.2f}% | {t32[2][e][1]:.6f} | {j32[2][e][1]:.6f} "
            f"| {worst.gap:.2e} | {worst.tol:.2e} | {t32[3][e]:.1f} | {j32[3][e]:.1f} |")
    out(f"steps beyond tolerance: {len(bad_steps)}/{len(per_step)}" + (f"; first: {bad_steps[0]}" if bad_steps else ""))
    out(f"parameters and running statistics beyond tolerance after training: {len(bad_params)}/{len(params)}"
        + (f"; first: {bad_params[0]}" if bad_params else ""))
    ok = not bad_steps and not bad_params
    out("PASS" if ok else "FAIL")
    cpu = jax.devices("cpu")[0]
    report = {**report_head(cfg, describe(cfg.precision, "cpu"), "cpu", "cpu", cpu.device_kind),
              "epochs": rows, "max_step_loss_diff": max((c.gap for c in per_step), default=0.0),
              "max_param_diff": max((c.gap for c in params), default=0.0),
              "failures": [f"step {c}" for c in bad_steps] + [f"after training: {c}" for c in bad_params], "ok": ok}
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / f"parity_{cfg.model}.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report
