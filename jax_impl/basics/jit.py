"""``jax.jit`` and tracing, mirroring ``reference_torch/basics/jit.py`` (eager torch).

``jax.jit`` runs the Python function once per input *signature* (shapes, dtypes, static values)
with abstract tracers, compiles what it recorded, and replays the compiled program afterwards.
``jax.grad`` alone also traces, but with concrete values and again on every call.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["control_flow", "donation", "ready", "static_argument", "tracing_counts"]


def _f(x):
    if x > 0:  # needs a concrete value: fine under grad, an error under jit
        return x ** 2
    return -x


def control_flow(values: list[float]) -> dict:
    """``jax.grad(f)`` at each value (it traces ``f`` on every call, with concrete values, so the
    ``if`` works), and ``jax.jit(jax.grad(f))``, whose abstract tracer cannot be a Python bool: jit
    has no fallback to Python (torch's graph break), it compiles the whole function or fails.
    ``lax.cond`` is the branch as an operator, which compiles."""
    traces = []

    def f(x):
        traces.append(type(x).__name__)
        return _f(x)

    grads = [float(jax.grad(f)(jnp.float32(v))) for v in values]
    try:
        jax.jit(jax.grad(_f))(jnp.float32(values[0]))
        compiled = "compiled"
    except jax.errors.TracerBoolConversionError:
        compiled = "TracerBoolConversionError"
    cond = jax.jit(jax.grad(_f_cond))
    return {"grads": grads, "grad_traces": len(traces), "compiled": compiled,
            "graph_breaks": "(no fallback: jit compiles all of f or fails)",
            "cond_grads": [float(cond(jnp.float32(v))) for v in values]}


def _f_cond(x):
    return jax.lax.cond(x > 0, lambda x: x ** 2, lambda x: -x, x)


def tracing_counts(shapes: list[int]) -> dict:
    """How often the Python body runs under ``jax.jit`` for inputs of ``shapes``: once per new shape."""
    runs = []

    @jax.jit
    def f(x):
        runs.append(x.shape[0])  # a side effect: runs only while tracing
        return (x * 2).sum()

    for n in shapes:
        f(jnp.ones(n))
    return {"python_runs": len(runs), "traced_shapes": runs}


def static_argument(ns: list[int]) -> dict:
    """``static_argnames="n"``: each distinct ``n`` is its own trace and compilation (then cached)."""
    runs = []

    @partial(jax.jit, static_argnames="n")
    def power_sum(x, n: int):
        runs.append(n)  # n is a Python int at trace time: one compiled program per value
        return (x ** n).sum()

    x = jnp.arange(1.0, 4.0)
    return {"results": [float(power_sum(x, n=n)) for n in ns], "python_runs": len(runs)}


def donation() -> dict:
    """``jax.jit(..., donate_argnums=0)``: XLA may write the result into the input's buffer; the
    donated input is deleted and unusable afterwards."""
    f = jax.jit(lambda x: x + 1, donate_argnums=0)
    x = jnp.ones(1000)
    before = x.unsafe_buffer_pointer()
    y = f(x)
    return {"same_buffer": y.unsafe_buffer_pointer() == before, "input_usable": not x.is_deleted(),
            "result_sum": float(y.sum())}


def ready(n: int = 512) -> np.ndarray:
    """JAX dispatches asynchronously: ``x @ x`` returns a future at once; ``block_until_ready()``
    waits for it (time that, never the dispatch). Converting to numpy waits too."""
    x = jnp.ones((n, n)) / n
    y = (x @ x).block_until_ready()
    return np.asarray(y.sum(1))
