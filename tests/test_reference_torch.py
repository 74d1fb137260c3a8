"""The PyTorch quickstart: the tutorial's model, lines, accuracy, checkpoints and errors."""
import re

import pytest
import torch

from reference_torch import checkpoint
from reference_torch.checkpoint import CheckpointError
from reference_torch.model import NeuralNetwork
from reference_torch.train import DeviceError, resolve_device
from tests.helpers import ONE_EPOCH, run_module, write_tiny_dataset

TUTORIAL_SHAPES = {
    "linear_relu_stack.0.weight": (512, 784),
    "linear_relu_stack.0.bias": (512,),
    "linear_relu_stack.2.weight": (512, 512),
    "linear_relu_stack.2.bias": (512,),
    "linear_relu_stack.4.weight": (10, 512),
    "linear_relu_stack.4.bias": (10,),
}

def test_state_dict_is_the_tutorials():
    model = NeuralNetwork()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == TUTORIAL_SHAPES
    assert sum(p.numel() for p in model.parameters()) == 669_706
    assert [type(m).__name__ for m in model.linear_relu_stack] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert isinstance(model.flatten, torch.nn.Flatten)


def test_hidden_sets_widths_and_depth():
    model = NeuralNetwork(hidden=(64, 32, 16))
    shapes = [tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("weight")]
    assert shapes == [(64, 784), (32, 64), (16, 32), (10, 16)]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_one_epoch_real_data(data_dir, tmp_path):
    """One epoch on the real data prints the tutorial's lines and lands in its accuracy band."""
    proc = run_module("reference_torch", "--epochs", "1", "--data-dir", data_dir, "--save", str(tmp_path / "m.pth"))
    assert proc.returncode == 0, proc.stderr
    m = ONE_EPOCH.match(proc.stdout)
    assert m, proc.stdout
    lines = proc.stdout.splitlines()
    assert [int(re.search(r"\[ *(\d+)/", line).group(1)) for line in lines if line.startswith("loss:")] == [
        64 + 6400 * i for i in range(10)]
    assert 45.0 <= float(m["acc"]) <= 60.0, m["acc"]  # the tutorial: 45-60 % after one epoch
    assert 2.0 < float(m["loss"]) < 2.3


def test_checkpoint_round_trip_identical_logits(tmp_path):
    torch.manual_seed(1)
    model = NeuralNetwork()
    path = tmp_path / "m.pth"
    checkpoint.save(model, path)
    loaded = checkpoint.load(path, NeuralNetwork())
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_checkpoint_from_other_widths_is_named(tmp_path):
    path = tmp_path / "wide.pth"
    checkpoint.save(NeuralNetwork(hidden=(256, 512)), path)
    with pytest.raises(CheckpointError,
                       match=r"linear_relu_stack.0.weight has shape \(256, 784\) but the model expects \(512, 784\)"):
        checkpoint.load(path, NeuralNetwork())
    checkpoint.save(NeuralNetwork(hidden=(512, 512, 512)), path)
    with pytest.raises(CheckpointError,
                       match=r"linear_relu_stack.4.weight has shape \(512, 512\) but the model expects \(10, 512\)"):
        checkpoint.load(path, NeuralNetwork())


def test_checkpoint_garbage_and_missing(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        checkpoint.load(bad, NeuralNetwork())
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        checkpoint.load(tmp_path / "absent.pth", NeuralNetwork())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_absent_is_one_line_exit_2(tmp_path):
    with pytest.raises(DeviceError):
        resolve_device("cuda")
    proc = run_module("reference_torch", "--device", "cuda", "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "CUDA is not available" in proc.stderr


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    write_tiny_dataset(tmp_path)
    proc = run_module("reference_torch", "--epochs", "1", "--lr", "1e12", "--data-dir", str(tmp_path), "--save", "")
    assert proc.returncode == 2
    assert re.search(r"loss became (nan|inf) at epoch 1, step \d+", proc.stderr), proc.stderr
