"""The JAX quickstart: model, torch-matched init, scan epoch, checkpoints, CLI, no torch inside."""
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jax_impl import checkpoint, launch, loops, train
from jax_impl.checkpoint import CheckpointError
from jax_impl.data import device_dataset, load_fashion_mnist
from jax_impl.distributed import Config as DistConfig
from jax_impl.model import NeuralNetwork, count_params, init_params
from parity.compare import uniform_init_violations
from parity.weights import torch_to_flax
from reference_torch.model import NeuralNetwork as TorchNeuralNetwork
from tests.helpers import ONE_EPOCH, REPO, run_module, write_tiny_dataset


def test_shapes_and_count():
    params = init_params(jax.random.PRNGKey(0))
    shapes = {k: {n: v.shape for n, v in layer.items()} for k, layer in params.items()}
    assert shapes == {
        "linear_relu_stack_0": {"kernel": (784, 512), "bias": (512,)},
        "linear_relu_stack_2": {"kernel": (512, 512), "bias": (512,)},
        "linear_relu_stack_4": {"kernel": (512, 10), "bias": (10,)},
    }
    assert count_params(params) == 669_706
    assert NeuralNetwork().apply({"params": params}, jnp.zeros((3, 28, 28))).shape == (3, 10)


def test_init_matches_torch_distribution():
    assert uniform_init_violations(init_params(jax.random.PRNGKey(0))) == []
    assert uniform_init_violations(init_params(jax.random.PRNGKey(1), hidden=(300, 100))) == []


def test_init_check_accepts_torch_init():
    """The statistical check passes torch's own nn.Linear init (it rejects Flax's default:
    parity/test_negative_controls.py)."""
    torch.manual_seed(0)
    assert uniform_init_violations(torch_to_flax(TorchNeuralNetwork().state_dict())) == []


def small_data(n=21 * 64 + 32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,)).astype(np.int32)
    return images, labels


def test_scan_epoch_equals_python_loop_including_partial_batch():
    images, labels = small_data()  # 21 full batches and one of 32
    x, y = device_dataset(images, labels)
    params = init_params(jax.random.PRNGKey(0))
    state0 = train.create_train_state(params, 1e-3)
    state = state0
    loop_losses = []
    for start in range(0, len(images), 64):
        state, metrics = train.train_step(state, (x[start:start + 64], y[start:start + 64]))
        loop_losses.append(float(metrics["loss"]))
    assert len(loop_losses) == 22
    scan_state, scan_losses = train.train_epoch(train.create_train_state(params, 1e-3), (x, y), 64, log=None)
    assert scan_losses.shape == (22,)
    # The scan body and the standalone step are the same XLA computation per batch.
    np.testing.assert_array_equal(scan_losses, np.asarray(loop_losses, np.float32))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(scan_state.params), jax.tree_util.tree_leaves(state.params),
                            strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_epochs_after_the_first_do_not_recompile():
    images, labels = small_data(n=5 * 64 + 8, seed=1)
    cpu = jax.devices("cpu")[0]
    data = device_dataset(images, labels, cpu)
    # Params placed on a device (committed), as the CLI and the benchmarks place them, and not.
    for params in (init_params(jax.random.PRNGKey(0)), jax.device_put(init_params(jax.random.PRNGKey(0)), cpu)):
        loops._scan_epoch.clear_cache()
        state = train.create_train_state(params, 1e-3)
        for _ in range(3):
            state, _ = train.train_epoch(state, data, 64, log=None)
        assert loops._scan_epoch._cache_size() == 1  # one compilation for three epochs


def test_partial_batch_is_trained_on():
    """Dropping the last 32 samples would leave these parameters unchanged: they are not."""
    images, labels = small_data()
    params = init_params(jax.random.PRNGKey(0))
    full, _ = train.train_epoch(train.create_train_state(params, 1e-2), device_dataset(images, labels), 64, log=None)
    cut, _ = train.train_epoch(train.create_train_state(params, 1e-2), device_dataset(images[:-32], labels[:-32]), 64,
                               log=None)
    assert not np.array_equal(full.params["linear_relu_stack_4"]["bias"], cut.params["linear_relu_stack_4"]["bias"])


def test_evaluate_is_mean_of_batch_means():
    images, labels = small_data(n=3 * 64 + 16)
    params = init_params(jax.random.PRNGKey(3))
    state = train.create_train_state(params, 1e-3)
    accuracy, avg_loss = train.evaluate(state, device_dataset(images, labels), 64)
    x, y = device_dataset(images, labels)
    means, correct = [], 0
    for s in range(0, len(images), 64):
        logits = state.apply_fn({"params": params}, x[s:s + 64])
        means.append(float(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[s:s + 64, None], 1).mean()))
        correct += int((logits.argmax(1) == y[s:s + 64]).sum())
    assert accuracy == correct / len(images)
    assert avg_loss == pytest.approx(sum(means) / 4, rel=1e-6)  # 4 batches, not 208 samples
    assert avg_loss != pytest.approx(np.average(means, weights=[64, 64, 64, 16]), rel=1e-9)


def test_checkpoint_round_trip_bit_exact(tmp_path):
    params = init_params(jax.random.PRNGKey(5))
    path = tmp_path / "m.msgpack"
    checkpoint.save(params, path)
    loaded = checkpoint.load(path, init_params(jax.random.PRNGKey(0)))
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded), strict=True):
        assert np.array_equal(a, b) and np.asarray(b).dtype == np.float32
    assert not list(tmp_path.glob(".*tmp"))


def test_checkpoint_mismatch_names_first_parameter(tmp_path):
    path = tmp_path / "m.msgpack"
    checkpoint.save(init_params(jax.random.PRNGKey(0), hidden=(256, 512)), path)
    with pytest.raises(CheckpointError,
                       match=r"linear_relu_stack_0/kernel has shape \(784, 256\) but the model expects \(784, 512\)"):
        checkpoint.load(path, init_params(jax.random.PRNGKey(0)))
    path.write_bytes(b"\x01\x02garbage")
    with pytest.raises(CheckpointError, match="not a readable Flax msgpack checkpoint|not a parameter tree"):
        checkpoint.load(path, init_params(jax.random.PRNGKey(0)))


def test_one_epoch_real_data_same_lines_and_band(data_dir, tmp_path):
    proc = run_module("jax_impl", "--epochs", "1", "--data-dir", data_dir, "--save", str(tmp_path / "m.msgpack"))
    assert proc.returncode == 0, proc.stderr
    expected = ONE_EPOCH.pattern.replace("PyTorch", "JAX")
    m = re.match(expected, proc.stdout)
    assert m, proc.stdout
    assert 45.0 <= float(m["acc"]) <= 60.0, m["acc"]
    assert m["pred"] == "Ankle boot"


def test_data_matches_torch_files(data_dir):
    images, labels = load_fashion_mnist(data_dir, train=False)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert labels[0] == 9  # test_data[0] is the tutorial's "Ankle boot"


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    write_tiny_dataset(tmp_path)
    proc = run_module("jax_impl", "--epochs", "1", "--lr", "1e12", "--data-dir", str(tmp_path), "--save", "")
    assert proc.returncode == 2
    assert re.search(r"loss became (nan|inf) at epoch 1, step \d+", proc.stderr), proc.stderr


def test_cuda_absent_is_one_line_exit_2(tmp_path):
    try:
        jax.devices("gpu")
        pytest.skip("this machine has a GPU")
    except RuntimeError:
        pass
    proc = run_module("jax_impl", "--device", "cuda", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr


def test_import_without_torch():
    """jax_impl runs where torch is not installed: a meta-path guard makes any torch import fail."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.') or name.startswith('torchvision'):\n"
        "            raise ImportError('torch is hidden')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import jax_impl, jax_impl.data, jax_impl.model, jax_impl.train, jax_impl.checkpoint, jax_impl.__main__\n"
        "import jax_impl.basics\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_launch_turns_a_failed_or_late_process_into_one_error(tmp_path):
    """``jax_impl.launch``: the worker's own error line comes back as DistributedError; a process past
    its time is killed and named."""
    params = jax.tree.map(np.asarray, init_params(jax.random.PRNGKey(0), (8,)))
    bad = DistConfig(devices=1, hidden=(8,), samples=8, form="no-such-form")
    with pytest.raises(launch.DistributedError,
                       match=r"^the JAX process failed: python -m jax_impl.distributed: error: form 'no-such-form'"):
        launch.run_many([bad], params, timeout_s=120)
    with pytest.raises(launch.DistributedError, match=r"did not finish in 0 s and was killed"):
        launch.run_many([bad], params, timeout_s=0.01)
