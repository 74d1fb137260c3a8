"""The autograd chapter: torch's ``backward`` / ``.grad`` next to ``jax.grad`` / ``jax.vjp``, same numbers."""
import numpy as np
import pytest

from jax_impl.basics import autograd as jx
from parity.tolerances import AUTOGRAD
from reference_torch.basics import autograd as tt


@pytest.fixture(scope="module")
def inputs():
    return tt.tutorial_inputs(0)  # torch's random w and b feed both sides


def test_single_layer_gradients(inputs):
    t, j = tt.single_layer(**inputs), jx.single_layer(**inputs)
    for key in ("z", "loss", "grad_w", "grad_b"):
        np.testing.assert_allclose(j[key], t[key], rtol=AUTOGRAD.rtol, atol=AUTOGRAD.atol, err_msg=key)
    # The tutorial's structure: x is all ones, so every row of dloss/dw equals dloss/db.
    np.testing.assert_allclose(t["grad_w"], np.broadcast_to(t["grad_b"], (5, 3)), rtol=1e-6)
    # And the values are the closed form (sigmoid(z) - y) / 3.
    np.testing.assert_allclose(t["grad_b"], (1 / (1 + np.exp(-t["z"])) - inputs["y"]) / 3, rtol=1e-5)


def test_frozen_bias_and_stop_gradient(inputs):
    t, j = tt.frozen_bias(**inputs), jx.frozen_bias(**inputs)
    # torch never computes a frozen leaf's gradient; JAX computes one through stop_gradient, and it is
    # zero where the unfrozen bias's is not.
    assert t["grad_b"] is None
    assert j["grad_b"].shape == (3,) and not j["grad_b"].any()
    assert np.abs(jx.single_layer(**inputs)["grad_b"]).min() > 1e-3
    np.testing.assert_allclose(j["grad_w"], t["grad_w"], rtol=AUTOGRAD.rtol, atol=AUTOGRAD.atol)
    np.testing.assert_allclose(t["grad_w"], tt.single_layer(**inputs)["grad_w"], rtol=1e-6)
    args = {k: inputs[k] for k in ("x", "w", "b")}
    assert tt.tracking(**args) == jx.tracking(**args) == {"tracked": True, "no_grad": False, "detach": False}
    np.testing.assert_array_equal(tt.detach_grad(**args), jx.detach_grad(**args))
    np.testing.assert_array_equal(tt.detach_grad(**args), np.ones((5, 3), np.float32))  # only the "+ z" term


def test_jacobian_products_match_the_tutorial():
    t, j = tt.jacobian_products(), jx.jacobian_products()
    eye = np.eye(5, dtype=np.float32)
    expected = {"first": 2 + 2 * eye, "second": 4 + 4 * eye, "after_zero": 2 + 2 * eye}  # 4s/2s, 8s/4s, 4s/2s
    for key, value in expected.items():
        np.testing.assert_array_equal(t[key], value, err_msg=f"torch {key}")
        np.testing.assert_array_equal(j[key], value, err_msg=f"jax {key}")
