"""Tutorial chapter "Tensors" in torch; ``jax_impl/basics/tensors.py`` has the same functions."""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "attributes",
    "concatenate",
    "from_data",
    "from_numpy",
    "from_shape",
    "in_place_add",
    "indexing",
    "like",
    "matmul_three_ways",
    "multiply_three_ways",
    "numpy_bridge",
    "single_element",
    "to_device",
]

DATA = [[1, 2], [3, 4]]


def from_data():
    """``torch.tensor(data)``: the dtype is inferred (int64)."""
    return torch.tensor(DATA)


def from_numpy():
    """``torch.from_numpy(np_array)``."""
    return torch.from_numpy(np.array(DATA))


def like(x, seed: int = 0) -> dict:
    """``ones_like`` keeps shape and dtype; ``rand_like`` overrides the dtype to float (global RNG)."""
    torch.manual_seed(seed)
    return {"ones": torch.ones_like(x), "rand": torch.rand_like(x, dtype=torch.float)}


def from_shape(shape=(2, 3), seed: int = 0) -> dict:
    """``rand`` / ``ones`` / ``zeros`` of a shape tuple."""
    torch.manual_seed(seed)
    return {"rand": torch.rand(shape), "ones": torch.ones(shape), "zeros": torch.zeros(shape)}


def attributes(x) -> dict:
    """Shape, dtype and device, as the tutorial prints them."""
    return {"shape": tuple(x.shape), "dtype": str(x.dtype).replace("torch.", ""), "device": x.device.type}


def indexing(x) -> dict:
    """First row, first column, last column, then column 1 set to 0 *in place* (``x[:, 1] = 0``)."""
    out = {"first_row": x[0].clone(), "first_column": x[:, 0].clone(), "last_column": x[..., -1].clone()}
    x[:, 1] = 0
    out["after_set"] = x
    return out


def concatenate(x):
    """``torch.cat([x, x, x], dim=1)``."""
    return torch.cat([x, x, x], dim=1)


def matmul_three_ways(x) -> list:
    """``x @ x.T``, ``x.matmul(x.T)``, ``torch.matmul(x, x.T, out=y3)``."""
    y1 = x @ x.T
    y2 = x.matmul(x.T)
    y3 = torch.rand_like(y1)
    torch.matmul(x, x.T, out=y3)
    return [y1, y2, y3]


def multiply_three_ways(x) -> list:
    """``x * x``, ``x.mul(x)``, ``torch.mul(x, x, out=z3)``: elementwise."""
    z1 = x * x
    z2 = x.mul(x)
    z3 = torch.rand_like(x)
    torch.mul(x, x, out=z3)
    return [z1, z2, z3]


def single_element(x) -> float:
    """``x.sum().item()``: a one-element tensor to a Python number."""
    return x.sum().item()


def in_place_add(x) -> dict:
    """``x.add_(5)`` changes ``x`` itself: the result *is* the input."""
    y = x.add_(5)
    return {"result": y, "input_after": x, "same_object": y is x}


def numpy_bridge() -> dict:
    """A tensor and the numpy array it came from (or goes to) share memory on the CPU."""
    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)  # seen through n
    n2 = np.ones(5)
    t2 = torch.from_numpy(n2)
    np.add(n2, 1, out=n2)  # seen through t2
    return {"numpy_after_tensor_add": n.copy(), "tensor_after_numpy_add": t2.numpy().copy()}


def to_device(x) -> dict:
    """The tutorial's ``tensor.to("cuda")`` where an accelerator is available, else the CPU: a copy on
    that device; an operation must find all its operands on one device, or it raises."""
    device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
    y = torch.as_tensor(x).to(device)
    return {"device": y.device.type, "committed": "(every tensor is on one device)"}
