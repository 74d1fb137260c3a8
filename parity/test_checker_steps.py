"""The checker's step phase with the optimizers ports get wrong: Adam's eps inside the square root, AdamW's
decay coupled, a learning rate off by the batch size. Each port's own optax transformation (``jax_optimizer``)
is checked against torch.optim's; the proven twins (``parity.optimizers``) pass, so each failure is the bug's.
"""
from __future__ import annotations

import numpy as np
import optax
import pytest
import torch

from parity import SGD, Adam, AdamW, check_port
from quickstart_parity_common.convert import kinds_of, state_dict_to_variables
from tests.port_factories import FlaxNet as FlaxLN
from tests.port_factories import TorchNet as TorchLN

BATCH = 16


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = TorchLN()
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((BATCH, 8)).astype(np.float32), rng.integers(0, 10, BATCH)) for _ in range(2)]
    return model, state_dict_to_variables(model.state_dict(), kinds=kinds_of(model.named_modules())), batches


def check(case, optimizer, jax_optimizer=None):
    model, variables, batches = case
    report = check_port(model, FlaxLN(), variables, batches[0], steps=3, more_batches=batches[1:],
                        optimizer=optimizer, jax_optimizer=jax_optimizer)
    print(report)
    return report


@pytest.mark.parametrize("optimizer", [SGD(0.1, momentum=0.9, weight_decay=1e-2), Adam(1e-2, weight_decay=1e-2),
                                       AdamW(1e-2), Adam(1e-2, amsgrad=True)], ids=lambda o: type(o).__name__)
def test_proven_twins_pass(case, optimizer):
    assert check(case, optimizer).ok


@pytest.mark.parametrize("name, optimizer, port, cause", [
    ("adam eps inside the square root", Adam(1e-2), optax.adam(1e-2, eps=0.0, eps_root=1e-8),
     "Adam's eps is inside the square root"),
    ("adamw decay coupled (L2 in the gradient)", AdamW(1e-2, weight_decay=0.1),
     optax.chain(optax.add_decayed_weights(0.1), optax.adam(1e-2)), "AdamW's weight decay is coupled"),
    ("adam decay decoupled", Adam(1e-2, weight_decay=0.1), optax.adamw(1e-2, weight_decay=0.1),
     "Adam's weight decay is decoupled"),
    ("lr x batch size", SGD(0.1), optax.sgd(0.1 * BATCH), "times the batch size (16)"),
    ("optax's amsgrad", Adam(1e-2, amsgrad=True), optax.amsgrad(1e-2), None),
])
def test_wrong_optimizer_fails_at_the_first_step(case, name, optimizer, port, cause):
    report = check(case, optimizer, port)
    assert not report.ok, name
    first = report.first_divergence()
    # forward and gradients are the model's and pass; the optimizer shows in the parameters after its update
    assert first.phase == ("step 2" if cause is None else "step 1"), str(report)
    assert all(c.ok for c in report.checks if not c.phase.startswith("step"))
    if cause:
        assert report.diagnosis.cause and cause in report.diagnosis.cause, str(report)
    else:  # optax's AMSGrad keeps the maximum of the corrected moment: equal at step 1, apart from step 2 on
        assert report.diagnosis.cause is None and "optimizer's state" in str(report.diagnosis), str(report)


def test_not_an_optimizer_is_refused(case):
    from parity import PortCheckError  # noqa: PLC0415 -- the public name, next to its use

    model, variables, batches = case
    with pytest.raises(PortCheckError, match="expected parity.optimizers.SGD, Adam or AdamW"):
        check_port(model, FlaxLN(), variables, batches[0], optimizer=torch.optim.SGD)
    with pytest.raises(PortCheckError, match="expected an optax.GradientTransformation"):
        check_port(model, FlaxLN(), variables, batches[0], optimizer=SGD(0.1), jax_optimizer="sgd")
