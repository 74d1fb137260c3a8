"""torch ``state_dict`` <-> Flax ``params`` for ``NeuralNetwork(hidden)`` on either side, any ``hidden``.

torch ``linear_relu_stack.<i>.weight`` is ``[out, in]``; Flax ``linear_relu_stack_<i>/kernel`` is
``[in, out]``: the one transpose. Both directions copy bits (``np.array_equal`` after a round
trip) and refuse unknown, missing or mis-shaped entries by name.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping

import numpy as np

from jax_impl.model import IN_FEATURES, NUM_CLASSES, layer_name


class WeightsError(ValueError):
    """A state_dict or params tree that is not the quickstart MLP."""


_TORCH_KEY = re.compile(r"linear_relu_stack\.(\d+)\.(weight|bias)")
_FLAX_KEY = re.compile(r"linear_relu_stack_(\d+)")


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; this module imports torch only to make tensors
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_chain(layers: dict[int, tuple[tuple, tuple]], key: callable) -> None:
    """``layers[i] = (weight shape as [out, in], bias shape)``; check indices 0, 2, ... and the widths.

    ``key(i, part)`` names the entry in the caller's convention, for the message.
    """
    if not layers:
        raise WeightsError("no linear_relu_stack layers found")
    indices = sorted(layers)
    expected = list(range(0, 2 * len(indices), 2))
    if indices != expected:
        missing = sorted(set(expected) - set(indices)) or indices
        raise WeightsError(f"layer indices {indices} are not 0, 2, 4, ...: missing {key(missing[0], 'weight')}")
    fan_in = IN_FEATURES
    for n, i in enumerate(indices):
        w_shape, b_shape = layers[i]
        if len(w_shape) != 2:
            raise WeightsError(f"{key(i, 'weight')} has shape {w_shape}, expected a matrix")
        out_features, in_features = w_shape
        if in_features != fan_in:
            raise WeightsError(f"{key(i, 'weight')} has shape {w_shape}: expects {in_features} inputs, "
                               f"the previous layer gives {fan_in}")
        if b_shape != (out_features,):
            raise WeightsError(f"{key(i, 'bias')} has shape {b_shape}, expected ({out_features},)")
        if n == len(indices) - 1 and out_features != NUM_CLASSES:
            raise WeightsError(f"{key(i, 'weight')} has {out_features} outputs, the last layer needs {NUM_CLASSES}")
        fan_in = out_features


def hidden_of(tree) -> tuple[int, ...]:
    """The hidden widths of a torch state_dict or a Flax params tree (validated on the way)."""
    params = torch_to_flax(tree) if any("." in str(k) for k in tree) else tree
    flax_to_torch_numpy(params)  # validates the chain
    layers = sorted(params.items(), key=lambda kv: int(_FLAX_KEY.fullmatch(kv[0]).group(1)))
    return tuple(int(np.shape(layer["kernel"])[1]) for _, layer in layers[:-1])


def torch_to_flax(state_dict: Mapping[str, object]) -> dict:
    """Flax params (numpy arrays) holding exactly the state_dict's values, kernels transposed."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for k, v in state_dict.items():
        m = _TORCH_KEY.fullmatch(k)
        if not m:
            raise WeightsError(f"unknown state_dict key {k!r} (expected linear_relu_stack.<i>.weight|bias)")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = _numpy(v)
    torch_key = lambda i, part: f"linear_relu_stack.{i}.{part}"  # noqa: E731
    for i, parts in found.items():
        for part in ("weight", "bias"):
            if part not in parts:
                raise WeightsError(f"missing state_dict key {torch_key(i, part)!r}")
    _check_chain({i: (p["weight"].shape, p["bias"].shape) for i, p in found.items()}, lambda i, part: repr(torch_key(i, part)))
    return {
        layer_name(i): {"kernel": np.ascontiguousarray(p["weight"].T), "bias": p["bias"].copy()}
        for i, p in sorted(found.items())
    }


def flax_to_torch(params: Mapping[str, Mapping[str, object]]) -> "OrderedDict":
    """A torch state_dict (CPU tensors) holding exactly the params' values, kernels transposed."""
    import torch

    return OrderedDict((k, torch.from_numpy(v)) for k, v in flax_to_torch_numpy(params).items())


def flax_to_torch_numpy(params: Mapping[str, Mapping[str, object]]) -> "OrderedDict[str, np.ndarray]":
    """``flax_to_torch`` as numpy arrays, without torch: the torch layout for files both sides read."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for name, layer in params.items():
        m = _FLAX_KEY.fullmatch(str(name))
        if not m or not isinstance(layer, Mapping):
            raise WeightsError(f"unknown params entry {name!r} (expected linear_relu_stack_<i> with kernel and bias)")
        extra = set(layer) - {"kernel", "bias"}
        if extra:
            raise WeightsError(f"unknown params entry {name}/{sorted(extra)[0]}")
        for part in ("kernel", "bias"):
            if part not in layer:
                raise WeightsError(f"missing params entry {name}/{part}")
        found[int(m.group(1))] = {"kernel": _numpy(layer["kernel"]), "bias": _numpy(layer["bias"])}
    flax_key = lambda i, part: f"{layer_name(i)}/{'kernel' if part == 'weight' else 'bias'}"  # noqa: E731
    for i, p in found.items():
        if p["kernel"].ndim != 2:
            raise WeightsError(f"{flax_key(i, 'weight')} has shape {p['kernel'].shape}, expected a matrix")
    _check_chain({i: (p["kernel"].shape[::-1], p["bias"].shape) for i, p in found.items()}, flax_key)
    state = OrderedDict()
    for i, p in sorted(found.items()):
        state[f"linear_relu_stack.{i}.weight"] = np.ascontiguousarray(p["kernel"].T)
        state[f"linear_relu_stack.{i}.bias"] = p["bias"].copy()
    return state
