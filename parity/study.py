"""python -m parity.study: write ``docs/side_by_side.md``, the study guide, from the basics modules.

For each chapter of the tutorial: the torch function and its JAX twin (their source, taken from
``reference_torch/basics`` and ``jax_impl/basics``), the numbers both produce on the same inputs,
and where the two differ in kind. ``parity/test_study.py`` fails when the committed guide is not
what this generates.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "side_by_side.md"


@dataclass
class Chapter:
    title: str
    module: str  # the module name under reference_torch/basics and jax_impl/basics
    functions: list[str]
    numbers: Callable[[str], list[tuple[str, object, object]]]  # data_dir -> (what, torch, jax)
    differences: list[str] = field(default_factory=list)
    extra: str = ""  # markdown after the numbers (e.g. a figure)


def fmt(value) -> str:
    """A short, stable text form of a result (4 decimals for floats)."""
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    if isinstance(value, (bool, str, int)) or value is None:
        return f"`{value}`"
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):  # a shape
        return f"`{value}`"
    if isinstance(value, float):
        return f"`{value:.4f}`"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], tuple):
        return "<br>".join(f"`{v}`" for v in value)
    arr = np.asarray(value)
    text = np.array2string(arr, precision=4, separator=", ", suppress_small=True, max_line_width=10_000)
    return f"`{' '.join(text.split())}` ({arr.dtype})"


def _tensors(data_dir):
    import jax.numpy as jnp
    import torch

    from jax_impl.basics import tensors as j
    from reference_torch.basics import tensors as t

    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    ti, ji = t.in_place_add(torch.tensor(x)), j.in_place_add(jnp.asarray(x))
    tb, jb = t.numpy_bridge(), j.numpy_bridge()
    return [
        ("`from_data()`", t.from_data(), j.from_data()),
        ("`matmul_three_ways(x)[0]`", t.matmul_three_ways(torch.tensor(x))[0], j.matmul_three_ways(jnp.asarray(x))[0]),
        ("`indexing(x)['after_set']`", t.indexing(torch.tensor(x))["after_set"], j.indexing(jnp.asarray(x))["after_set"]),
        ("`in_place_add(x)`: input afterwards", ti["input_after"], ji["input_after"]),
        ("`in_place_add(x)`: result is the input", ti["same_object"], ji["same_object"]),
        ("`numpy_bridge()`: numpy after adding to the tensor", tb["numpy_after_tensor_add"], jb["numpy_after_tensor_add"]),
        ("`single_element(x)`", t.single_element(torch.tensor(x)), j.single_element(jnp.asarray(x))),
    ]


def _datasets(data_dir):
    from jax_impl.basics import datasets as j
    from jax_impl.data import load_fashion_mnist
    from reference_torch.basics import datasets as t
    from reference_torch.data import get_datasets

    _, test_data = get_datasets(data_dir, download=False)
    images, labels = load_fashion_mnist(data_dir, train=False)
    ti, tn = t.sample(test_data, 0)
    ji, jn = j.sample(images, labels, 0)
    return [
        ("`sample(test, 0)`: class", tn, jn),
        ("`sample(test, 0)`: mean pixel", float(ti.mean()), float(ji.mean())),
        ("`shuffled_orders(10, 4, seed=0)` epoch 1", t.shuffled_orders(10, 4, 0, 2)[0], j.shuffled_orders(10, 4, 0, 2)[0]),
        ("`shuffled_orders(10, 4, seed=0)` epoch 2", t.shuffled_orders(10, 4, 0, 2)[1], j.shuffled_orders(10, 4, 0, 2)[1]),
    ]


def _transforms(data_dir):
    from jax_impl.basics import transforms as j
    from jax_impl.data import load_fashion_mnist
    from reference_torch.basics import transforms as t

    images, _ = load_fashion_mnist(data_dir, train=False)
    ti, ji = t.to_tensor(images[0]), j.to_tensor(images[0])
    return [
        ("`to_tensor(test image 0)`: shape", tuple(ti.shape), tuple(ji.shape)),
        ("`to_tensor(test image 0)`: bit-identical", bool(np.array_equal(ti.numpy().view(np.uint32), np.asarray(ji).view(np.uint32))), True),
        ("`one_hot(3)`", t.one_hot(3), j.one_hot(3)),
    ]


def _layers(data_dir):
    import jax

    from jax_impl.basics import layers as j
    from jax_impl.model import init_params
    from reference_torch.basics import layers as t
    from reference_torch.model import NeuralNetwork

    images = t.minibatch(0)
    layers = t.make_layers(0)
    params = {n: {"kernel": l.weight.detach().numpy().T, "bias": l.bias.detach().numpy()} for n, l in layers.items()}
    tw, jw = t.walk_through(images, layers), j.walk_through(images, params)
    return [
        ("`walk_through`: flat shape", tw["flat"].shape, jw["flat"].shape),
        ("`walk_through`: hidden1[0, :4]", tw["hidden1"][0, :4], jw["hidden1"][0, :4]),
        ("`walk_through`: probabilities[0]", tw["probabilities"][0], jw["probabilities"][0]),
        ("`walk_through`: predicted", tw["predicted"], jw["predicted"]),
        ("`named_parameters(model)`", t.named_parameters(NeuralNetwork()), j.named_parameters(init_params(jax.random.PRNGKey(0)))),
    ]


def _autograd(data_dir):
    from jax_impl.basics import autograd as j
    from reference_torch.basics import autograd as t

    inputs = t.tutorial_inputs(0)
    ts_, js_ = t.single_layer(**inputs), j.single_layer(**inputs)
    args = {k: inputs[k] for k in ("x", "w", "b")}
    tj, jj = t.jacobian_products(), j.jacobian_products()
    return [
        ("`single_layer`: loss", float(ts_["loss"]), float(js_["loss"])),
        ("`single_layer`: grad_b", ts_["grad_b"], js_["grad_b"]),
        ("`frozen_bias`: grad_b", t.frozen_bias(**inputs)["grad_b"], j.frozen_bias(**inputs)["grad_b"]),
        ("`tracking`", str(t.tracking(**args)), str(j.tracking(**args))),
        ("`jacobian_products()`: first, row 0", tj["first"][0], jj["first"][0]),
        ("`jacobian_products()`: second, row 0", tj["second"][0], jj["second"][0]),
        ("`jacobian_products()`: after zero, row 0", tj["after_zero"][0], jj["after_zero"][0]),
    ]


def _save_load(data_dir):
    import pickle

    import jax

    from jax_impl.basics import save_load as j
    from jax_impl.model import init_params
    from parity.weights import torch_to_flax
    from reference_torch.basics import save_load as t
    from reference_torch.model import NeuralNetwork

    import torch

    torch.manual_seed(0)
    model = NeuralNetwork()
    x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        t.save_safetensors(model, f"{tmp}/m.safetensors")
        params = j.load_safetensors(f"{tmp}/m.safetensors")
        j.save_safetensors(init_params(jax.random.PRNGKey(0)), f"{tmp}/p.safetensors")
        from_jax = t.load_safetensors(f"{tmp}/p.safetensors")
        t.write_crafted_pickle(f"{tmp}/evil.pth", f"{tmp}/marker")
        try:
            t.load_untrusted(f"{tmp}/evil.pth")
            refused = "loaded"
        except pickle.UnpicklingError:
            refused = "UnpicklingError (weights_only=True)"
    return [
        ("torch-trained weights via safetensors: predictions", t.predict_all(model, x), j.predict_all(params, x)),
        ("JAX weights via safetensors: predictions", t.predict_all(from_jax, x),
         j.predict_all(torch_to_flax({k: v.numpy() for k, v in from_jax.state_dict().items()}), x)),
        ("crafted pickle, default load", refused, "(no pickle: msgpack and safetensors hold arrays only)"),
    ]


CHAPTERS = [
    Chapter("Tensors", "tensors", ["from_data", "from_numpy", "like", "from_shape", "attributes", "indexing", "concatenate",
                                   "matmul_three_ways", "multiply_three_ways", "single_element", "in_place_add", "numpy_bridge"],
            _tensors, [
                "**Mutable vs immutable.** `x[:, 1] = 0` and `x.add_(5)` change the tensor; JAX arrays never change: "
                "`x.at[:, 1].set(0)` and `x.at[...].add(5)` return new arrays (inside `jit`, XLA reuses the buffer when it can).",
                "**Memory shared with numpy.** `t.numpy()` and `torch.from_numpy(n)` alias the same CPU memory; "
                "`jnp.asarray(n)` copies to the device and `np.asarray(jax_array)` is read-only.",
                "**Default integer width.** torch infers int64; JAX uses int32 unless `jax_enable_x64` is set.",
                "**Random numbers.** `torch.rand` draws from a hidden global generator; JAX needs an explicit key.",
            ]),
    Chapter("Datasets & DataLoaders", "datasets", ["sample", "CustomImageDataset", "shuffled_orders", "sample_grid"], _datasets, [
        "**Stateful vs explicit PRNG.** `DataLoader(shuffle=True)` advances a generator's hidden state each epoch; "
        "the JAX iterator takes a key, and the caller splits one subkey per epoch, so any epoch can be replayed alone.",
        "**Objects vs arrays.** A torch `Dataset` is indexed one sample at a time and `DataLoader` collates; in JAX the "
        "set is an array and a batch is a slice (or a gather by permuted indices).",
        "The shuffled orders differ between the frameworks (different generators); both are permutations of every sample.",
    ], extra="The tutorial's 3x3 grid of training images (`sample_grid`, written next to this guide):\n\n"
             "![3x3 grid of FashionMNIST training images](sample_grid.png)\n"),
    Chapter("Transforms", "transforms", ["to_tensor", "one_hot"], _transforms, [
        "`ToTensor` converts a PIL image (HWC uint8) to CHW float32 / 255; the JAX side does the same arithmetic on "
        "arrays, and the results are bit-identical (`parity/test_data.py` checks all 70,000 images).",
        "`scatter_` writes into a zero tensor in place; `jax.nn.one_hot` is a pure function.",
    ]),
    Chapter("Build the neural network", "layers", ["minibatch", "make_layers", "walk_through", "named_parameters"], _layers, [
        "**Parameters live in modules vs in a pytree.** `nn.Linear` owns its weight; a Flax `nn.Dense` is a description, "
        "`init` returns the parameters and `apply` takes them.",
        "**Layout.** torch stores `weight` as `[out, in]` and computes `x @ W.T`; Flax stores `kernel` as `[in, out]`. "
        "Names map one to one (`linear_relu_stack.0.weight` is `linear_relu_stack_0/kernel`, transposed).",
        "**`model.eval()` vs flags.** torch switches modes on the object; a Flax module takes `train`/`deterministic` "
        "as call arguments (this MLP has no dropout or batch norm, so both modes compute the same).",
    ]),
    Chapter("Automatic differentiation", "autograd", ["single_layer", "frozen_bias", "tracking", "detach_grad",
                                                      "jacobian_products"], _autograd, [
        "**`.grad` accumulation vs returned gradients.** `backward()` adds into `.grad` (hence 8s and 4s on the second "
        "call and the `zero_grad()` in every training step); `jax.grad`/`jax.vjp` return fresh values, and accumulating "
        "is an explicit `+`.",
        "**What is differentiated.** torch tracks tensors with `requires_grad`; JAX differentiates the arguments named "
        "by `argnums`. `torch.no_grad()`/`detach()` correspond to computing outside the function or `jax.lax.stop_gradient`.",
        "**Eager vs tracing.** torch records the graph as operations run; `jax.grad` and `jax.jit` trace the Python "
        "function once with abstract values (tracers) and transform the traced program.",
    ]),
    Chapter("Save and load the model", "save_load", ["save_weights", "load_weights", "save_whole_model", "load_whole_model",
                                                     "load_untrusted", "write_crafted_pickle", "save_safetensors",
                                                     "load_safetensors", "predict_all"], _save_load, [
        "**Pickle runs code.** `torch.save(model)` pickles the class; `torch.load(..., weights_only=False)` can execute "
        "anything in the file. The default `weights_only=True` refuses such files (`parity/test_basics.py` shows a crafted "
        "pickle refused, and its payload running once the flag is turned off).",
        "**Model = code, params = data.** JAX has no whole-model object to save: `flax.serialization` writes the params "
        "pytree as msgpack, and the model is rebuilt from code.",
        "**safetensors is the shared format**: tensors and names only, no code. Written in torch's names and layout, "
        "either side reads the other's file and predicts the same classes on all 10,000 test images.",
    ]),
    Chapter("Data parallelism: DDP and JAX sharding", "distributed",
            ["setup", "replicate", "weighted_loss", "train_step", "train_step_shard_map", "train_epoch"],
            lambda data_dir: __import__("parity.distributed", fromlist=["basics_numbers"]).basics_numbers(data_dir), [
        "**N processes vs one program.** DDP runs N processes, each with a full model and its own loop; they meet only "
        "in collectives (gloo on CPU, NCCL on GPUs). JAX runs one program over N devices: the parameters are one array "
        "replicated (`P()`), each global batch one array split over the mesh axis (`P(\"data\")`).",
        "**Bucketed all-reduce of sums / N vs a sharded mean.** DDP hooks every parameter: as gradients are ready during "
        "`backward` they are packed into buckets (25 MiB by default; this MLP's 669,706 float32 gradients, 2.7 MB, fit "
        "one) and each bucket is all-reduced while `backward` goes on; the reducer divides by the world size and the "
        "all-reduce sums, so every replica holds (g_0 + ... + g_(N-1)) / N. Under `jit`, `train_step` is the one-device "
        "step: the batch mean becomes a partial sum per device plus one all-reduce, and the gradients follow (the compiled "
        "program holds `all-reduce` and no `all-gather` of the batch; `parity/test_distributed.py` checks it). "
        "`train_step_shard_map` writes the per-device program out, as DDP is: local gradients, then `pmean` = (1/N) sum.",
        "**Unequal shards need weights.** DDP and `pmean` weight every replica 1/N whatever its shard size. A global "
        "batch of 33 on 2 replicas splits 17 + 16; each shard's mean loss times n_r * N / b (1.0303 and 0.9697 above) "
        "makes the average the one-device mean (`common/shards.py`). torch's `DistributedSampler` instead pads the data "
        "set by repeating samples (or drops them with `drop_last=True`), and JAX's `NamedSharding` refuses a dimension "
        "that does not divide (`IndivisibleError`), so the JAX side pads each shard with weight-0 samples. The quickstart's "
        "last batch of 32 splits 16 + 16 on 2 replicas: weights 1, as one device.",
        "**`shard_map` and `check_vma`.** With the default `check_vma=True`, JAX types the replicated parameters as "
        "device-invariant, and the gradient of a device-varying loss comes back already *summed* over devices (the "
        "transpose of the implicit broadcast is a `psum`): a `pmean` after it changes nothing, and training runs with N "
        "times the gradient. `train_step_shard_map` uses `check_vma=False`, so gradients stay local until `pmean`.",
        "**Same initial weights.** DDP broadcasts rank 0's parameters when it wraps the model (`init_sync=True`), which "
        "hides ranks seeded differently; a replicated JAX array is one value by construction, unless it is assembled from "
        "per-device buffers (`jax.make_array_from_single_device_arrays`), as separately seeded hosts would. "
        "`python -m parity.distributed` trains all forms over the whole epoch and compares them per step.",
    ]),
]


def _source(module, name: str) -> str | None:
    obj = getattr(module, name, None)
    if obj is None:
        return None
    try:
        return inspect.getsource(obj).rstrip()
    except TypeError:  # an alias of a function defined elsewhere: show where
        target = f"{obj.__module__}.{obj.__qualname__}"
        return f"{name} = {target}  # {(obj.__doc__ or '').strip().splitlines()[0] if obj.__doc__ else ''}".rstrip(" #")


def generate(data_dir: str = "data") -> str:
    """The guide's markdown text."""
    import importlib

    out = ["# The PyTorch basics tutorial, side by side with JAX", "",
           "<!-- generated by `python -m parity.study`; do not edit: parity/test_study.py checks it is current -->", "",
           "Each chapter of the tutorial as small functions in `reference_torch/basics/<chapter>.py` and their JAX twins "
           "in `jax_impl/basics/<chapter>.py` (same names), the numbers both produce on the same inputs (CPU), and where the "
           "two differ in kind. `pytest parity/test_basics.py parity/test_autograd.py` asserts the numbers agree.", ""]
    out += ["Chapters: " + " · ".join(f"[{c.title}](#{c.title.lower().replace(' ', '-').replace('&', '')})" for c in CHAPTERS), ""]
    for chapter in CHAPTERS:
        tmod = importlib.import_module(f"reference_torch.basics.{chapter.module}")
        jmod = importlib.import_module(f"jax_impl.basics.{chapter.module}")
        out += [f"## {chapter.title}", ""]
        for name in chapter.functions:
            out += [f"### `{name}`", ""]
            for side, mod in (("PyTorch", tmod), ("JAX", jmod)):
                src = _source(mod, name)
                out += [f"**{side}** (`{mod.__name__}`)", ""]
                out += (["```python", src, "```", ""] if src else ["*(no counterpart: see the differences below)*", ""])
        out += ["### The numbers both produce", "", "| what | PyTorch | JAX |", "|---|---|---|"]
        for what, t, j in chapter.numbers(data_dir):
            out.append(f"| {what} | {fmt(t)} | {fmt(j)} |")
        if chapter.extra:
            out += ["", chapter.extra]
        out += ["", "### Differences in kind", ""] + [f"- {d}" for d in chapter.differences] + [""]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.study", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default=str(GUIDE))
    args = p.parse_args(argv)
    text = generate(args.data_dir)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    from reference_torch.basics import datasets as td
    from reference_torch.data import get_datasets

    td.sample_grid(get_datasets(args.data_dir, download=False)[0], Path(args.out).parent / "sample_grid.png")
    print(f"wrote {args.out} and {Path(args.out).parent / 'sample_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
