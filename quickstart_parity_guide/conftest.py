"""The study guide's fixtures: the tutorial's initial weights and the guide built once per session."""
import pytest

from parity import harness as H
from quickstart_parity_guide import guide as study


@pytest.fixture(scope="session")
def init_sd():
    """The tutorial's initial weights: torch.manual_seed(0); NeuralNetwork()."""
    return H.init_state_dict(0)


@pytest.fixture(scope="session")
def guide(data_dir):
    """``guide.build``: every chapter's sources and numbers, computed once for the tests that compare
    the committed guide, page and notebooks with it (the numbers take seconds per chapter)."""
    return study.build(data_dir)
