"""Parameters as a ``state_dict`` (an ordered dict of named tensors) in torch; ``jax_impl/basics/pytrees.py``
has the same functions for Flax's params pytree."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["flatten_to_vector", "global_norm", "parameter_order", "scale_all"]


def parameter_order(model: nn.Module) -> list[str]:
    """``state_dict()`` keys: registration order, each layer's ``weight`` before its ``bias``."""
    return list(model.state_dict())


def scale_all(model: nn.Module, factor: float) -> dict[str, np.ndarray]:
    """Every parameter times ``factor``: a dict comprehension over the state_dict (in place would be
    ``p.mul_(factor)`` under ``no_grad``)."""
    return {k: (v * factor).numpy() for k, v in model.state_dict().items()}


def flatten_to_vector(model: nn.Module) -> np.ndarray:
    """``parameters_to_vector``: every parameter flattened, in registration order, into one vector."""
    return nn.utils.parameters_to_vector(model.parameters()).detach().numpy()


def global_norm(model: nn.Module) -> float:
    """The L2 norm over all parameters, as ``clip_grad_norm_`` computes it for gradients."""
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.detach()) for p in model.parameters()])))
