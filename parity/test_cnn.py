"""The CNN pair: Dropout's semantics on both sides, BatchNorm's, and the two epoch forms.

(Its conversion is ``tests/test_convert.py``; the layer-by-layer, gradient and training comparison of the pair is
``test_checker.py``.)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from jax_impl import cnn as jcnn
from jax_impl import cnn_train
from jax_impl.train import Config
from quickstart_parity_common.convert import state_dict_to_variables
from reference_torch.cnn import CNN as TorchCNN

# --- Dropout: the scaling semantics, on each side's own Dropout -------------------------------------------

P = 0.25


def test_torch_dropout_scales_kept_units_and_is_identity_in_eval():
    x = torch.rand(200, 500) + 0.5  # no zeros: every zero in the output is a dropped unit
    drop = torch.nn.Dropout(P)
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    # torch multiplies by the float32 1/(1-p) (Flax divides by 1-p: the two may differ by one ulp)
    assert torch.equal(y[kept], x[kept] * torch.tensor(1 / (1 - P), dtype=torch.float32))
    assert abs(kept.float().mean().item() - (1 - P)) < 0.01  # 100k draws: 4+ standard deviations
    drop.eval()
    assert torch.equal(drop(x), x)


def test_flax_dropout_scales_kept_units_and_is_identity_in_eval():
    x = jax.random.uniform(jax.random.PRNGKey(1), (200, 500)) + 0.5
    drop = nn.Dropout(P)
    y = np.asarray(drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    kept = y != 0
    # 1/(1-p) scaling, to one float32 rounding (the order of Flax's multiply/divide is its own business)
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / np.float32(1 - P), rtol=np.finfo(np.float32).eps, atol=0)
    assert abs(kept.mean() - (1 - P)) < 0.01
    assert np.array_equal(np.asarray(drop.apply({}, x, deterministic=True)), np.asarray(x))


def test_cnn_eval_ignores_dropout_and_train_uses_it():
    torch.manual_seed(0)
    v = state_dict_to_variables(TorchCNN().state_dict())
    x = jnp.asarray(np.random.default_rng(0).random((4, 784), dtype=np.float32))
    a = jcnn.CNN().apply(v, x)
    b = jcnn.CNN(dropout=0.9).apply(v, x)  # eval: the rate does not matter
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t1, _ = jcnn.CNN().apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
    t2, _ = jcnn.CNN().apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(np.asarray(t1), np.asarray(t2))  # different masks, different outputs


# --- BatchNorm: torch's update rule, exactly (float64, no rounding to hide behind) --------------------------

def test_batchnorm_reproduces_torch_update_in_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5, 5, 3)) * 2 + 1  # NHWC
    bn = torch.nn.BatchNorm2d(3).double()
    bn.train()
    y_t = bn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    with jax.enable_x64(True):
        v = {"params": {"scale": jnp.ones(3, jnp.float64), "bias": jnp.zeros(3, jnp.float64)},
             "batch_stats": {"mean": jnp.zeros(3, jnp.float64), "var": jnp.ones(3, jnp.float64),
                             "num_batches_tracked": jnp.zeros((), jnp.int32)}}
        y_j, upd = jcnn.BatchNorm().apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
        y_j, upd = np.asarray(y_j), jax.tree_util.tree_map(np.asarray, upd["batch_stats"])
    np.testing.assert_allclose(y_j, y_t, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(upd["mean"], bn.running_mean.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(upd["var"], bn.running_var.numpy(), rtol=1e-12, atol=1e-14)
    n = 6 * 5 * 5
    unbiased = x.reshape(-1, 3).var(0, ddof=1)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-12)  # torch: unbiased
    assert not np.allclose(upd["var"], 0.9 + 0.1 * unbiased * (n - 1) / n, rtol=1e-6)  # ...not the biased one
    assert int(upd["num_batches_tracked"]) == int(bn.num_batches_tracked) == 1


def test_cnn_step_loop_and_scan_epoch_train_alike():
    """``cnn_train.train_epoch`` (jitted step per batch) and ``scan_epoch`` (one scan) are one
    computation: same losses and variables, last partial batch included, dropout keys by step."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((3 * 16 + 5, 784), np.float32))  # three full batches and a partial one
    y = jnp.asarray(rng.integers(0, 10, len(x)).astype(np.int32))
    dev = jax.devices("cpu")[0]

    def fresh():
        return cnn_train.create_train_state(jcnn.init_variables(jax.random.PRNGKey(0)), Config(lr=0.1), dev)

    a, la = cnn_train.train_epoch(fresh(), (x, y), 16, log=None)
    b, lb = cnn_train.scan_epoch(fresh(), (x, y), 16, log=None)
    assert la.shape == lb.shape == (4,)
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)
    assert int(a.step) == int(b.step) == 4
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path({"p": a.params, "s": a.batch_stats}),
                            jax.tree_util.tree_leaves({"p": b.params, "s": b.batch_stats}), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))
