"""Splits of every size on both sides: one image, fewer than one batch, exactly one batch, one more;
an empty split is refused by the shared check (quickstart_parity_common.data.check_split) with one clear line."""
import math

import jax
import numpy as np
import pytest
import torch
from torch import nn

from jax_impl import train as jtrain
from jax_impl.data import device_dataset, load_fashion_mnist
from jax_impl.model import init_params
from quickstart_parity_common.data import DataError
from quickstart_parity_common.report import loss_lines
from reference_torch import train as ttrain
from reference_torch.data import get_dataloaders, get_datasets
from reference_torch.model import NeuralNetwork
from tests.helpers import run_module, write_tiny_dataset

BATCH = 64
HIDDEN = (16,)


def _torch_epoch(data_dir):
    training, test = get_datasets(str(data_dir), download=False)
    train_loader, test_loader = get_dataloaders(training, test, BATCH)
    torch.manual_seed(0)
    model = NeuralNetwork(HIDDEN)
    optimizer = ttrain.make_optimizer(model)
    losses = ttrain.train_epoch(train_loader, model, nn.CrossEntropyLoss(), optimizer, log=None)
    accuracy, avg_loss = ttrain.evaluate(test_loader, model, nn.CrossEntropyLoss())
    return losses.numpy(), accuracy, avg_loss


def _jax_epoch(data_dir):
    train_data = device_dataset(*load_fashion_mnist(data_dir, train=True, debian_dir=None))
    test_data = device_dataset(*load_fashion_mnist(data_dir, train=False, debian_dir=None))
    state = jtrain.create_train_state(init_params(jax.random.PRNGKey(0), HIDDEN), hidden=HIDDEN)
    state, losses = jtrain.train_epoch(state, train_data, BATCH, log=None)
    accuracy, avg_loss = jtrain.evaluate(state, test_data, BATCH)
    return losses, accuracy, avg_loss


@pytest.mark.parametrize("n_train,n_test", [(1, 1), (3, 2), (BATCH - 1, 5), (BATCH, BATCH), (BATCH + 1, 1)])
@pytest.mark.parametrize("side", ["torch", "jax"])
def test_tiny_split_trains_and_evaluates(tmp_path, side, n_train, n_test):
    write_tiny_dataset(tmp_path, n_train=n_train, n_test=n_test)
    losses, accuracy, avg_loss = (_torch_epoch if side == "torch" else _jax_epoch)(tmp_path)
    assert len(losses) == math.ceil(n_train / BATCH)
    assert np.isfinite(losses).all() and math.isfinite(avg_loss)
    assert 0.0 <= accuracy <= 1.0 and round(accuracy * n_test) == pytest.approx(accuracy * n_test)
    # the printed lines count the partial batch as the tutorial does: (batch + 1) * len(X)
    assert loss_lines(losses, BATCH, n_train)[0].endswith(f"[{min(BATCH, n_train):>5d}/{n_train:>5d}]")


@pytest.mark.parametrize("n_train,n_test", [(0, 5), (5, 0)])
def test_empty_split_refused_by_both_loaders(tmp_path, n_train, n_test):
    write_tiny_dataset(tmp_path, n_train=n_train, n_test=n_test)
    name = "train-images-idx3-ubyte" if n_train == 0 else "t10k-images-idx3-ubyte"
    with pytest.raises(DataError, match=f"{name}: 0 images; each split needs at least one"):
        get_datasets(str(tmp_path), download=False)
    with pytest.raises(DataError, match=f"{name}: 0 images"):
        load_fashion_mnist(tmp_path, train=n_train == 0, debian_dir=None)


@pytest.mark.parametrize("module,extra", [("reference_torch", ["--no-download"]), ("jax_impl", [])])
def test_empty_training_split_cli_exit_2(tmp_path, module, extra):
    write_tiny_dataset(tmp_path, n_train=0, n_test=5)
    proc = run_module(module, "--data-dir", str(tmp_path), "--save", "", *extra,
                      env={"QSP_DEBIAN_DIR": str(tmp_path / "no-debian")}, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"python -m {module}: error: ") and "0 images" in lines[0]


@pytest.mark.parametrize("module,extra", [("reference_torch", ["--no-download"]), ("jax_impl", [])])
def test_batch_larger_than_the_set_cli(tmp_path, module, extra):
    """Before: JAX died with a TypeError traceback (the scan body sliced 64 rows of 3)."""
    write_tiny_dataset(tmp_path, n_train=3, n_test=2)
    proc = run_module(module, "--epochs", "1", "--data-dir", str(tmp_path), "--save", "", "--hidden", "8", *extra,
                      env={"QSP_DEBIAN_DIR": str(tmp_path / "no-debian")}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loss: " in proc.stdout and "[    3/    3]" in proc.stdout and "Predicted:" in proc.stdout
