"""Fixtures for both test folders: the real data set, and skipping GPU tests with a reason."""
import os

# torch and JAX share one GPU in the parity tests: stop JAX from taking 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

from tests.helpers import real_data_dir  # noqa: E402


def _cuda_reason() -> str | None:
    try:
        import torch  # noqa: PLC0415 -- absent torch: GPU tests skip, saying so
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
    import jax  # noqa: PLC0415 -- only when GPU tests were collected and torch sees CUDA

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "JAX sees no GPU (install jax[cuda12]/jax[cuda13])"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _cuda_reason()
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"gpu test: {reason}"))


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The real FashionMNIST (CI installs Debian's copy); skipped with a reason where it is absent."""
    path = real_data_dir()
    if path is None:
        pytest.skip("real FashionMNIST not found: run 'make data' or 'apt-get install dataset-fashion-mnist'")
    return path
