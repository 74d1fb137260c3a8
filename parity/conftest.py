"""Parity fixtures: the real data and the tutorial's initial weights, one epoch of both sides."""
import pytest

from . import harness as H


@pytest.fixture(scope="session")
def real(data_dir):
    """(train, test) splits of the real FashionMNIST, ToTensor pixels (N, 784)."""
    return H.real_data(data_dir)


@pytest.fixture(scope="session")
def init_sd():
    """The tutorial's initial weights: torch.manual_seed(0); NeuralNetwork()."""
    return H.init_state_dict(0)


@pytest.fixture(scope="session")
def first_epoch(real, init_sd):
    """Both sides trained one epoch (938 steps, file order, last batch of 32) in float32 from the same weights."""
    train, _ = real
    t_losses, t_model = H.torch_train(init_sd, train)
    j_losses, j_state = H.jax_train(H.torch_to_flax(init_sd), train)
    return {"torch_losses": t_losses, "torch_model": t_model, "jax_losses": j_losses, "jax_state": j_state}
