"""The harness trains as the quickstarts do: its runners agree with each other on a short run, the tutorial's
mode switches are kept, and each quickstart CLI's own batches are the harness's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from jax_impl import train as jtrain
from parity import harness as H
from parity import tolerances as T
from parity.compare import (
    assert_trees_close,
)
from reference_torch import train as ttrain

NONFINITE = [np.nan, np.inf, -np.inf]


def test_tutorial_mode_switches():
    """reference_torch keeps the tutorial's model.train() / model.eval(): no effect on this MLP (no
    dropout, no BatchNorm), but the first Dropout a learner adds would make them matter."""
    torch.manual_seed(0)
    model = H.torch_model(H.init_state_dict(0, (8,)))
    loader = H.torch_loader(H.Split(np.zeros((4, 784), np.float32), np.zeros(4, np.int64)), 2)
    model.eval()
    ttrain.train_epoch(loader, model, torch.nn.CrossEntropyLoss(), ttrain.make_optimizer(model), log=None)
    assert model.training
    ttrain.evaluate(loader, model, torch.nn.CrossEntropyLoss())
    assert not model.training


def test_runners_agree_on_a_short_run(real, init_sd):
    """Ten full batches and a partial one of 32, then the test metrics on 100 images (one full
    batch, a partial one): the runners the CLI uses agree step by step, in seconds. A fast guard
    for what the one-epoch tests check at length (the mutation run relies on it)."""
    train, test = real
    split, test_slice = H.Split(train.x[:672], train.y[:672]), H.Split(test.x[:100], test.y[:100])
    t, j = H.TorchRunner(init_sd, split), H.JaxRunner(H.torch_to_flax(init_sd), split)
    t_losses, j_losses = t.epoch(), j.epoch()
    assert t_losses.shape == j_losses.shape == (11,)
    assert np.all(np.abs(t_losses - j_losses) <= T.loss_atol(np.arange(1, 12)))
    assert_trees_close(j.params(), t.params(), rtol=T.ONE_EPOCH.rtol, atol=T.ONE_EPOCH.atol, what="params after 11 steps")
    (t_acc, t_loss), (j_acc, j_loss) = t.evaluate(test_slice), j.evaluate(test_slice)
    assert t_acc == j_acc and abs(t_loss - j_loss) <= T.EVAL_LOSS.atol


# --- the quickstart CLIs' own batches are the harness's --------------------------------------------

class _Captured(Exception):
    pass


def test_torch_cli_trains_on_the_harness_batches(data_dir, monkeypatch):
    """reference_torch.train.run's training loader (caught at its first train_epoch call) yields the
    harness's batches: same count, same sample indices in order, first and last batch bit-equal."""
    seen = {}

    def capture(dataloader, model, loss_fn, optimizer, log=print):
        seen["loader"] = dataloader
        raise _Captured

    monkeypatch.setattr(ttrain, "train_epoch", capture)
    with pytest.raises(_Captured):
        ttrain.run(ttrain.Config(epochs=1, device="cpu", data_dir=data_dir, save="", download=False, verbose=False))
    cli = seen["loader"]
    harness = H.torch_loader(H.real_data(data_dir)[0], 64)
    assert len(cli) == len(harness) == 938
    cli_order, harness_order = list(cli.batch_sampler), [list(b) for b in harness.sampler]
    assert cli_order == harness_order, "the torch CLI's batches are not the harness's, in order"
    first_x, first_y = next(iter(cli))
    h_first_x, h_first_y = next(iter(harness))
    last = [cli.dataset[i] for i in cli_order[-1]]  # the last batch, as the loader collates it
    last_x, last_y = cli.collate_fn(last)
    h_last_x, h_last_y = list(iter(harness))[-1]
    for x, hx, y, hy in ((first_x, h_first_x, first_y, h_first_y), (last_x, h_last_x, last_y, h_last_y)):
        assert x.dtype == hx.dtype == torch.float32
        assert torch.equal(x.reshape(len(x), -1), hx) and torch.equal(y, hy)
    assert len(last_x) == 32


def test_jax_cli_trains_on_the_harness_batches(data_dir, monkeypatch):
    """jax_impl.train.run hands train_epoch the harness's arrays, bit for bit, and batch size 64."""
    seen = {}

    def capture(state, data, batch_size=64, log=print):
        seen["data"], seen["batch_size"] = data, batch_size
        raise _Captured

    monkeypatch.setattr(jtrain, "train_epoch", capture)
    with pytest.raises(_Captured):
        jtrain.run(jtrain.Config(epochs=1, device="cpu", data_dir=data_dir, save="", verbose=False))
    x, y = (np.asarray(a) for a in seen["data"])
    train = H.real_data(data_dir)[0]
    assert seen["batch_size"] == 64 and x.shape == train.x.shape
    assert np.array_equal(x.view(np.uint32), train.x.view(np.uint32)) and np.array_equal(y, train.y)
    assert -(-len(x) // seen["batch_size"]) == 938
