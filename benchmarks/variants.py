"""The benchmark variants: each trains the quickstart's math (same weights, same batches, file order)
and exposes ``epoch() -> last step's loss``, synchronised with the device before it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from parity.harness import Split, torch_model
from parity.weights import hidden_of, torch_to_flax
from reference_torch import train as ttrain

TORCH_VARIANTS = ("torch-tutorial", "torch-eager", "torch-compile", "torch-compile-ro", "torch-cudagraph")
JAX_VARIANTS = ("jax-notebook", "jax-jit", "jax-scan")
GPU_ONLY = ("torch-compile-ro", "torch-cudagraph")


def flops_per_sample(hidden=(512, 512)) -> float:
    """Training FLOPs per sample: forward (2 per MAC), weight gradients (same) and input gradients
    of every layer but the first (no gradient w.r.t. the images). 3.21 MFLOP for the quickstart."""
    dims = [784, *hidden, 10]
    macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2.0 * (2 * sum(macs) + sum(macs[1:]))


@dataclass
class Workload:
    split: Split  # host numpy, file order
    state_dict: dict  # the common initial weights (torch keys, numpy)
    batch_size: int = 64
    lr: float = 1e-3

    @property
    def n(self) -> int:
        return len(self.split.y)

    @property
    def steps(self) -> int:
        return -(-self.n // self.batch_size)


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_variant(name: str, w: Workload, device: torch.device, tutorial_data=None) -> Callable[[], float]:
    """An ``epoch()`` closure for one torch variant (state persists across calls)."""
    model = torch_model(w.state_dict, device=device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = ttrain.make_optimizer(model, w.lr)

    def loop_epoch(loader):  # the tutorial's train_epoch over any loader
        def epoch():
            losses = ttrain.train_epoch(loader, model, loss_fn, optimizer, log=None)
            _sync(device)
            return float(losses[-1])

        return epoch

    if name == "torch-tutorial":  # DataLoader + ToTensor per sample, exactly the tutorial's loop
        from torch.utils.data import DataLoader, Subset

        ds = tutorial_data if w.n == len(tutorial_data) else Subset(tutorial_data, range(w.n))
        return loop_epoch(DataLoader(ds, batch_size=w.batch_size))

    x = torch.from_numpy(w.split.x).to(device)  # (N, 784) once, on the device
    y = torch.from_numpy(w.split.y.astype(np.int64)).to(device)

    if name == "torch-eager":
        return loop_epoch(DeviceBatches(x, y, w.batch_size))

    if name in ("torch-compile", "torch-compile-ro"):
        def step(xb, yb):
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss.detach()

        compiled = torch.compile(step, mode="reduce-overhead" if name.endswith("-ro") else None)

        def epoch():
            model.train()
            loss = None
            for i in range(0, w.n, w.batch_size):
                loss = compiled(x[i:i + w.batch_size], y[i:i + w.batch_size])
            _sync(device)
            return float(loss)

        return epoch

    if name == "torch-cudagraph":
        if device.type != "cuda":
            raise ValueError("torch-cudagraph needs CUDA")
        bs = w.batch_size
        full = (w.n // bs) * bs
        static_x, static_y = x[:bs].clone(), y[:bs].clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.cuda.stream(side):  # warm-up iterations before capture, as the CUDA-graph docs require
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(static_x), static_y).backward()
                optimizer.step()
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():  # undo the warm-up steps: every variant starts from the same weights
            for k, v in model.state_dict().items():
                v.copy_(snapshot[k])
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = loss_fn(model(static_x), static_y)
            static_loss.backward()  # writes fresh .grad each replay (grads were None at capture)
            optimizer.step()

        def epoch():
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

    raise ValueError(f"unknown torch variant {name}")


def jax_variant(name: str, w: Workload, device) -> Callable[[], float]:
    """An ``epoch()`` closure for one JAX variant (state persists across calls)."""
    import jax

    from jax_impl import train as jtrain
    hidden = hidden_of(w.state_dict)
    box = {"state": jtrain.create_train_state(jax.device_put(torch_to_flax(w.state_dict), device), w.lr, hidden)}
    bs = w.batch_size

    if name == "jax-scan":
        data = (jax.device_put(w.split.x, device), jax.device_put(w.split.y, device))

        def epoch():
            box["state"], losses = jtrain.train_epoch(box["state"], data, bs, log=None)  # reads losses: synced
            return float(losses[-1])

        return epoch

    if name == "jax-jit":
        batches = [(jax.device_put(w.split.x[i:i + bs], device), jax.device_put(w.split.y[i:i + bs], device))
                   for i in range(0, w.n, bs)]

        def epoch():
            state = box["state"]
            for batch in batches:
                state, metrics = jtrain.train_step(state, batch)
            box["state"] = state
            return float(metrics["loss"])  # blocks until the last step is done

        return epoch

    if name == "jax-notebook":  # host numpy batches, transferred by each call, as JAX's tutorials do
        def epoch():
            state = box["state"]
            with jax.default_device(device):
                for i in range(0, w.n, bs):
                    state, metrics = jtrain.train_step(state, (w.split.x[i:i + bs], w.split.y[i:i + bs]))
            box["state"] = state
            return float(metrics["loss"])

        return epoch

    raise ValueError(f"unknown JAX variant {name}")
