"""The port checker on the CNN and on small models, and the classic porting bugs it must name.

Each control injects one bug into the JAX side and asserts ``check_port`` reports the right layer or
parameter first, with the derived tolerance; the clean CNN passes the same checks. The last tests
show the checker cannot pass vacuously.
"""
from __future__ import annotations

import flax.linen as nn
import numpy as np
import pytest
import torch

from jax_impl import cnn as jcnn
from parity.checker import check_port
from quickstart_parity_common.convert import state_dict_to_variables
from reference_torch.cnn import CNN as TorchCNN
from tests.port_factories import FlaxNet as FlaxLN
from tests.port_factories import TorchNet as TorchLN

BATCH = 32  # real images: BatchNorm statistics over 32 x H x W positions


class PortedCNN(nn.Module):
    """``jax_impl.cnn.CNN`` written out again with one switch per classic porting bug ("" = none).

    ``test_clean_copy_passes`` shows the copy with no bug is a faithful port, so each control differs
    from a correct port by exactly its bug.
    """

    bug: str = ""
    dropout: float = 0.25

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((-1, 28, 28, 1))
        x = nn.Conv(16, (3, 3), padding=jcnn.PAD1, name="conv1")(x)
        x = self.norm("bn1", x, train)
        x = nn.relu(x)
        self.sow("intermediates", "relu1", x)
        pad = "SAME" if self.bug == "same padding" else jcnn.PAD1
        x = nn.Conv(32, (3, 3), strides=(2, 2), padding=pad, name="conv2")(x)
        x = self.norm("bn2", x, train)
        x = nn.relu(x)
        self.sow("intermediates", "relu2", x)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        self.sow("intermediates", "pool", x)
        if self.bug == "nhwc flatten":
            x = x.reshape((x.shape[0], -1))
        else:
            x = x.transpose(0, 3, 1, 2).reshape((x.shape[0], -1))
        self.sow("intermediates", "flatten", x)
        x = nn.Dropout(self.dropout, name="dropout")(x, deterministic=not train)
        x = nn.relu(nn.Dense(128, name="fc1")(x))
        self.sow("intermediates", "relu3", x)
        return nn.Dense(10, name="fc2")(x)

    def norm(self, name, x, train):
        if self.bug == "flax momentum 0.1":  # Flax's own BatchNorm given torch's number
            return nn.BatchNorm(use_running_average=not train, momentum=0.1, epsilon=1e-5, name=name)(x)
        if self.bug == "biased running var":
            return BiasedBatchNorm(name=name)(x, train)
        return jcnn.BatchNorm(name=name)(x, train)


class BiasedBatchNorm(jcnn.BatchNorm):
    """torch's BatchNorm but with the biased batch variance in running_var (Flax's behaviour)."""

    def running_var(self, v, n):
        return v  # the bug: biased


@pytest.fixture(scope="module")
def cnn_case(real):
    torch.manual_seed(0)
    model = TorchCNN()
    train = real[0]
    return model, state_dict_to_variables(model.state_dict()), (train.x[:BATCH], train.y[:BATCH])


def without_counters(variables):
    """Flax's nn.BatchNorm has no num_batches_tracked: drop it (it would be an unknown variable)."""
    return {"params": variables["params"],
            "batch_stats": {k: {n: a for n, a in v.items() if n != "num_batches_tracked"}
                            for k, v in variables["batch_stats"].items()}}


def run(cnn_case, bug="", variables=None, steps=0):
    model, v, batch = cnn_case
    report = check_port(model, PortedCNN(bug), v if variables is None else variables, batch, steps=steps)
    print(f"--- {bug or 'no bug'} ---\n{report}")
    return report


def test_cnn_passes_every_check(cnn_case, real):
    """The real port, jax_impl.cnn.CNN: forward both modes, BatchNorm statistics, gradients, 3 steps with dropout masks."""
    model, v, batch = cnn_case
    train = real[0]
    report = check_port(model, jcnn.CNN(), v, batch, steps=3,
                        more_batches=[(train.x[BATCH:2 * BATCH], train.y[BATCH:2 * BATCH])])
    print(report)
    assert report.ok, str(report)
    assert report.diagnosis is None  # a correct port gets none
    names = {c.name for c in report.checks}
    assert {"bn1.running_var", "bn2.running_mean", "conv1.weight", "fc1.bias", "dropout", "flatten", "loss"} <= names
    assert report.phases() == ["start", "forward (eval)", "forward (train)", "gradients", "step 1", "step 2", "step 3"]


def test_clean_copy_passes(cnn_case):
    assert run(cnn_case, steps=1).ok


@pytest.mark.parametrize("bug, phase, first, cause", [
    ("nhwc flatten", "forward (eval)", "flatten", "flattens NHWC"),
    ("same padding", "forward (eval)", "conv2", "pads 'SAME'"),
    ("flax momentum 0.1", "forward (train)", "bn1.running_mean", "Flax's momentum convention with torch's number"),
    ("biased running var", "forward (train)", "bn1.running_var", "with the biased batch variance"),
])
def test_control_names_the_layer(cnn_case, bug, phase, first, cause):
    variables = without_counters(cnn_case[1]) if bug == "flax momentum 0.1" else None
    report = run(cnn_case, bug, variables)
    assert not report.ok
    c = report.first_divergence()
    assert (c.phase, c.name) == (phase, first), str(report)
    assert report.diagnosis is not None and report.diagnosis.cause and cause in report.diagnosis.cause, str(report)
    if bug in ("flax momentum 0.1", "biased running var"):
        # The outputs are right in both modes (train normalises with the batch's biased variance on both
        # sides): only the running statistics show the bug, and the checker looks at them.
        assert all(c.ok for c in report.checks if c.phase == "forward (train)" and "running" not in c.name)


def test_control_conv_kernel_reshaped(cnn_case):
    model, v, _ = cnn_case
    w = model.state_dict()["conv2.weight"].numpy()
    bad = {**v, "params": {**v["params"], "conv2": {**v["params"]["conv2"], "kernel": w.reshape(3, 3, 16, 32)}}}
    report = run(cnn_case, variables=bad)
    c = report.first_divergence()
    # the weights the port holds are not torch's in any layout: named before any output is compared
    assert (c.phase, c.name) == ("start", "conv2.weight"), str(report)
    assert "reshaped to (3, 3, 16, 32) instead of transposed" in report.diagnosis.cause
    assert [x.name for x in report.checks if x.phase == "start" and not x.ok] == ["conv2.weight"]
    c = report.first_divergence("forward (eval)")
    assert c.name == "conv2", str(report)
    # Gradients flow back through every layer after the bug, so they fail from conv1 on: the forward
    # pass localises, the gradient and step phases confirm.
    assert report.first_divergence("gradients") is not None


def test_layernorm_epsilon(real):
    torch.manual_seed(0)
    model = TorchLN()
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((16, 8)).astype(np.float32) * 0.05, rng.integers(0, 10, 16))  # small variance: eps matters
    v = state_dict_to_variables(model.state_dict())
    assert check_port(model, FlaxLN(1e-5), v, batch, steps=1).ok
    report = check_port(model, FlaxLN(1e-6), v, batch, steps=1)  # Flax's default epsilon
    print(report)
    c = report.first_divergence()
    assert (c.phase, c.name) == ("forward (eval)", "norm"), str(report)
    assert "LayerNorm epsilon is 1e-06 where torch's is 1e-05" in report.diagnosis.cause


# --- the checker cannot pass vacuously ---------------------------------------------------------------------

class TorchBare(torch.nn.Module):  # parameters, but no submodule: nothing to hook
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(8, 10))

    def forward(self, x):
        return x @ self.w


class FlaxBare(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x @ self.param("w", nn.initializers.zeros, (8, 10))


def test_no_comparable_layer_fails():
    x = np.ones((4, 8), np.float32)
    report = check_port(TorchBare(), FlaxBare(), {"params": {"w": np.zeros((8, 10), np.float32)}}, (x, np.zeros(4, int)),
                        steps=0)
    assert not report.ok
    assert any("no layer could be compared" in p for p in report.problems), str(report)


def test_mismatched_layer_names_fail(real):
    torch.manual_seed(0)
    model = TorchLN()

    class Renamed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.LayerNorm(epsilon=1e-5, name="layer_norm")(nn.Dense(16, name="fc")(x))
            return nn.Dense(10, name="out")(nn.relu(x))

    v = state_dict_to_variables(model.state_dict())
    v = {"params": {("layer_norm" if k == "norm" else k): p for k, p in v["params"].items()}}
    report = check_port(model, Renamed(), v, (np.ones((4, 8), np.float32), np.zeros(4, int)), steps=0)
    assert not report.ok
    assert any("have no JAX counterpart: 'norm'" in p for p in report.problems), str(report)
    assert any("JAX layer 'layer_norm' has no torch counterpart" in p for p in report.problems), str(report)


def test_nan_outputs_fail():
    torch.manual_seed(0)
    model = TorchLN()
    v = state_dict_to_variables(model.state_dict())
    x = np.full((4, 8), np.nan, np.float32)  # NaN on both sides: equal NaNs must not count as agreement
    report = check_port(model, FlaxLN(), v, (x, np.zeros(4, int)), steps=0)
    assert not report.ok
    assert report.first_divergence().name == "fc", str(report)
