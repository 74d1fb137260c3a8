"""``python -m parity --model cnn``: both CNNs trained side by side from the same weights, on the same
batches, with the same dropout masks, in float32 and float64, judged step by step.

Dropout masks are drawn once in numpy per step and given to both sides (``parity.checker``'s
injection), since the two RNGs cannot match. Tolerances are the checker's: per step and per
parameter, ``checker.FACTOR x (|torch32 - torch64| + |jax32 - jax64|)`` (plus a float64 floor), so
the float64 runs of both sides are part of the command.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from jax_impl.cnn import CNN as FlaxCNN
from jax_impl.train import make_optimizer
from quickstart_parity_common.convert import state_dict_to_variables, variables_to_state_dict
from reference_torch.cnn import CNN as TorchCNN

from . import harness as H
from .checker import _cast_tree, _check, _Masks, _numpy64, _torch_forward


def _flax_apply(module, variables, x, keep):
    """The CNN's train-mode apply with its one Dropout applying ``keep`` (traced: one compiled step serves every
    step's mask), batch_stats updated."""
    def intercept(next_fun, args, kw, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            rate = context.module.rate
            return jnp.where(keep, args[0] / (1 - rate), 0)
        return next_fun(*args, **kw)

    with nn.intercept_methods(intercept):
        return module.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})


def _torch_train(sd, train: H.Split, test: H.Split, cfg, dtype, masks: _Masks):
    model = TorchCNN()
    model.load_state_dict(sd)
    model = model.to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    losses, evals, secs = [], [], []
    n, bs = len(train.x), cfg.batch_size
    step = 0
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        for i in range(0, n, bs):
            masks.step = step
            opt.zero_grad()
            _, logits, _ = _torch_forward(model, train.x[i:i + bs], True, masks, dtype)
            loss = F.cross_entropy(logits, torch.as_tensor(train.y[i:i + bs]).long())
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        secs.append(time.perf_counter() - start)
        model.eval()
        with torch.no_grad():
            logits = model(torch.as_tensor(test.x, dtype=dtype))
            evals.append(((logits.argmax(1).numpy() == test.y).mean(),
                          F.cross_entropy(logits, torch.as_tensor(test.y).long()).item()))
    state = {k: _numpy64(v) for k, v in model.state_dict().items()}
    return np.array(losses), state, evals, secs


def _jax_train(sd, train: H.Split, test: H.Split, cfg, dtype, masks: _Masks):
    module = FlaxCNN()
    variables = _cast_tree(state_dict_to_variables(sd), dtype)
    params, others = variables["params"], {"batch_stats": variables["batch_stats"]}
    tx = make_optimizer(cfg.lr, cfg.momentum, cfg.weight_decay)
    opt_state = tx.init(params)

    @jax.jit
    def step_fn(params, others, opt_state, x, y, keep):
        def loss_fn(p):
            logits, cols = _flax_apply(module, {"params": p, **others}, x, keep)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), cols

        (loss, cols), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), {"batch_stats": cols["batch_stats"]}, opt_state, loss

    losses, evals, secs = [], [], []
    n, bs = len(train.x), cfg.batch_size
    step = 0
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        for i in range(0, n, bs):
            masks.step = step
            x = train.x[i:i + bs]
            keep = masks.get("dropout", (len(x), 1568), module.dropout)
            params, others, opt_state, loss = step_fn(params, others, opt_state, jnp.asarray(x, dtype),
                                                      jnp.asarray(train.y[i:i + bs]), jnp.asarray(keep))
            losses.append(float(loss))
            step += 1
        secs.append(time.perf_counter() - start)
        logits = np.asarray(module.apply({"params": params, **others}, jnp.asarray(test.x, dtype), train=False), np.float64)
        ce = float(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(test.y)).mean())
        evals.append(((logits.argmax(1) == test.y).mean(), ce))
    final = variables_to_state_dict(jax.device_get({"params": params, **others}))
    state = {k: np.asarray(v, np.float64) for k, v in final.items()}
    return np.array(losses), state, evals, secs


def run(cfg) -> dict:
    """Train both CNNs ``cfg.epochs`` epochs in float32 and float64; print the table; returns the report."""
    train, test = H.real_data(cfg.data_dir)
    torch.manual_seed(cfg.seed)
    sd = TorchCNN().state_dict()
    masks = _Masks(cfg.seed)  # one draw per (step, layer), shared by the four runs
    t32 = _torch_train(sd, train, test, cfg, torch.float32, masks)
    j32 = _jax_train(sd, train, test, cfg, jnp.float32, masks)
    t64 = _torch_train(sd, train, test, cfg, torch.float64, masks)
    with jax.enable_x64(True):
        j64 = _jax_train(sd, train, test, cfg, jnp.float64, masks)
    per_step = [_check("steps", f"loss {s + 1}", t32[0][s], t64[0][s], j32[0][s], j64[0][s]) for s in range(len(t32[0]))]
    params = [_check("final", k, t32[1][k], t64[1][k], j32[1][k], j64[1][k]) for k in t32[1]]
    bad_steps = [c for c in per_step if not c.ok]
    bad_params = [c for c in params if not c.ok]
    steps_per_epoch = -(-len(train.x) // cfg.batch_size)
    print("| epoch | torch acc | jax acc | torch test loss | jax test loss | max step-loss gap | its tol "
          "| torch s | jax s |")
    print("|------:|----------:|--------:|----------------:|--------------:|------------------:|--------:|--------:|------:|")
    for e in range(cfg.epochs):
        mine = per_step[e * steps_per_epoch:(e + 1) * steps_per_epoch]
        worst = max(mine, key=lambda c: c.gap)
        print(f"| {e + 1} | {100 * t32[2][e][0]:.2f}% | {100 * j32[2][e][0]:.2f}% | {t32[2][e][1]:.6f} | {j32[2][e][1]:.6f} "
              f"| {worst.gap:.2e} | {worst.tol:.2e} | {t32[3][e]:.1f} | {j32[3][e]:.1f} |")
    print(f"steps beyond tolerance: {len(bad_steps)}/{len(per_step)}" + (f"; first: {bad_steps[0]}" if bad_steps else ""))
    print(f"parameters and running statistics beyond tolerance after training: {len(bad_params)}/{len(params)}"
          + (f"; first: {bad_params[0]}" if bad_params else ""))
    ok = not bad_steps and not bad_params
    print("PASS" if ok else "FAIL")
    report = {"ok": ok, "model": "cnn", "epochs": cfg.epochs, "torch_accuracy": [a for a, _ in t32[2]],
              "jax_accuracy": [a for a, _ in j32[2]], "torch_epoch_s": t32[3], "jax_epoch_s": j32[3],
              "first_bad_step": str(bad_steps[0]) if bad_steps else None,
              "first_bad_param": str(bad_params[0]) if bad_params else None}
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "parity_cnn.json").write_text(json.dumps(report, indent=2, default=float))
    return report
