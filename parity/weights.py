"""The MLP's torch ``state_dict`` <-> Flax ``params`` conversion, which lives in ``quickstart_parity_common.convert``
(numpy only, so both sides may use it); re-exported here for the referee, plus torch tensors."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from quickstart_parity_common.convert import WeightsError, flax_to_torch_numpy, hidden_of, torch_to_flax

__all__ = ["WeightsError", "flax_to_torch", "flax_to_torch_numpy", "hidden_of", "torch_to_flax"]


def flax_to_torch(params: Mapping[str, Mapping[str, object]]) -> OrderedDict:
    """A torch state_dict (CPU tensors) holding exactly the params' values, kernels transposed."""
    import torch  # noqa: PLC0415 -- parity.oracle's JAX-only process imports this module

    return OrderedDict((k, torch.from_numpy(v)) for k, v in flax_to_torch_numpy(params).items())
