"""``quickstart_parity_common.convert`` on the layer kinds the real ports need: each kind from its module class,
both ways bit-exact, and the layouts that compute torch's numbers in Flax (a transposed convolution included);
every layer kind nested, and the CNN pair's conversion with its errors naming the key."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_impl import cnn as jcnn
from quickstart_parity_common.convert import (
    ConversionError,
    conv_kernel_to_flax,
    kinds_of,
    state_dict_to_variables,
    variables_to_state_dict,
)
from reference_torch.cnn import CNN as TorchCNN


class Conv1D(torch.nn.Module):
    """HF GPT-2's Conv1D (weight stored [in, out]), by class name as the converter sees it."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf))
        self.bias = torch.nn.Parameter(torch.randn(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def model():
    torch.manual_seed(0)
    m = torch.nn.Module()
    m.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ConvTranspose2d(8, 4, 3, stride=2),
                                torch.nn.GroupNorm(2, 4), torch.nn.Conv1d(4, 6, 3, groups=2, dilation=2),
                                torch.nn.Linear(6, 6), torch.nn.RMSNorm(6), torch.nn.Conv3d(2, 3, (1, 2, 3)),
                                Conv1D(6, 6), torch.nn.Embedding(5, 6), torch.nn.LayerNorm(6), torch.nn.BatchNorm2d(3))
    return m


def test_kinds_from_module_classes():
    assert list(kinds_of(model().named_modules()).values()) == [
        "conv", "conv_transpose", "groupnorm", "conv", "linear", "rmsnorm", "conv", "gpt2_conv1d", "embedding",
        "layernorm", "batchnorm"]


def test_every_kind_both_ways_bit_exact():
    m = model()
    kinds = kinds_of(m.named_modules())
    sd = m.state_dict()
    v = state_dict_to_variables(sd, kinds=kinds)
    p = v["params"]
    assert p["net_7"]["kernel"].shape == (6, 6) and np.array_equal(p["net_7"]["kernel"], sd["net.7.weight"].numpy())
    assert np.array_equal(p["net_4"]["kernel"], sd["net.4.weight"].numpy().T)  # Linear: [out, in] -> [in, out]
    assert p["net_3"]["kernel"].shape == (3, 2, 6)  # grouped, dilated Conv1d: [k, I/groups, O]
    assert p["net_6"]["kernel"].shape == (1, 2, 3, 2, 3)
    assert set(p["net_5"]) == {"scale"} and set(p["net_8"]) == {"embedding"}
    back = variables_to_state_dict(v, kinds=kinds)
    assert list(back) == list(sd)
    for k in sd:
        assert np.array_equal(back[k], sd[k].numpy()), k


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (2, 0)])
def test_transposed_convolution_layout_computes_torchs_numbers(stride, padding):
    torch.manual_seed(0)
    t = torch.nn.ConvTranspose2d(3, 5, 3, stride=stride, padding=padding)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    want = t(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    k = 3 - 1 - padding
    flax = nn.ConvTranspose(5, (3, 3), strides=(stride, stride), padding=((k, k), (k, k)), transpose_kernel=False)
    kernel = conv_kernel_to_flax(t.weight.detach().numpy(), transpose=True)
    got = flax.apply({"params": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(t.bias.detach().numpy())}},
                     jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    unflipped = np.ascontiguousarray(t.weight.detach().numpy().transpose(2, 3, 0, 1))  # the classic porting bug
    bad = flax.apply({"params": {"kernel": jnp.asarray(unflipped), "bias": jnp.asarray(t.bias.detach().numpy())}},
                     jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert np.abs(np.asarray(bad) - want).max() > 1e-2


def test_square_conv1d_is_not_transposed_without_kinds_it_would_be():
    m = torch.nn.Module()
    m.c_proj = Conv1D(6, 6)
    sd = m.state_dict()
    right = state_dict_to_variables(sd, kinds=kinds_of(m.named_modules()))["params"]["c_proj"]["kernel"]
    guessed = state_dict_to_variables(sd)["params"]["c_proj"]["kernel"]  # entries alone: looks like a Linear
    assert np.array_equal(right, sd["c_proj.weight"].numpy()) and np.array_equal(guessed, sd["c_proj.weight"].numpy().T)


def test_bad_kind_and_shapes_are_named():
    with pytest.raises(ConversionError, match="kinds\\['a'\\] = 'lstm'"):
        state_dict_to_variables({"a.weight": np.ones((2, 2))}, kinds={"a": "lstm"})
    with pytest.raises(ConversionError, match="'a.weight' has shape"):
        state_dict_to_variables({"a.weight": np.ones((2, 2))}, kinds={"a": "conv_transpose"})
    with pytest.raises(ConversionError, match="'a.bias' has shape"):
        state_dict_to_variables({"a.weight": np.ones((3, 4, 2, 2)), "a.bias": np.ones(3)}, kinds={"a": "conv_transpose"})


# --- nested modules and the CNN pair -----------------------------------------------------------------------

class Nested(torch.nn.Module):
    """Every layer kind quickstart_parity_common.convert knows, nested in Sequentials and submodules."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5), torch.nn.ReLU())
        self.head = torch.nn.ModuleDict({"norm": torch.nn.LayerNorm(6), "fc": torch.nn.Linear(6, 2, bias=False)})
        self.bn1d = torch.nn.BatchNorm1d(6)


def test_convert_every_layer_kind_both_ways_bit_exact():
    torch.manual_seed(0)
    model = Nested()
    with torch.no_grad():  # non-trivial running statistics and counters
        model.features[1].running_mean.uniform_()
        model.features[1].running_var.uniform_(0.5, 2)
        model.features[1].num_batches_tracked.fill_(17)
    sd = model.state_dict()
    v = state_dict_to_variables(sd, kinds={"embed": "embedding"})
    p, s = v["params"], v["batch_stats"]
    assert p["embed"]["embedding"].shape == (7, 4)
    assert p["features_0"]["kernel"].shape == (3, 3, 3, 5)  # OIHW -> HWIO
    np.testing.assert_array_equal(p["features_0"]["kernel"][1, 2, 0, 4], sd["features.0.weight"][4, 0, 1, 2].numpy())
    assert set(p["features_1"]) == {"scale", "bias"} and set(s["features_1"]) == {"mean", "var", "num_batches_tracked"}
    assert p["head"]["fc"]["kernel"].shape == (6, 2) and "bias" not in p["head"]["fc"]
    assert set(p["head"]["norm"]) == {"scale", "bias"} and "head" not in s
    back = variables_to_state_dict(v)
    assert list(back) == list(sd)
    for k, t in sd.items():
        assert back[k].dtype == t.numpy().dtype and np.array_equal(back[k], t.numpy()), k
    model.load_state_dict({k: torch.from_numpy(a) for k, a in back.items()})  # strict: every key, every shape


def test_cnn_conversion_matches_flax_structure():
    torch.manual_seed(0)
    v = state_dict_to_variables(TorchCNN().state_dict())
    fresh = jcnn.init_variables(jax.random.PRNGKey(0))
    shapes = jax.tree_util.tree_map(np.shape, v)
    assert shapes == jax.tree_util.tree_map(np.shape, jax.tree_util.tree_map(np.asarray, fresh))


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"conv1.wieght": sd.pop("conv1.weight")}), "missing state_dict key 'conv1.weight'"),
    (lambda sd: sd.update({"bn1.extra": torch.zeros(16)}), "unknown state_dict key 'bn1.extra'"),
    (lambda sd: sd.pop("bn2.running_var"), "missing state_dict key 'bn2.running_var'"),
    (lambda sd: sd.update({"fc1.bias": torch.zeros(3)}), "'fc1.bias' has shape (3,), expected (128,)"),
    (lambda sd: sd.update({"fc2.weight": torch.zeros(2, 3, 4)}), "'fc2.weight' has shape (2, 3, 4)"),
])
def test_conversion_errors_name_the_key(edit, message):
    torch.manual_seed(0)
    sd = dict(TorchCNN().state_dict())
    edit(sd)
    with pytest.raises(ConversionError) as e:
        state_dict_to_variables(sd)
    assert message in str(e.value)


def test_reverse_conversion_errors_name_the_entry():
    torch.manual_seed(0)
    v = state_dict_to_variables(TorchCNN().state_dict())
    bad = {"params": {**v["params"], "fc1": {"kernel": v["params"]["fc1"]["kernel"], "bias": np.zeros(3)}},
           "batch_stats": v["batch_stats"]}
    with pytest.raises(ConversionError, match="params entry fc1/bias has shape"):
        variables_to_state_dict(bad)
    with pytest.raises(ConversionError, match="batch_stats entry ghost has no params"):
        variables_to_state_dict({**v,
                                 "batch_stats": {**v["batch_stats"], "ghost": {"mean": np.zeros(2), "var": np.ones(2)}}})
    with pytest.raises(ConversionError, match="unknown variables collection 'cache'"):
        variables_to_state_dict({**v, "cache": {}})
