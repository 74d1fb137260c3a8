"""The benchmark variants, a registry of named functions.

Each ``@variant`` function takes a ``Workload`` and a device kind (``"cpu"`` or ``"cuda"``) and
returns ``epoch() -> last step's loss``: one epoch over the workload's batches in file order,
from the workload's initial weights (state persists across calls), synchronised with the device
before it returns, so a clock read after it measures finished work.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from reference_torch import train as ttrain
from reference_torch.data import get_datasets

from .workload import Workload

Epoch = Callable[[], float]
STEPS_PER_CALL = 8  # torch-compile-k's steps per compiled call


FRAMEWORKS = ("torch", "jax")


@dataclass(frozen=True)
class Variant:
    """A registered variant. ``baseline`` names the variant it is an improvement on (the report's paired
    ratio ``baseline / this``); ``tutorial`` marks the tutorial's own loop, the anchor of every speed-up;
    ``sweep`` whether the batch/width sweeps may pick it (not when its speed is its data path's, or when
    every new shape compiles for minutes)."""

    name: str
    framework: str  # one of FRAMEWORKS
    label: str  # what it is, for tables and charts
    build: Callable[[Workload, str], Epoch]
    gpu_only: bool = False
    baseline: str | None = None
    tutorial: bool = False
    sweep: bool = True


VARIANTS: dict[str, Variant] = {}


def variant(name: str, label: str, framework: str, *, baseline: str | None = None, gpu_only: bool = False,
            tutorial: bool = False, sweep: bool = True):
    """Register ``fn(workload, device_kind) -> epoch`` as the variant ``name``; everything the runner and the
    report need to know about it is said here, as data (nothing is read back from the name)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"variant {name}: framework {framework!r} is not one of {FRAMEWORKS}")
    if name in VARIANTS:
        raise ValueError(f"variant {name} registered twice")
    if baseline is not None and baseline not in VARIANTS:
        raise ValueError(f"variant {name}: baseline {baseline!r} is not registered before it")

    def register(fn: Callable[[Workload, str], Epoch]) -> Callable[[Workload, str], Epoch]:
        VARIANTS[name] = Variant(name, framework, label, fn, gpu_only, baseline, tutorial, sweep)
        return fn

    return register


# Comparisons across frameworks the report makes besides each variant against its baseline (and the fastest of each
# framework against each other, always): (faster candidate, baseline).
CROSS = (("jax-scan", "torch-eager"), ("jax-scan", "torch-cudagraph"))


def names(device: str | None = None) -> list[str]:
    """Registered variant names, in registration order; those that run on ``device`` if given."""
    return [v.name for v in VARIANTS.values() if device in (None, "cuda") or not v.gpu_only]


# ---------------------------------------------------------------- torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torch_setup(w: Workload, kind: str):
    """(device, model holding the initial weights, loss, optimizer) as the tutorial builds them."""
    device = torch.device(kind)
    model = w.spec.torch_module(w.hidden).to(device)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in w.state_dict.items()})
    loss_fn = nn.CrossEntropyLoss()
    return device, model, loss_fn, ttrain.make_optimizer(model, w.lr)


def _device_tensors(w: Workload, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(w.x).to(device), torch.from_numpy(w.y.astype(np.int64)).to(device)


class DeviceBatches:
    """Batches sliced from tensors already on the device, in file order, last partial batch kept;
    quacks like the tutorial's DataLoader (``len``, ``.dataset``) so ``train_epoch`` runs on it."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.dataset = range(len(y))

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.y), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


def _loop_epoch(loader, model, loss_fn, optimizer, device: torch.device) -> Epoch:
    """The tutorial's ``train_epoch`` over ``loader``."""

    def epoch() -> float:
        losses = ttrain.train_epoch(loader, model, loss_fn, optimizer, log=None)
        _sync(device)
        return float(losses[-1])

    return epoch


@variant("torch-tutorial", "torch-tutorial (DataLoader + ToTensor)", "torch", tutorial=True, sweep=False)
def torch_tutorial(w: Workload, kind: str) -> Epoch:
    """The tutorial's loop as written: torchvision's dataset, ToTensor per sample, a DataLoader."""
    device, model, loss_fn, optimizer = _torch_setup(w, kind)
    training_data = get_datasets(w.data_dir, download=False)[0]
    ds = training_data if w.n == len(training_data) else Subset(training_data, range(w.n))
    return _loop_epoch(DataLoader(ds, batch_size=w.batch_size), model, loss_fn, optimizer, device)


@variant("torch-eager", "torch-eager (data preloaded)", "torch", baseline="torch-tutorial")
def torch_eager(w: Workload, kind: str) -> Epoch:
    """The same loop over batches sliced from tensors put on the device once."""
    device, model, loss_fn, optimizer = _torch_setup(w, kind)
    x, y = _device_tensors(w, device)
    return _loop_epoch(DeviceBatches(x, y, w.batch_size), model, loss_fn, optimizer, device)


def _compiled_epoch(w: Workload, kind: str, mode: str | None) -> Epoch:
    device, model, loss_fn, optimizer = _torch_setup(w, kind)
    x, y = _device_tensors(w, device)

    def step(xb, yb):
        loss = loss_fn(model(xb), yb)
        loss.backward()  # Dynamo breaks the graph here (fullgraph=True refuses it): AOT autograd compiles the backward
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    compiled = torch.compile(step, mode=mode)

    def epoch() -> float:
        model.train()
        loss = None
        for i in range(0, w.n, w.batch_size):
            loss = compiled(x[i:i + w.batch_size], y[i:i + w.batch_size])
        _sync(device)
        return float(loss)

    return epoch


@variant("torch-compile", "torch-compile (whole step compiled)", "torch", baseline="torch-eager", sweep=False)
def torch_compile(w: Workload, kind: str) -> Epoch:
    """``torch.compile`` of the whole step (forward, backward, SGD update), default mode."""
    return _compiled_epoch(w, kind, None)


@variant("torch-compile-max", "torch-compile max-autotune-no-cudagraphs", "torch", baseline="torch-compile",
         sweep=False)
def torch_compile_max(w: Workload, kind: str) -> Epoch:
    """``torch.compile(mode="max-autotune-no-cudagraphs")`` of the whole step: Inductor times its own GEMM kernels
    against the library's and keeps the faster."""
    return _compiled_epoch(w, kind, "max-autotune-no-cudagraphs")


def _functional_step(model: nn.Module, loss_fn, lr: float, k: int):
    """``k`` steps written as ``torch.func`` writes them, JAX-style: ``grad_and_value`` of the loss as a function
    of the parameters (``functional_call``), then SGD as ``p -= lr * g`` on the parameter tensors. Unlike
    ``loss.backward()``, this traces as one graph (``fullgraph=True``), so k steps can be one compiled call."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    tensors = list(params.values())

    def loss_of(p, xb, yb):
        return loss_fn(torch.func.functional_call(model, p, (xb,)), yb)

    grad_and_loss = torch.func.grad_and_value(loss_of)

    def steps(xs, ys):  # (k, B, 784), (k, B)
        loss = None
        for j in range(k):  # unrolled in the graph
            grads, loss = grad_and_loss(params, xs[j], ys[j])
            torch._foreach_add_(tensors, list(grads.values()), alpha=-lr)
        return loss

    return steps


def _functional_epoch(w: Workload, kind: str, k: int, options: dict | None = None) -> Epoch:
    """The functional step compiled whole (``fullgraph=True``), ``k`` steps a call; the batches that do not fill
    a call (the epoch's tail, the partial batch) run one step a call, through a second compiled function."""
    device, model, loss_fn, _ = _torch_setup(w, kind)
    x, y = _device_tensors(w, device)
    bs = w.batch_size
    one = torch.compile(_functional_step(model, loss_fn, w.lr, 1), fullgraph=True, options=options)
    many = torch.compile(_functional_step(model, loss_fn, w.lr, k), fullgraph=True, options=options) if k > 1 else None
    grouped = (w.n // (k * bs)) * k * bs if many else 0

    def epoch() -> float:
        loss = None
        for i in range(0, grouped, k * bs):
            loss = many(x[i:i + k * bs].view(k, bs, -1), y[i:i + k * bs].view(k, bs))
        for i in range(grouped, w.n, bs):
            loss = one(x[i:i + bs][None], y[i:i + bs][None])
        _sync(device)
        return float(loss)

    return epoch


@variant("torch-func", "torch-func (functional_call + grad, fullgraph compiled)", "torch", baseline="torch-compile")
def torch_func(w: Workload, kind: str) -> Epoch:
    """``torch.func.grad_and_value`` over ``functional_call`` and an SGD update, the whole step one graph under
    ``torch.compile(fullgraph=True)``: the torch twin of JAX's ``jit(grad(loss))`` step."""
    return _functional_epoch(w, kind, 1)


@variant("torch-func-cpp", "torch-func, Inductor's C++ wrapper", "torch", baseline="torch-func", sweep=False)
def torch_func_cpp(w: Workload, kind: str) -> Epoch:
    """The functional step compiled with ``options={"cpp_wrapper": True}``: Inductor calls its kernels from
    generated C++ instead of a generated Python function, one less Python frame per kernel."""
    return _functional_epoch(w, kind, 1, {"cpp_wrapper": True})


@variant("torch-func-k", f"torch-func, {STEPS_PER_CALL} steps per compiled call", "torch", baseline="torch-func",
         sweep=False)
def torch_func_k(w: Workload, kind: str) -> Epoch:
    """The functional step, ``STEPS_PER_CALL`` consecutive steps unrolled in one compiled call: the nearest torch
    comes to handing XLA a whole epoch (``jax-scan``) without writing a loop in the graph."""
    return _functional_epoch(w, kind, STEPS_PER_CALL)


@variant("torch-compile-ro", "torch-compile reduce-overhead (CUDA graphs)", "torch", baseline="torch-compile",
         gpu_only=True)
def torch_compile_ro(w: Workload, kind: str) -> Epoch:
    """``torch.compile(mode="reduce-overhead")``: Inductor's CUDA graphs, GPU only."""
    return _compiled_epoch(w, kind, "reduce-overhead")


def _warm_up_for_capture(model, loss_fn, optimizer, batches) -> None:
    """Warm-up steps on a side stream before a CUDA-graph capture, as the CUDA-graph docs require;
    then the weights are restored, so every variant starts from the same weights."""
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            for xb, yb in batches:
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(snapshot[k])
    optimizer.zero_grad(set_to_none=True)  # grads allocated during capture come from the graph's pool


@variant("torch-cudagraph", "torch-cudagraph (manual CUDA graph)", "torch", baseline="torch-eager", gpu_only=True)
def torch_cudagraph(w: Workload, kind: str) -> Epoch:
    """One full-batch step captured in a CUDA graph and replayed; the last partial batch eagerly."""
    if kind != "cuda":
        raise ValueError("torch-cudagraph needs CUDA")
    device, model, loss_fn, optimizer = _torch_setup(w, kind)
    x, y = _device_tensors(w, device)
    bs = w.batch_size
    full = (w.n // bs) * bs
    static_x, static_y = x[:bs].clone(), y[:bs].clone()
    _warm_up_for_capture(model, loss_fn, optimizer, [(static_x, static_y)])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = loss_fn(model(static_x), static_y)
        static_loss.backward()  # writes fresh .grad each replay (grads were None at capture)
        optimizer.step()

    def epoch() -> float:
        for i in range(0, full, bs):
            static_x.copy_(x[i:i + bs])
            static_y.copy_(y[i:i + bs])
            graph.replay()
        loss = static_loss
        if full < w.n:  # the partial batch runs eagerly; zero the graph-owned grads first
            for p in model.parameters():
                p.grad.zero_()
            loss = loss_fn(model(x[full:]), y[full:])
            loss.backward()
            optimizer.step()
        _sync(device)
        return float(loss)

    return epoch


# ---------------------------------------------------------------- JAX


def jax_device(kind: str) -> jax.Device:
    """JAX's device for ``"cpu"`` or ``"cuda"``; RuntimeError when JAX has no GPU."""
    return jax.devices("cpu" if kind == "cpu" else "gpu")[0]


def _jax_state(w: Workload, kind: str):
    device = jax_device(kind)
    return device, w.spec.jax_state(jax.device_put(w.spec.to_flax(w.state_dict), device), w.lr, w.hidden, device)


@variant("jax-notebook", "jax-notebook (jit step, host batches)", "jax", sweep=False)
def jax_notebook(w: Workload, kind: str) -> Epoch:
    """The jitted step fed host numpy batches, transferred by each call, as JAX's tutorials do."""
    device, state = _jax_state(w, kind)
    bs = w.batch_size
    box = [state]  # the closure's training state, replaced by each epoch

    def epoch() -> float:
        state = box[0]
        with jax.default_device(device):
            for i in range(0, w.n, bs):
                state, metrics = w.spec.jax_train_step(state, (w.x[i:i + bs], w.y[i:i + bs]))
        box[0] = state
        return float(metrics["loss"])  # blocks until the last step is done

    return epoch


@variant("jax-jit", "jax-jit (jit step, device batches)", "jax", baseline="jax-notebook")
def jax_jit(w: Workload, kind: str) -> Epoch:
    """The jitted step over batches put on the device once."""
    device, state = _jax_state(w, kind)
    bs = w.batch_size
    batches = [(jax.device_put(w.x[i:i + bs], device), jax.device_put(w.y[i:i + bs], device))
               for i in range(0, w.n, bs)]
    box = [state]

    def epoch() -> float:
        state = box[0]
        for batch in batches:
            state, metrics = w.spec.jax_train_step(state, batch)
        box[0] = state
        return float(metrics["loss"])

    return epoch


@variant("jax-scan", "jax-scan (one compiled epoch)", "jax", baseline="jax-jit")
def jax_scan(w: Workload, kind: str) -> Epoch:
    """The JAX side's ``train_epoch`` (``jax_impl.train``, ``jax_impl.cnn_train``): the whole epoch one compiled
    ``lax.scan``."""
    device, state = _jax_state(w, kind)
    data = (jax.device_put(w.x, device), jax.device_put(w.y, device))
    box = [state]

    def epoch() -> float:
        box[0], losses = w.spec.jax_train_epoch(box[0], data, w.batch_size, log=None)  # host losses: synced
        return float(losses[-1])

    return epoch
