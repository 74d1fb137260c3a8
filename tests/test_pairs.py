"""The model-pair registry (quickstart_parity_pairs): every name on both sides and in the shared formats, and
each entry's data (dropout sites, matrix products, conversion) true of the models it names."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import quickstart_parity_pairs as P
from jax_impl.__main__ import main as jax_main
from quickstart_parity_common.checkpoint import add_checkpoint_flags
from quickstart_parity_common.cli import base_parser
from quickstart_parity_common.models import MODEL_NAMES, MODELS, DropoutSite

NAMES = sorted(P.PAIRS)


def test_one_name_set_everywhere():
    assert set(P.PAIRS) == set(MODELS) == set(P.TORCH_MODELS) == set(P.JAX_MODELS) == set(MODEL_NAMES)
    p = base_parser("x", "", "", ("cpu",))
    add_checkpoint_flags(p)
    assert next(a for a in p._actions if a.dest == "model").choices == MODEL_NAMES
    from parity.__main__ import parser  # noqa: PLC0415 -- parity's parser, beside the quickstarts'

    assert next(a for a in parser()._actions if a.dest == "model").choices == MODEL_NAMES


@pytest.mark.parametrize("where", ["FORMATS", "TORCH_MODELS", "JAX_MODELS"])
def test_a_half_registered_model_fails_naming_where(monkeypatch, where):
    monkeypatch.setattr(P, where, {**getattr(P, where), "ghost": None})
    with pytest.raises(ImportError) as e:
        P._join()
    assert "ghost (not in " in str(e.value) and str(e.value).count("ghost") == 2  # missing in the two others


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="--model ghost: unknown model"):
        P.pair("ghost")


def _torch_model(name):
    torch.manual_seed(0)
    return P.pair(name).torch_module(P.pair(name).hidden)


def _flax(name, sd):
    p = P.pair(name)
    return p.jax.module(p.hidden), p.to_flax({k: v.numpy() for k, v in sd.items()})


@pytest.mark.parametrize("name", NAMES)
def test_dropout_sites_are_the_models_dropouts(name):
    """The sites' names, probabilities and mask widths are what each side's module has: torch's by a hook on
    a batch, Flax's by intercepting its Dropout calls in train mode."""
    p, model = P.pair(name), _torch_model(name)
    seen = {}

    def record(mod, args, out, name):
        seen[name] = DropoutSite(name, args[0].shape[1], mod.p)

    for mname, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            m.register_forward_hook(lambda mod, args, out, n=mname: record(mod, args, out, n))
    model.train()
    model(torch.zeros(3, 784))
    assert tuple(seen.values()) == p.dropout
    module, converted = _flax(name, model.state_dict())
    variables = converted if "params" in converted else {"params": converted}
    flax_seen = {}

    def intercept(next_fun, args, kw, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
            flax_seen[context.module.name] = DropoutSite(context.module.name, args[0].shape[1], context.module.rate)
        return next_fun(*args, **kw)

    kw = {"train": True, "mutable": ["batch_stats"]} if p.dropout else {}
    with nn.intercept_methods(intercept):
        module.apply(variables, jnp.zeros((3, 784)), rngs={"dropout": jax.random.PRNGKey(0)}, **kw)
    assert tuple(flax_seen.values()) == p.dropout


@pytest.mark.parametrize("name", NAMES)
def test_forward_gemms_are_the_weight_matrices(name):
    """The step's first matrix products (the forward pass) are the model's weights in order: a Linear's
    (in, out), a convolution's (in x kh x kw, out), with m a multiple of the batch; FLOPs follow from them."""
    p, model = P.pair(name), _torch_model(name)
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    batch = 5
    gemms = p.step_gemms(batch, p.hidden)
    fwd = gemms[:len(weights)]
    assert [(k, n) for _, k, n in fwd] == [(int(np.prod(w.shape[1:])), w.shape[0]) for w in weights]
    assert all(m % batch == 0 for m, _, _ in fwd)
    assert len(gemms) == 3 * len(weights) - 1  # forward, weight gradients, input gradients but the first layer's
    assert p.format.step_flops(batch) == 2.0 * sum(m * k * n for m, k, n in gemms)


@pytest.mark.parametrize("name", NAMES)
def test_converted_weights_build_the_jax_state_and_match_its_own_init(name):
    """``to_flax`` of the torch module's state_dict has the tree the Flax module initialises, and
    ``create_state`` trains one step from it with ``train_step``."""
    p, model = P.pair(name), _torch_model(name)
    module, converted = _flax(name, model.state_dict())
    fresh = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))
    fresh = fresh if "params" in converted else fresh["params"]
    assert jax.tree_util.tree_map(np.shape, converted) == jax.tree_util.tree_map(np.shape, dict(fresh))
    dev = jax.devices("cpu")[0]
    state = p.jax_state(jax.device_put(converted, dev), 0.1, p.hidden, dev)
    x = jnp.asarray(np.random.default_rng(0).random((4, 784), np.float32))
    state, metrics = p.jax_train_step(state, (x, jnp.arange(4, dtype=jnp.int32)))
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1


def test_checkpoint_flags_refused_for_a_model_without_them(capsys):
    names = [n for n, m in MODELS.items() if not m.resumable]
    assert names, "every model resumable: nothing to refuse"
    with pytest.raises(SystemExit) as e:
        jax_main(["--model", names[0], "--resume", "--checkpoint-dir", "x"])
    assert e.value.code == 2
    assert f"--model {names[0]}: --checkpoint-dir, --resume" in capsys.readouterr().err
