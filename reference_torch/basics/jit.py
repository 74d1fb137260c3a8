"""Eager execution in torch, the counterpart of ``jax_impl/basics/jit.py`` (tracing and compiling).

torch runs the Python function on every call, with concrete tensors: ``if x > 0`` just works,
nothing is cached, and there is nothing to retrace. ``torch.compile`` is torch's tracer and
compiler, ``jax.jit``'s counterpart: ``control_flow`` sets the two against each other.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["control_flow", "donation", "ready", "static_argument", "tracing_counts"]


def _f(x):
    if x > 0:  # Python control flow on a value
        return x ** 2
    return -x


def control_flow(values: list[float]) -> dict:
    """The derivative of ``x ** 2 if x > 0 else -x`` at each value, three ways.

    Eager autograd: the Python body runs on every call with the concrete value. ``torch.compile``
    (TorchDynamo; ``backend="eager"`` keeps the capture, which decides graph breaks, and skips
    Inductor's seconds of code generation): the ``if`` on a tensor is a graph break, so that part
    falls back to Python, and with ``fullgraph=True`` it is an error. ``torch.cond`` is the branch
    as an operator, which compiles whole: ``jax.lax.cond``'s twin.
    """
    runs = []
    grads = []
    for v in values:
        x = torch.tensor(v, requires_grad=True)
        runs.append(v)
        _f(x).backward()
        grads.append(float(x.grad))
    torch._dynamo.reset()  # a fresh cache: the counts below do not depend on earlier calls
    breaks = torch._dynamo.explain(_f)(torch.tensor(values[0])).graph_break_count
    try:
        torch.compile(_f, backend="eager", fullgraph=True)(torch.tensor(values[0]))
        fullgraph = "compiled"
    except torch._dynamo.exc.Unsupported:
        fullgraph = "Unsupported (data-dependent branching)"
    cond = torch.compile(_f_cond, backend="eager", fullgraph=True)
    cond_grads = []
    for v in values:
        x = torch.tensor(v, requires_grad=True)
        cond(x).backward()
        cond_grads.append(float(x.grad))
    return {"grads": grads, "grad_traces": len(runs), "compiled": fullgraph,
            "graph_breaks": f"{breaks} graph break: the if runs in Python", "cond_grads": cond_grads}


def _f_cond(x):
    return torch.cond(x > 0, lambda x: x ** 2, lambda x: -x, (x,))


def tracing_counts(shapes: list[int]) -> dict:
    """How often the Python body runs for calls with inputs of ``shapes``: every call (eager)."""
    runs = []

    def f(x):
        runs.append(x.shape[0])
        return (x * 2).sum()

    for n in shapes:
        f(torch.ones(n))
    return {"python_runs": len(runs)}


def static_argument(ns: list[int]) -> dict:
    """``x ** n`` summed for each ``n``: an int argument is just a Python value, every call."""
    x = torch.arange(1.0, 4.0)
    return {"results": [float((x ** n).sum()) for n in ns], "python_runs": len(ns)}


def donation() -> dict:
    """In-place update (``x.add_(1)``): the result reuses the input's memory, and the input *is*
    the result afterwards; the explicit, always-available way to avoid a new buffer."""
    x = torch.ones(1000)
    before = x.data_ptr()
    y = x.add_(1)
    return {"same_buffer": y.data_ptr() == before, "input_usable": True, "result_sum": float(y.sum())}


def ready(n: int = 512) -> np.ndarray:
    """A CPU matmul returns when it is done (on CUDA torch is asynchronous too: time with
    ``torch.cuda.synchronize()``); the result's row sums."""
    x = torch.ones(n, n) / n
    return (x @ x).sum(1).numpy()
