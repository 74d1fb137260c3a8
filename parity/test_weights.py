"""Weight conversion: lossless both ways, strict about keys and shapes, and never a silent transpose bug."""
import jax
import numpy as np
import pytest
import torch

from jax_impl.model import init_params
from parity.weights import WeightsError, flax_to_torch, hidden_of, torch_to_flax
from reference_torch.model import NeuralNetwork

HIDDENS = [(512, 512), (64,), (128, 64, 32), (512,) * 4]


@pytest.mark.parametrize("hidden", HIDDENS)
def test_round_trip_torch_flax_torch(hidden):
    torch.manual_seed(0)
    sd = NeuralNetwork(hidden).state_dict()
    back = flax_to_torch(torch_to_flax(sd))
    assert list(back) == list(sd)
    for k in sd:
        assert np.array_equal(back[k].numpy(), sd[k].numpy()), k
    assert hidden_of(sd) == tuple(hidden)


@pytest.mark.parametrize("hidden", HIDDENS)
def test_round_trip_flax_torch_flax(hidden):
    params = init_params(jax.random.PRNGKey(1), hidden)
    back = torch_to_flax(flax_to_torch(params))
    assert set(back) == set(params)
    for name in params:
        for part in ("kernel", "bias"):
            assert np.array_equal(back[name][part], np.asarray(params[name][part])), f"{name}/{part}"


def test_every_kernel_is_the_transposed_weight():
    """A round trip cannot see a transpose missing in both directions: the square 512x512 layer
    would even load. Check the orientation itself, on non-symmetric matrices."""
    torch.manual_seed(0)
    sd = NeuralNetwork().state_dict()
    params = torch_to_flax(sd)
    for i in (0, 2, 4):
        w = sd[f"linear_relu_stack.{i}.weight"].numpy()
        kernel = params[f"linear_relu_stack_{i}"]["kernel"]
        assert kernel.shape == w.shape[::-1]
        np.testing.assert_array_equal(kernel, w.T, err_msg=f"linear_relu_stack_{i}")
        if w.shape[0] == w.shape[1]:
            assert not np.array_equal(kernel, w), "square layer test is void: weight is symmetric"


def test_errors_name_the_key():
    torch.manual_seed(0)
    sd = dict(NeuralNetwork().state_dict())
    with pytest.raises(WeightsError, match="unknown state_dict key 'extra.weight'"):
        torch_to_flax({**sd, "extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "linear_relu_stack.2.bias"}
    with pytest.raises(WeightsError, match="missing state_dict key 'linear_relu_stack.2.bias'"):
        torch_to_flax(missing)
    with pytest.raises(WeightsError, match=r"'linear_relu_stack.2.weight' has shape \(512, 256\)"):
        torch_to_flax({**sd, "linear_relu_stack.2.weight": torch.zeros(512, 256)})
    with pytest.raises(WeightsError, match=r"'linear_relu_stack.4.weight' has 7 outputs"):
        torch_to_flax({**sd, "linear_relu_stack.4.weight": torch.zeros(7, 512), "linear_relu_stack.4.bias": torch.zeros(7)})
    no_middle = {k: v for k, v in sd.items() if not k.startswith("linear_relu_stack.2.")}
    with pytest.raises(WeightsError, match="missing 'linear_relu_stack.2.weight'"):
        torch_to_flax(no_middle)

    params = torch_to_flax(sd)
    with pytest.raises(WeightsError, match="unknown params entry 'Dense_0'"):
        flax_to_torch({**params, "Dense_0": params["linear_relu_stack_0"]})
    with pytest.raises(WeightsError, match="missing params entry linear_relu_stack_0/bias"):
        flax_to_torch({**params, "linear_relu_stack_0": {"kernel": params["linear_relu_stack_0"]["kernel"]}})
    with pytest.raises(WeightsError, match="linear_relu_stack_2/bias has shape"):
        flax_to_torch({**params,
                       "linear_relu_stack_2": {"kernel": params["linear_relu_stack_2"]["kernel"], "bias": np.zeros(3)}})
