"""The port checker on pairs nobody here wrote, through the public API, with a user's glue (``examples/ports``):

- HF GPT-2 (``GPT2LMHeadModel`` / ``FlaxGPT2LMHeadModel``, transformers 4.x, tiny random config): PASS, Adam steps;
- HF ResNet, basic and bottleneck layers (``ResNetForImageClassification`` / ``FlaxResNetForImageClassification``):
  every output, gradient and weight agrees; the one true difference, Flax's BatchNorm updating the running
  variance with the biased batch variance, is named; and transformers' own ``from_pretrained(from_pt=True)``
  leaving the basic layers' convolutions at their random initial values is named at the first of them;
- torchvision's ``resnet18`` against a Flax NNX port written from torchvision's source: the same finding.

Then classic porting bugs injected into those correct ports, each named at its layer, parameter or step.
The glue each pair needs is the user's: which output is the prediction, the Flax side's inputs, the names no
rule can guess, the layers Flax runs as functions.
"""
from __future__ import annotations

import copy

import jax.numpy as jnp
import pytest

pytest.importorskip("transformers", reason="the real pairs need transformers 4.x (pyproject's dev extra)")

from examples.ports import gpt2, hf_resnet, torchvision_resnet  # noqa: E402
from parity import Adam, check_port  # noqa: E402

GPT2_IGNORE = gpt2.CHECK["ignore"]
RESNET_IGNORE = hf_resnet.CHECK["ignore"]
TV_IGNORE = torchvision_resnet.CHECK["ignore"]


# --- GPT-2 ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt():
    model = gpt2.make_torch(0)  # embedding and residual dropout 0.1 as GPT-2's config has them (attention's 0)
    module, variables = gpt2.make_flax(model)
    return model, module, variables, gpt2.sample_inputs(0)


def check_gpt(gpt, module=None, variables=None, steps=0, **kw):
    model, mod, var, batch = gpt
    report = check_port(model, module or mod, variables or var, batch, steps=steps, loss="token_cross_entropy",
                        output="logits", flax_inputs=gpt2.flax_inputs, optimizer=Adam(1e-3),
                        names={"transformer.drop": "transformer/dropout"}, ignore=GPT2_IGNORE, **kw)
    print(report, f"\n({report.seconds:.1f} s)")
    return report


def test_gpt2_passes(gpt):
    report = check_gpt(gpt, steps=2)
    assert report.ok, str(report)
    names = {c.name for c in report.checks}
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_proj", "transformer.drop", "loss"} <= names
    # the square Conv1D (c_proj: 64 x 64) is compared as stored, [in, out], not transposed
    c_proj = next(c for c in report.checks if c.phase == "start" and c.name == "transformer.h.0.attn.c_proj.weight")
    assert c_proj.gap == 0.0


def flax_with(gpt, **config):
    """The HF Flax module built from the torch model's config with ``config`` changed: a port with that bug."""
    model, module, variables, _ = gpt
    cfg = copy.deepcopy(model.config)
    for k, v in config.items():
        setattr(cfg, k, v)
    return module.clone(config=cfg)


@pytest.mark.parametrize("bug, config, phase, first, cause", [
    ("LayerNorm eps 1e-6", {"layer_norm_epsilon": 1e-6}, "forward (eval)", "transformer.h.0.ln_1",
     "LayerNorm epsilon is 1e-06 where torch's is 1e-05"),
    ("exact GELU where torch's is tanh", {"activation_function": "gelu"}, "forward (eval)", "transformer.h.0.mlp.c_proj",
     "act: the JAX side computes exact GELU where torch's is tanh-approximate"),
    ("attention scale missing", {}, "forward (eval)", "transformer.h.0.attn.c_proj", "attention scale missing"),
])
def test_gpt2_bug_named(gpt, bug, config, phase, first, cause, monkeypatch):
    if bug == "attention scale missing":
        # HF's Flax GPT-2 ignores scale_attn_weights: the port's attention is made to skip the 1/sqrt(d) itself
        from transformers.models.gpt2 import modeling_flax_gpt2 as m  # noqa: PLC0415 -- patched for this test only

        scaled = m.dot_product_attention_weights

        def unscaled(query, key, **kw):
            return scaled(query * jnp.sqrt(query.shape[-1]).astype(query.dtype), key, **kw)
        monkeypatch.setattr(m, "dot_product_attention_weights", unscaled)
    report = check_gpt(gpt, module=flax_with(gpt, **config))
    assert not report.ok, bug
    c = report.first_divergence()
    # GELU runs as a function in Flax (ignored above): the first layer compared after it takes its output, and
    # the diagnosis finds the cause in the layer's parent (the MLP's activation, the attention block)
    assert (c.phase, c.name) == (phase, first), str(report)
    assert report.diagnosis.cause and cause in report.diagnosis.cause, str(report)


def test_gpt2_tanh_gelu_where_torch_is_exact(gpt):
    model, module, variables, batch = gpt
    exact = copy.deepcopy(model)
    for block in exact.transformer.h:
        block.mlp.act = __import__("torch").nn.GELU()  # torch exact, the port keeps GPT-2's tanh ("gelu_new")
    report = check_port(exact, module, variables, batch, steps=0, loss="token_cross_entropy", output="logits",
                        flax_inputs=gpt2.flax_inputs, names={"transformer.drop": "transformer/dropout"},
                        ignore=GPT2_IGNORE)
    print(report)
    assert report.first_divergence().name == "transformer.h.0.mlp.c_proj", str(report)
    assert "computes tanh-approximate GELU where torch's is exact" in report.diagnosis.cause, str(report)


def test_gpt2_untied_head_named_by_the_gradients(gpt):
    model, _, _, _ = gpt
    from transformers import FlaxGPT2LMHeadModel  # noqa: PLC0415 -- the pair's own library, beside its use

    from examples.ports._glue import hf_to_flax  # noqa: PLC0415

    cfg = copy.deepcopy(model.config)
    cfg.tie_word_embeddings = False
    untied = FlaxGPT2LMHeadModel(cfg, _do_init=False)
    report = check_gpt(gpt, module=untied.module, variables={"params": hf_to_flax(model, untied)})
    assert not report.ok
    assert all(c.ok for c in report.checks if c.phase.startswith("forward"))  # the head starts equal to wte
    assert report.first_divergence().name == "transformer.wte.weight"  # torch's wte also gets the head's gradient
    assert report.first_divergence().phase == "gradients"
    assert "torch ties transformer.wte.weight to lm_head.weight" in report.diagnosis.cause, str(report)


# --- HF ResNet -----------------------------------------------------------------------------------------------

def resnet_case(layer_type):
    model = hf_resnet.make_torch(0, layer_type)
    module, variables = hf_resnet.make_flax(model)
    return model, module, variables, hf_resnet.sample_inputs(0)


def check_resnet(model, module, variables, batch, steps=1):
    report = check_port(model, module, variables, batch, steps=steps, output="logits",
                        flax_inputs=hf_resnet.flax_inputs, ignore=RESNET_IGNORE)
    print(report, f"\n({report.seconds:.1f} s)")
    return report


@pytest.mark.parametrize("layer_type", ["basic", "bottleneck"])
def test_hf_resnet_agrees_but_for_flax_batchnorm_running_var(layer_type):
    report = check_resnet(*resnet_case(layer_type))
    assert not report.problems, str(report)
    assert "with the biased batch variance" in report.diagnosis.cause, str(report)
    bad = {c.name for c in report.checks if not c.ok}
    assert bad and all(name.endswith("running_var") for name in bad), str(report)
    first = report.first_divergence()
    assert (first.phase, first.name) == ("forward (train)", "resnet.embedder.embedder.normalization.running_var")
    # everything else: every layer in both modes, every gradient and weight after the step
    assert sum(c.ok for c in report.checks if c.phase == "gradients") == len(
        [c for c in report.checks if c.phase == "gradients"]) > 20


def test_transformers_from_pt_loader_bug_named(tmp_path):
    from transformers import FlaxResNetForImageClassification  # noqa: PLC0415 -- the pair's own library

    model, module, _, batch = resnet_case("basic")
    model.save_pretrained(tmp_path)
    loaded = FlaxResNetForImageClassification.from_pretrained(tmp_path, from_pt=True)
    report = check_resnet(model, loaded.module, {"params": loaded.params["params"],
                                                 "batch_stats": loaded.params["batch_stats"]}, batch, steps=0)
    first = report.first_divergence()
    assert (first.phase, first.name) == ("start", "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight"), \
        str(report)
    assert report.diagnosis.cause is None and "leaves its random initial value" in str(report.diagnosis), str(report)
    wrong = {c.name.rsplit(".", 2)[0] for c in report.checks if c.phase == "start" and not c.ok}
    assert all(".layer." in w for w in wrong)  # only the basic layers' convolutions and norms: the misnamed ones


def test_hf_resnet_kernel_reshaped_named_at_start():
    model, module, variables, batch = resnet_case("basic")
    w = model.state_dict()["resnet.encoder.stages.1.layers.0.layer.1.convolution.weight"].numpy()
    bad = copy.deepcopy(variables)
    node = bad["params"]["resnet"]["encoder"]["stages"]["1"]["layers"]["0"]["layer"]["layer_1"]["convolution"]
    node["kernel"] = w.reshape(node["kernel"].shape)  # reshaped, not transposed
    report = check_resnet(model, module, bad, batch, steps=0)
    assert report.first_divergence().name == "resnet.encoder.stages.1.layers.0.layer.1.convolution.weight"
    assert report.first_divergence("forward (eval)").name == "resnet.encoder.stages.1.layers.0.layer.1.convolution"
    assert "reshaped" in report.diagnosis.cause, str(report)


# --- torchvision resnet18 and an NNX port ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv():
    model = torchvision_resnet.make_torch(0)
    inputs, targets = torchvision_resnet.sample_inputs(0)
    return model, (tuple(x[:2] for x in inputs), targets[:2])


def check_tv(tv, port, steps=0):
    model, batch = tv
    report = check_port(model, port, None, batch, steps=steps, flax_inputs=torchvision_resnet.flax_inputs,
                        ignore=TV_IGNORE)
    print(report, f"\n({report.seconds:.1f} s)")
    return report


def test_torchvision_resnet18_nnx_port(tv):
    port, _ = torchvision_resnet.make_flax(tv[0])
    report = check_tv(tv, port)  # forward both modes and gradients: NNX's steps are held by test_checker_trust
    assert not report.problems, str(report)
    bad = {c.name for c in report.checks if not c.ok}
    assert bad and all(name.endswith("running_var") for name in bad), str(report)  # nnx.BatchNorm: biased
    assert "with the biased batch variance" in report.diagnosis.cause, str(report)
    assert len([c for c in report.checks if c.phase == "start"]) == 102  # every parameter and buffer mapped


@pytest.mark.parametrize("bug", ["'SAME' padding", "momentum 0.1 given to NNX", "dropped bias"])
def test_torchvision_resnet18_bug_named(tv, bug):
    from flax import nnx  # noqa: PLC0415 -- only this test builds NNX layers

    port, _ = torchvision_resnet.make_flax(tv[0])
    if bug == "'SAME' padding":
        port.layer2.layers[0].conv1.padding = "SAME"  # torch pads 1 on each side at stride 2: SAME pads (0, 1)
        phase, first, cause = "forward (eval)", "layer2.0.conv1", "pads 'SAME'"
    elif bug == "momentum 0.1 given to NNX":
        port.bn1.momentum = 0.1  # NNX weighs the old running value: torch's 0.1 is NNX's 0.9
        phase, first, cause = "forward (train)", "bn1.running_mean", "momentum convention"
    else:
        fc = nnx.Linear(512, 10, use_bias=False, rngs=nnx.Rngs(0))
        fc.kernel[...] = jnp.asarray(tv[0].fc.weight.detach().numpy().T)
        port.fc = fc
        phase, first, cause = "forward (eval)", "fc", "has no bias"
    report = check_tv(tv, port)
    assert not report.ok, bug
    c = report.first_divergence(phase)
    assert c is not None and c.name == first, str(report)
    if bug == "dropped bias":
        assert any("'fc.bias' has no leaf" in p for p in report.problems), str(report)
    assert report.diagnosis.cause and cause in report.diagnosis.cause, str(report)
