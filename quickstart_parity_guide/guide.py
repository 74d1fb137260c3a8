"""The study guide's chapters, their numbers and the markdown page ``docs/side_by_side.md``.

For each chapter of the tutorial: the torch function and its JAX twin (their source, taken from
``reference_torch/basics`` and ``jax_impl/basics``), the numbers both produce on the same inputs,
and where the two differ in kind. ``quickstart_parity_guide/test_study.py`` fails when the committed guide is not
what this generates.
"""
from __future__ import annotations

import importlib
import inspect
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jax_impl import nnx_model
from jax_impl import train as jtrain
from jax_impl.basics import autograd as j_autograd
from jax_impl.basics import datasets as j_datasets
from jax_impl.basics import functional as j_functional
from jax_impl.basics import jit as j_jit
from jax_impl.basics import layers as j_layers
from jax_impl.basics import optimization as j_optimization
from jax_impl.basics import prng as j_prng
from jax_impl.basics import pytrees as j_pytrees
from jax_impl.basics import save_load as j_save_load
from jax_impl.basics import tensors as j_tensors
from jax_impl.basics import transforms as j_transforms
from jax_impl.basics.linen import layers as j_linen_layers
from jax_impl.data import load_fashion_mnist
from jax_impl.model import init_params
from parity import harness as H
from parity.weights import flax_to_torch_numpy, torch_to_flax
from quickstart_parity_common.convert import hidden_of
from quickstart_parity_common.data import to_float
from reference_torch.basics import autograd as t_autograd
from reference_torch.basics import datasets as t_datasets
from reference_torch.basics import functional as t_functional
from reference_torch.basics import jit as t_jit
from reference_torch.basics import layers as t_layers
from reference_torch.basics import optimization as t_optimization
from reference_torch.basics import prng as t_prng
from reference_torch.basics import pytrees as t_pytrees
from reference_torch.basics import quickstart as t_quickstart
from reference_torch.basics import save_load as t_save_load
from reference_torch.basics import tensors as t_tensors
from reference_torch.basics import transforms as t_transforms
from reference_torch.data import get_datasets
from reference_torch.model import NeuralNetwork

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "side_by_side.md"
INTRO = ("Each chapter of the tutorial as small functions in `reference_torch/basics/<chapter>.py` and their JAX twins "
         "in `jax_impl/basics/<chapter>.py` (same names), the numbers both produce on the same inputs (CPU), and where the "
         "two differ in kind. The tutorial's seven chapters come first, then functional transforms, jit, random numbers, "
         "pytrees, and the quickstart's model and train step three ways (torch, Flax NNX, Flax Linen). "
         "`pytest parity/test_basics.py parity/test_autograd.py quickstart_parity_guide/test_chapters.py "
         "parity/test_nnx.py` asserts "
         "the numbers agree.")
NO_COUNTERPART = "*(no counterpart: see the differences below)*"
INPUTS_MARK = "(inputs: "
# What a chapter's rows feed both sides, unless a row says otherwise. "torch's ... fed to both": the JAX
# function shown draws its own from a JAX key, so run alone it gives other numbers.
ROW_INPUTS = {
    "tensors": "`x = [[1., 2.], [3., 4.]]` or none, both sides",
    "datasets": "the FashionMNIST test split; seed 0 in each side's own generator",
    "transforms": "test image 0, both sides",
    "layers": "torch's `minibatch(0)` and `make_layers(0)` weights, fed to all three; JAX's own draw other numbers",
    "autograd": "torch's `tutorial_inputs(0)`, fed to both; JAX's own `tutorial_inputs` draws other numbers",
    "save_load": "torch's seed-0 init trained 300 SGD steps, the first 1,000 test images",
    "optimization": "torch's seed-0 init and the first training images in file order, fed to both",
    "functional": "torch's seed-0 init, the first 8 training images, torch's `tutorial_inputs(0)`, fed to both",
    "jit": "the values listed, both sides",
    "prng": "seed 0 in each side's own generator",
    "pytrees": "torch's seed-0 `NeuralNetwork()`, fed to both",
    "quickstart": "torch's seed-0 init and training batch 0, fed to all three",
    "distributed": "torch's seed-0 init and the first training images, fed to both",
}


@dataclass
class Exercise:
    """A question, its answer as code a reader can run, and ``check``: an expression over the answer's
    names (plus ``t`` and ``j``, the chapter's torch and JAX modules) that is True when the answer is
    right. ``quickstart_parity_guide/test_study.py`` runs every answer and its check."""
    question: str
    answer: str
    check: str


@dataclass
class Chapter:
    title: str
    module: str  # the module name under reference_torch/basics and jax_impl/basics
    functions: list[str]
    numbers: Callable[[str], list[tuple]]  # data_dir -> rows (what, value per side, in ``sides`` order)
    differences: list[str] = field(default_factory=list)
    extra: str = ""  # markdown after the numbers (e.g. a figure)
    more_sides: list[tuple[str, str]] = field(default_factory=list)  # (label, module) after torch and JAX
    jax_label: str = "JAX"  # the column title of jax_impl.basics.<module>

    def rows(self, data_dir: str) -> list[tuple]:
        """``numbers(data_dir)``, each row's ``what`` ending in what it feeds in: its own ``(inputs: ...)``
        where it has one, else the chapter's ``ROW_INPUTS``. A reader who runs one side's functions on
        their own inputs gets other numbers; the label says which inputs these are."""
        return [(what if INPUTS_MARK in what else f"{what} {INPUTS_MARK}{ROW_INPUTS[self.module]})", *values)
                for what, *values in self.numbers(data_dir)]

    @property
    def exercises(self) -> list[Exercise]:
        return EXERCISES.get(self.module, [])

    @property
    def sides(self) -> list[tuple[str, str]]:
        """(label, importable module) of every column: torch, JAX, then ``more_sides``."""
        return [("PyTorch", f"reference_torch.basics.{self.module}"), (self.jax_label, f"jax_impl.basics.{self.module}"),
                *self.more_sides]


def agree(a, b, rtol: float, atol: float) -> str:
    """``"agree (rtol 1e-05, atol 1e-07)"`` when every element of two trees (dicts, lists, arrays) is
    close, else the largest difference: a stable text for the guide that still shows a disagreement."""
    fa, fb = _leaves(a), _leaves(b)
    if len(fa) != len(fb) or any(x.shape != y.shape for x, y in zip(fa, fb, strict=True)):
        return "DIFFERENT STRUCTURE"
    ok = all(np.allclose(x, y, rtol=rtol, atol=atol) and np.isfinite(x).all() == np.isfinite(y).all()
             for x, y in zip(fa, fb, strict=True))
    worst = max(float(np.nanmax(np.abs(x.astype(np.float64) - y))) if x.size else 0.0 for x, y in zip(fa, fb, strict=True))
    return f"agree (rtol {rtol:.0e}, atol {atol:.0e})" if ok else f"DIFFER by {worst:.2e}"


def _leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for v in tree for leaf in _leaves(v)]
    if hasattr(tree, "detach"):
        tree = tree.detach().numpy()
    return [np.asarray(tree)]


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
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    ti, ji = t_tensors.in_place_add(torch.tensor(x)), j_tensors.in_place_add(jnp.asarray(x))
    tb, jb = t_tensors.numpy_bridge(), j_tensors.numpy_bridge()
    return [
        ("`from_data()`", t_tensors.from_data(), j_tensors.from_data()),
        ("`matmul_three_ways(x)[0]`", t_tensors.matmul_three_ways(torch.tensor(x))[0],
         j_tensors.matmul_three_ways(jnp.asarray(x))[0]),
        ("`indexing(x)['after_set']`", t_tensors.indexing(torch.tensor(x))["after_set"],
         j_tensors.indexing(jnp.asarray(x))["after_set"]),
        ("`in_place_add(x)`: input afterwards", ti["input_after"], ji["input_after"]),
        ("`in_place_add(x)`: result is the input", ti["same_object"], ji["same_object"]),
        ("`numpy_bridge()`: numpy after adding to the tensor", tb["numpy_after_tensor_add"], jb["numpy_after_tensor_add"]),
        ("`single_element(x)`", t_tensors.single_element(torch.tensor(x)), j_tensors.single_element(jnp.asarray(x))),
        ("`to_device(x)`: device (the CPU here)", t_tensors.to_device(x)["device"], j_tensors.to_device(x)["device"]),
        ("`to_device(x)`: committed (JAX: before, after `device_put`)", t_tensors.to_device(x)["committed"],
         j_tensors.to_device(x)["committed"]),
    ]


def _datasets(data_dir):
    _, test_data = get_datasets(data_dir, download=False)
    images, labels = load_fashion_mnist(data_dir, train=False)
    ti, tn = t_datasets.sample(test_data, 0)
    ji, jn = j_datasets.sample(images, labels, 0)
    return [
        ("`sample(test, 0)`: class", tn, jn),
        ("`sample(test, 0)`: mean pixel", float(ti.mean()), float(ji.mean())),
        ("`shuffled_orders(10, 4, seed=0)` epoch 1", t_datasets.shuffled_orders(10, 4, 0, 2)[0],
         j_datasets.shuffled_orders(10, 4, 0, 2)[0]),
        ("`shuffled_orders(10, 4, seed=0)` epoch 2", t_datasets.shuffled_orders(10, 4, 0, 2)[1],
         j_datasets.shuffled_orders(10, 4, 0, 2)[1]),
    ]


def _transforms(data_dir):
    images, _ = load_fashion_mnist(data_dir, train=False)
    ti, ji = t_transforms.to_tensor(images[0]), j_transforms.to_tensor(images[0])
    return [
        ("`to_tensor(test image 0)`: shape", tuple(ti.shape), tuple(ji.shape)),
        ("`to_tensor(test image 0)`: bit-identical",
         bool(np.array_equal(ti.numpy().view(np.uint32), np.asarray(ji).view(np.uint32))), True),
        ("`one_hot(3)`", t_transforms.one_hot(3), j_transforms.one_hot(3)),
    ]


def _layers(data_dir):
    images = t_layers.minibatch(0)
    layers = t_layers.make_layers(0)
    params = {n: {"kernel": layer.weight.detach().numpy().T,
                  "bias": layer.bias.detach().numpy()} for n, layer in layers.items()}
    tw, nw = t_layers.walk_through(images, layers), j_layers.walk_through(images, nnx_layers(params))
    lw = j_linen_layers.walk_through(images, params)
    return [
        ("`walk_through`: flat shape", tw["flat"].shape, nw["flat"].shape, lw["flat"].shape),
        ("`walk_through`: hidden1[0, :4]", tw["hidden1"][0, :4], nw["hidden1"][0, :4], lw["hidden1"][0, :4]),
        ("`walk_through`: probabilities[0]", tw["probabilities"][0], nw["probabilities"][0], lw["probabilities"][0]),
        ("`walk_through`: predicted", tw["predicted"], nw["predicted"], lw["predicted"]),
        ("`named_parameters(model)` (inputs: each side's own init)", t_layers.named_parameters(NeuralNetwork()),
         j_layers.named_parameters(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0))),
         j_linen_layers.named_parameters(init_params(jax.random.key(0)))),
    ]


def nnx_layers(params: dict) -> dict[str, nnx.Linear]:
    """``{name: nnx.Linear}`` holding ``params``' kernels and biases (Flax layout), as ``make_layers`` builds them."""
    out = {}
    for name, p in params.items():
        layer = nnx.Linear(*p["kernel"].shape, rngs=nnx.Rngs(0))
        layer.kernel[...], layer.bias[...] = jnp.asarray(p["kernel"]), jnp.asarray(p["bias"])
        out[name] = layer
    return out


def _autograd(data_dir):
    inputs = t_autograd.tutorial_inputs(0)
    ts_, js_ = t_autograd.single_layer(**inputs), j_autograd.single_layer(**inputs)
    args = {k: inputs[k] for k in ("x", "w", "b")}
    tj, jj = t_autograd.jacobian_products(), j_autograd.jacobian_products()
    tf, jf = t_autograd.frozen_bias(**inputs), j_autograd.frozen_bias(**inputs)
    eye = "(inputs: `eye(5)`, both sides)"
    return [
        ("`single_layer`: loss", float(ts_["loss"]), float(js_["loss"])),
        ("`single_layer`: grad_b", ts_["grad_b"], js_["grad_b"]),
        ("`frozen_bias`: grad_b of the frozen bias (torch: `b.grad`; JAX: through `stop_gradient`)",
         tf["grad_b"], jf["grad_b"]),
        ("`frozen_bias`: grad_w, row 0", tf["grad_w"][0], jf["grad_w"][0]),
        ("`graph`: what is recorded (torch's `grad_fn`, JAX's `make_jaxpr` of the gradient)", t_autograd.graph(**inputs),
         j_autograd.graph(**inputs)),
        ("`tracking`", str(t_autograd.tracking(**args)), str(j_autograd.tracking(**args))),
        ("`jacobian_products()`: first, row 0 " + eye, tj["first"][0], jj["first"][0]),
        ("`jacobian_products()`: second, row 0 " + eye, tj["second"][0], jj["second"][0]),
        ("`jacobian_products()`: after zero, row 0 " + eye, tj["after_zero"][0], jj["after_zero"][0]),
    ]


def _save_load(data_dir):
    model, test = trained_torch_model(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t_save_load.save_safetensors(model, f"{tmp}/m.safetensors")
        params = j_save_load.load_safetensors(f"{tmp}/m.safetensors")
        net = j_save_load.empty_model(hidden_of(params))
        nnx.update(net, params)
        j_save_load.save_safetensors(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0)), f"{tmp}/p.safetensors")
        from_jax = t_save_load.load_safetensors(f"{tmp}/p.safetensors")
        t_save_load.save_weights(model, f"{tmp}/m.pth")
        j_save_load.save_weights(net, f"{tmp}/m.msgpack")
        t_empty, j_empty = t_save_load.empty_model(), j_save_load.empty_model()
        empty = (f"device {t_empty.linear_relu_stack[0].weight.device}",
                 type(j_empty.linear_relu_stack_0.kernel.get_value()).__name__)
        t_back = t_save_load.load_weights(f"{tmp}/m.pth", t_empty)
        j_back = j_save_load.load_weights(f"{tmp}/m.msgpack", j_empty)
        refused = []
        for side, exc in ((t_save_load, pickle.UnpicklingError), (j_save_load, Exception)):
            side.write_crafted_pickle(f"{tmp}/evil.pth", f"{tmp}/marker")
            try:
                side.load_untrusted(f"{tmp}/evil.pth")
                refused.append("loaded")
            except exc as e:
                refused.append(f"refused: {type(e).__name__}")
        payload_ran = Path(f"{tmp}/marker").exists()
    tp, jp = t_save_load.predict_all(model, test.x), j_save_load.predict_all(net, test.x)
    jax_params = torch_to_flax({k: v.numpy() for k, v in from_jax.state_dict().items()})
    jax_net = j_save_load.empty_model()
    nnx.update(jax_net, jax_params)
    return [
        ("torch-trained weights (300 SGD steps on real data) via safetensors: test accuracy, 1,000 images",
         float((tp == test.y).mean()), float((jp == test.y).mean())),
        ("the same: predictions equal on all 1,000", bool((tp == jp).all()), bool((tp == jp).all())),
        ("`empty_model()`: what a parameter holds (torch's meta device, `nnx.eval_shape`) (inputs: none, shapes only)",
         empty[0], empty[1]),
        ("`save_weights` then `load_weights` into `empty_model()`: predictions equal the trained model's, 1,000",
         bool((t_save_load.predict_all(t_back, test.x) == tp).all()),
         bool((j_save_load.predict_all(j_back, test.x) == jp).all())),
        ("JAX-initialised weights via safetensors: first 8 predictions (inputs: `NeuralNetwork(rngs=nnx.Rngs(0))`'s init)",
         t_save_load.predict_all(from_jax, test.x[:8]), j_save_load.predict_all(jax_net, test.x[:8])),
        ("crafted pickle, `load_untrusted`", refused[0], refused[1]),
        ("the payload ran", payload_ran, payload_ran),
    ]


def trained_torch_model(data_dir: str, steps: int = 300):
    """(torch model trained ``steps`` SGD steps from the seed-0 init on the first training images in
    file order, the first 1,000 test images): trained weights, deterministic, in about a second."""

    images, labels = load_fashion_mnist(data_dir, train=True)
    train = H.Split(to_float(images[:steps * 64]).reshape(-1, 784), labels[:steps * 64])
    images, labels = load_fashion_mnist(data_dir, train=False)
    test = H.Split(to_float(images[:1000]).reshape(-1, 784), labels[:1000])
    return H.torch_train(H.init_state_dict(0), train)[1], test


def real_batch(data_dir: str, n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training images (ToTensor pixels, (n, 784)) and int labels, in file order from ``offset``."""

    images, labels = load_fashion_mnist(data_dir, train=True)
    return to_float(images[offset:offset + n]).reshape(n, 784), labels[offset:offset + n].astype(np.int32)


def per_sample_grads_float64(state_dict: dict, x: np.ndarray, y: np.ndarray) -> dict:
    """The reference for ``per_sample_grads``: one float64 ``backward()`` per example, in a loop."""

    model = H.torch_model(state_dict, torch.float64)
    out = {k: [] for k, _ in model.named_parameters()}
    for xi, yi in zip(x, y, strict=True):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.as_tensor(xi[None], dtype=torch.float64)),
                                          torch.as_tensor([int(yi)])).backward()
        for k, p in model.named_parameters():
            out[k].append(p.grad.numpy().copy())
    return {k: np.stack(v) for k, v in out.items()}


def per_sample_as_torch(grads: dict) -> dict:
    """Per-example Flax gradients ``{linear_relu_stack_<i>: {kernel (B, in, out), bias (B, out)}}`` in
    torch's names and layout (``linear_relu_stack.<i>.weight`` (B, out, in))."""
    out = {}
    for name, layer in grads.items():
        key = name.replace("linear_relu_stack_", "linear_relu_stack.")
        out[f"{key}.weight"] = np.swapaxes(np.asarray(layer["kernel"]), 1, 2)
        out[f"{key}.bias"] = np.asarray(layer["bias"])
    return out


def checkpoint_inputs() -> tuple[list[np.ndarray], np.ndarray]:
    """Eight (256, 256) weights and a (1024, 256) input for the checkpointing comparison."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.05, (256, 256)).astype(np.float32) for _ in range(8)]
    return weights, rng.normal(size=(1024, 256)).astype(np.float32)


def _optimization(data_dir):
    sd = H.init_state_dict(0)
    x, y = real_batch(data_dir, 20 * 64)
    ts_, js_ = t_optimization.sgd_steps(sd, x, y, 20), j_optimization.sgd_steps(torch_to_flax(sd), x, y, 20)
    tz, jz = t_optimization.forgotten_zero_grad(sd, x, y), j_optimization.forgotten_zero_grad(torch_to_flax(sd), x, y)
    return [
        ("`sgd_steps` (momentum 0.9, 20 real batches): first and last loss", (ts_["losses"][0], ts_["losses"][-1]),
         (js_["losses"][0], js_["losses"][-1])),
        ("the same: every step's loss", "(reference)", agree(js_["losses"], ts_["losses"], 1e-5, 1e-6)),
        ("parameters after 20 steps", "(reference)",
         agree(dict(flax_to_torch_numpy(js_["params"])), ts_["params"], 1e-4, 1e-6)),
        ("momentum buffers (torch `momentum_buffer`, optax `trace`)", "(reference)",
         agree(dict(flax_to_torch_numpy(js_["momentum"])), ts_["momentum"], 1e-4, 1e-6)),
        ("`forgotten_zero_grad`: last bias grad after batch 2, [:3]", tz["after_second"][:3], jz["after_second"][:3]),
        ("torch's minus its batch-1 grad = JAX's batch-2 grad", agree(tz["after_second"] - tz["after_first"],
                                                                      jz["after_second"], 1e-4, 1e-6), "(reference)"),
    ]


def _functional(data_dir):
    sd = H.init_state_dict(0)
    x, y = real_batch(data_dir, 8)
    as_torch = lambda tree: dict(flax_to_torch_numpy(tree))  # noqa: E731
    ref = per_sample_grads_float64(sd, x, y)
    tp, jp = t_functional.per_sample_grads(sd, x, y), j_functional.per_sample_grads(torch_to_flax(sd), x, y)
    jp = per_sample_as_torch(jp)
    i = t_autograd.tutorial_inputs(0)
    tj, jj = t_functional.jacobians(i["x"], i["w"], i["b"]), j_functional.jacobians(i["x"], i["w"], i["b"])
    v = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    big = np.array([0.0, 10.0, 100.0], np.float32)
    tc, jc = t_functional.custom_grad(big), j_functional.custom_grad(big)
    ws, h = checkpoint_inputs()
    tk, jk = t_functional.checkpointed(ws, h), j_functional.checkpointed(ws, h)
    return [
        ("`model_grad` (8 real images) vs `loss.backward()` on the same batch", "(reference)",
         agree(as_torch(j_functional.model_grad(torch_to_flax(sd), x, y)), t_functional.model_grad(sd, x, y), 1e-4, 1e-7)),
        ("`per_sample_grads` vs a float64 loop of 8 `backward()`s", agree(tp, ref, 1e-4, 1e-7), agree(jp, ref, 1e-4, 1e-7)),
        ("`jacobians`: jacrev row 0", tj["jacrev"][0], jj["jacrev"][0]),
        ("`jacobians`: jacfwd equals jacrev", agree(tj["jacfwd"], tj["jacrev"], 1e-6, 1e-8),
         agree(jj["jacfwd"], jj["jacrev"], 1e-6, 1e-8)),
        ("`jacobians`: Hessian diagonal", np.diag(tj["hessian"]), np.diag(jj["hessian"])),
        ("`hvp` (jvp of grad) vs the explicit (15, 15) Hessian times v",
         agree(t_functional.hvp(i["x"], i["w"], i["b"], v), _explicit_hvp(i, v), 1e-5, 1e-7),
         agree(j_functional.hvp(i["x"], i["w"], i["b"], v), _explicit_hvp(i, v), 1e-5, 1e-7)),
        ("`custom_grad([0, 10, 100])`: autograd's gradient", tc["autograd"]["grad"], jc["autograd"]["grad"]),
        ("`custom_grad([0, 10, 100])`: the custom gradient", tc["custom"]["grad"], jc["custom"]["grad"]),
        ("`checkpointed`: gradients, plain vs checkpointed", agree(tk["checkpoint"]["grads"], tk["plain"]["grads"], 0, 0),
         agree(jk["checkpoint"]["grads"], jk["plain"]["grads"], 0, 0)),
        # gradients up to ~34, each a sum over 1,024 rows: float32 rounding is ~1e-6 of that scale
        ("`checkpointed`: gradients, torch vs JAX", "(reference)",
         agree(jk["plain"]["grads"], tk["plain"]["grads"], 1e-5, 1e-4)),
        ("tensors saved for backward, plain (count, bytes)", (tk["plain"]["saved"], tk["plain"]["saved_bytes"]),
         (jk["plain"]["saved"], jk["plain"]["saved_bytes"])),
        ("tensors saved for backward, checkpointed (count, bytes)",
         (tk["checkpoint"]["saved"], tk["checkpoint"]["saved_bytes"]),
         (jk["checkpoint"]["saved"], jk["checkpoint"]["saved_bytes"])),
        ("compiled gradient's temporary buffers, plain / checkpointed (bytes)", "(no compiled program in eager torch)",
         (jk["plain"]["compiled_temp_bytes"], jk["checkpoint"]["compiled_temp_bytes"])),
        ("`higher_order(1.0)`: d/dx and d2/dx2 of x^3 sin x", tuple(t_functional.higher_order(1.0).values()),
         tuple(j_functional.higher_order(1.0).values())),
    ]


def _explicit_hvp(inputs, v) -> np.ndarray:
    """The float64 Hessian of the BCE loss w.r.t. ``w`` times ``v``, in closed form (no autodiff):
    d2L / dw_ij dw_kl = x_i x_k sigmoid'(z_j) / 3 if j == l, else 0."""
    x, w, b = (np.asarray(inputs[k], np.float64) for k in ("x", "w", "b"))
    s = 1 / (1 + np.exp(-(x @ w + b)))
    return (np.outer(x, x) @ np.asarray(v, np.float64)) * (s * (1 - s) / 3)


def _jit(data_dir):
    values, shapes, ns = [2.0, -3.0, 2.0], [3, 3, 4, 3], [1, 2, 2, 3]
    tc, jc = t_jit.control_flow(values), j_jit.control_flow(values)
    td, jd = t_jit.donation(), j_jit.donation()
    return [
        ("`control_flow([2, -3, 2])`: gradients", tc["grads"], jc["grads"]),
        ("the same: times the Python body ran (grad, not jit)", tc["grad_traces"], jc["grad_traces"]),
        ("the same, compiled whole (`torch.compile(fullgraph=True)`, `jax.jit`)", tc["compiled"], jc["compiled"]),
        ("the same under `torch.compile` allowing graph breaks (its default)", tc["graph_breaks"], jc["graph_breaks"]),
        ("the branch as an operator (`torch.cond`, `lax.cond`), compiled: gradients", tc["cond_grads"], jc["cond_grads"]),
        ("`tracing_counts([3, 3, 4, 3])`: Python body runs", t_jit.tracing_counts(shapes)["python_runs"],
         j_jit.tracing_counts(shapes)["python_runs"]),
        ("`static_argument(n = 1, 2, 2, 3)`: results", t_jit.static_argument(ns)["results"],
         j_jit.static_argument(ns)["results"]),
        ("the same: Python body runs", t_jit.static_argument(ns)["python_runs"], j_jit.static_argument(ns)["python_runs"]),
        ("`donation()`: the result reuses the input's buffer", td["same_buffer"], jd["same_buffer"]),
        ("`donation()`: the input is usable afterwards", td["input_usable"], jd["input_usable"]),
        ("`ready()`: row sums of a 512x512 matmul, first 3", t_jit.ready()[:3], j_jit.ready()[:3]),
    ]


def _prng(data_dir):
    return [
        ("`same_call_twice()`: the two draws are equal", t_prng.same_call_twice()["equal"],
         j_prng.same_call_twice()["equal"]),
        ("`same_call_twice()`: first draw (different generators)", t_prng.same_call_twice()["first"],
         j_prng.same_call_twice()["first"]),
        ("`reseed_repeats()`", t_prng.reseed_repeats(), j_prng.reseed_repeats()),
        ("`independent_streams()`: all distinct", t_prng.independent_streams()["all_distinct"],
         j_prng.independent_streams()["all_distinct"]),
        ("`replay_step(step=5)`: step 5 drawn directly equals step 5 in order (seeded per step)",
         t_prng.replay_step()["direct_equals_in_order"], j_prng.replay_step()["direct_equals_in_order"]),
        ("`replay_step()`: (seed 0, step 1000) draws what (seed 1, step 0) draws", t_prng.replay_step()["collides"],
         j_prng.replay_step()["collides"]),
    ]


def _pytrees(data_dir):
    torch.manual_seed(0)
    model = NeuralNetwork()
    params = torch_to_flax(model.state_dict())
    return [
        ("`parameter_order`", [(k,) for k in t_pytrees.parameter_order(model)][:2],
         [(k,) for k in j_pytrees.parameter_order(params)][:2]),
        ("`flatten_to_vector`: length", t_pytrees.flatten_to_vector(model).shape, j_pytrees.flatten_to_vector(params).shape),
        ("`flatten_to_vector`: first 3 (weight row 0 vs layer-0 bias)", t_pytrees.flatten_to_vector(model)[:3],
         j_pytrees.flatten_to_vector(params)[:3]),
        ("`global_norm`", t_pytrees.global_norm(model), j_pytrees.global_norm(params)),
        ("`scale_all(0.5)`: global norm of the result", float(np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in
                                                                          t_pytrees.scale_all(model, 0.5).values()))),
         float(np.sqrt(sum((np.asarray(v, np.float64) ** 2).sum() for v in _leaves(j_pytrees.scale_all(params, 0.5)))))),
    ]


def _quickstart(data_dir):
    sd = H.init_state_dict(0)
    x, y = real_batch(data_dir, 64)
    model = H.torch_model(sd)
    t_loss = float(t_quickstart.train_step(model, torch.optim.SGD(model.parameters(), lr=1e-3),
                                (torch.as_tensor(x), torch.as_tensor(y).long()))["loss"])
    t_params = H.state_dict_numpy(model)
    state = jtrain.create_train_state(torch_to_flax(sd))
    state, metrics = jtrain.train_step(state, (x, y))
    nnx_net = nnx_model.load_params(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0)), torch_to_flax(sd))
    n_metrics = nnx_model.train_step(nnx_net, nnx_model.create_optimizer(nnx_net), (x, y))
    linen = dict(flax_to_torch_numpy(jax_get(state.params)))
    nnx_params = dict(flax_to_torch_numpy(nnx.to_pure_dict(nnx.state(nnx_net, nnx.Param))))
    return [
        ("one `train_step` from the same weights on a real batch: loss", t_loss, float(metrics["loss"]),
         float(n_metrics["loss"])),
        ("parameters after the step, vs torch", "(reference)", agree(linen, t_params, 1e-6, 1.5e-8),
         agree(nnx_params, t_params, 1e-6, 1.5e-8)),
        ("parameter count", sum(p.numel() for p in model.parameters()), int(sum(v.size for v in linen.values())),
         int(sum(v.size for v in nnx_params.values()))),
    ]


def _distributed(data_dir):
    rows = importlib.import_module("parity.distributed").basics_numbers(data_dir)
    first, rebuilt = ddp_bucket_sizes()
    no_buckets = "(one program: XLA schedules the all-reduces)"
    vs = shard_map_against_jit(data_dir)
    two = "(inputs: torch's seed-0 init, the first 33 training images, 2 CPU devices)"
    return rows + [
        ("`train_step_shard_map` (check_vma on): largest update difference from `train_step`'s, one step " + two,
         "(reference)", f"{vs['gap']:.1e}"),
        ("the same: largest update (a doubled or halved gradient would differ by this much) " + two, "(reference)",
         f"{vs['update']:.1e}"),
        ("DDP gradient buckets, first step (bytes) (inputs: the MLP, 1 gloo rank)", first, no_buckets),
        ("DDP gradient buckets from the second step, `rebuilt_bucket_sizes` (bytes) (inputs: the same)", rebuilt,
         no_buckets),
    ]


SHARD_MAP_AGAINST_JIT = """
import sys
import jax
from jax_impl.basics import distributed as jb  # setup() sets jax_num_cpu_devices before any computation
mesh = jb.setup(2)
import numpy as np
import optax
from flax.training.train_state import TrainState
from jax_impl.model import NeuralNetwork
from parity import harness as H
from quickstart_parity_guide.guide import real_batch
x, y = real_batch(sys.argv[1], 33)
params = H.torch_to_flax(H.init_state_dict(0))
state = TrainState.create(apply_fn=NeuralNetwork().apply, params=jb.replicate(params, mesh), tx=optax.sgd(1e-3))
auto, _ = jb.train_epoch(state, x, y, mesh)
explicit, _ = jb.train_epoch(state, x, y, mesh, step=jb.train_step_shard_map(mesh))
leaves = lambda s: [np.asarray(v, np.float64) for v in jax.tree.leaves(s.params)]
init = [np.asarray(v, np.float64) for v in jax.tree.leaves(params)]
gap = max(np.abs(a - b).max() for a, b in zip(leaves(auto), leaves(explicit)))
update = max(np.abs(a - p).max() for a, p in zip(leaves(auto), init))
print(len(jax.devices()), repr(float(gap)), repr(float(update)))
"""


def shard_map_against_jit(data_dir: str) -> dict:
    """One SGD step on 33 real images (17 + 16 over 2 CPU devices, in a process of its own: the device
    count is fixed when JAX starts) by ``train_step`` and by ``train_step_shard_map``: the largest
    parameter difference between the two results, and the largest update, which a gradient off by a
    factor N (``pmean`` after a gradient already summed, or none) would change by as much."""
    out = subprocess.run([sys.executable, "-c", SHARD_MAP_AGAINST_JIT, data_dir], cwd=REPO, check=True,
                         capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    devices, gap, update = out.stdout.split()
    if int(devices) != 2:
        raise RuntimeError(f"shard_map_against_jit: {devices} devices, 2 asked for")
    return {"gap": float(gap), "update": float(update)}


def ddp_bucket_sizes(steps: int = 3) -> tuple[str, str]:
    """(``bucket_sizes``, ``rebuilt_bucket_sizes``) of DDP's reducer after ``steps`` steps of the MLP, from
    ``_get_ddp_logging_data`` on one gloo rank (bucket sizes do not depend on the world size): DDP buckets
    by registration order for the first step, then rebuilds them in the order gradients arrived, with a
    1 MiB first bucket (``dist._DEFAULT_FIRST_BUCKET_BYTES``) so the first all-reduce starts early."""
    import torch.distributed as dist  # noqa: PLC0415 -- only this chapter needs a process group
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415 -- as above

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            torch.manual_seed(0)
            model = DistributedDataParallel(NeuralNetwork())
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            x, y = torch.rand(8, 784), torch.randint(0, 10, (8,))
            for _ in range(steps):
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
            data = model._get_ddp_logging_data()
        finally:
            dist.destroy_process_group()
    return data["bucket_sizes"], data.get("rebuilt_bucket_sizes", "(not rebuilt)")


def jax_get(tree):
    return jax.device_get(tree)


CHAPTERS = [
    Chapter("Tensors", "tensors", ["from_data", "from_numpy", "like", "from_shape", "attributes", "indexing", "concatenate",
                                   "matmul_three_ways", "multiply_three_ways", "single_element", "in_place_add",
                                   "numpy_bridge", "to_device"],
            _tensors, [
                "**Mutable vs immutable.** `x[:, 1] = 0` and `x.add_(5)` change the tensor; a JAX array never "
                "changes: `x.at[:, 1].set(0)` and `x + 5` return new arrays (inside `jit`, XLA reuses the buffer "
                "when it can, and `donate_argnums` lets it reuse an input's: see the jit chapter). For state that "
                "must change in place, JAX 0.10 has `jax.new_ref(x)`: a mutable `Ref` (`ref[...] += 5` writes into "
                "it, also inside `jit`), the counterpart of torch's in-place ops; the arrays themselves stay "
                "immutable.",
                "**Memory shared with numpy.** `t.numpy()` and `torch.from_numpy(n)` alias the same CPU memory, by "
                "contract. JAX promises no such thing either way: `jnp.asarray(n)` defaults to `copy=None`, which its "
                "docstring defines as \"only copy when necessary\", and `jax.device_put(n)` on the CPU aliases a 64-byte-"
                "aligned numpy buffer (measured with jax 0.10.2: `unsafe_buffer_pointer()` equals `n.ctypes.data`; "
                "jax-ml/jax#37830). The transfer is also asynchronous: even `jnp.array(n, copy=True)` copies in the "
                "background, so mutating `n` right after the call can show up in the JAX array (a race: how often "
                "depends on the machine and the size). So treat a numpy array handed to JAX as frozen, or copy and wait: "
                "`jnp.array(n, copy=True).block_until_ready()` (what `numpy_bridge` does). `np.asarray(jax_array)` is a "
                "read-only view; `np.array(jax_array)` a writable copy.",
                "**Devices.** `x.to(device)` copies a tensor to a device, and an operation must find all its "
                "operands on one device. `jax.device_put(x, jax.devices()[0])` places an array and *commits* it to "
                "that device: computations on committed arrays run where they are, and mixing two devices raises. "
                "An array JAX made itself (`jnp.asarray(x)`) is *uncommitted*: it lives on the default device (the "
                "first accelerator, else the CPU) and moves to where its committed operands are (rows above; "
                "`x.device`, `x.committed`).",
                "**Zero-copy exchange: dlpack.** `torch.from_dlpack(jax_array)` and `jax.dlpack.from_dlpack(tensor)` "
                "(also `jnp.from_dlpack`) hand a buffer across without copying, on the CPU and on the same GPU "
                "(the exercise checks the pointers); the two then share memory, so mutating the torch side in place "
                "breaks the JAX array's immutability.",
                "**Default integer width.** torch infers int64; JAX uses int32 unless `jax_enable_x64` is set.",
                "**Random numbers.** `torch.rand` draws from a hidden global generator; JAX needs an explicit key.",
            ]),
    Chapter("Datasets & DataLoaders", "datasets", ["sample", "CustomImageDataset", "shuffled_orders", "sample_grid"],
            _datasets, [
        "**Stateful vs explicit PRNG.** `DataLoader(shuffle=True)` advances a generator's hidden state each epoch; "
        "the JAX iterator takes a key, and the caller splits one subkey per epoch, so any epoch can be replayed alone.",
        "**Objects vs arrays.** A torch `Dataset` is indexed one sample at a time and `DataLoader` collates; in JAX the "
        "set is an array and a batch is a slice (or a gather by permuted indices).",
        "The shuffled orders differ between the frameworks (different generators); both are permutations of every sample.",
        "**Data loaders for JAX.** JAX has no `DataLoader` of its own. A data set that fits in memory is an array "
        "sliced by permuted indices (this chapter, and the quickstart); larger or streamed ones use a loader that "
        "yields numpy batches: torch's own `DataLoader` works unchanged (collate to numpy), and "
        "[Grain](https://google-grain.readthedocs.io/) is the JAX ecosystem's deterministic, checkpointable one "
        "(Flax's [data loaders guide](https://flax.readthedocs.io/en/latest/guides/data_loaders.html) compares "
        "them). Neither is needed here, so Grain is not a dependency.",
    ], extra="The tutorial's 3x3 grid of training images (`sample_grid`, written next to this guide):\n\n"
             "![3x3 grid of FashionMNIST training images](sample_grid.png)\n"),
    Chapter("Transforms", "transforms", ["to_tensor", "one_hot"], _transforms, [
        "`ToTensor` converts a PIL image (HWC uint8) to CHW float32 / 255; the JAX side does the same arithmetic on "
        "arrays, and the results are bit-identical (`parity/test_data.py` checks all 70,000 images).",
        "`scatter_` writes into a zero tensor in place; `jax.nn.one_hot` is a pure function.",
    ]),
    Chapter("Build the neural network", "layers", ["minibatch", "make_layers", "walk_through", "named_parameters"],
            _layers, [
        "**`.numpy()` and the graph.** The layers' outputs require grad (their weights do), so torch's `walk_through` "
        "calls `.detach().numpy()`; plain `.numpy()` raises a RuntimeError. JAX arrays carry no graph: `np.asarray` "
        "always works.",
        "**Parameters live in modules, or in a pytree.** `nn.Linear` owns its weight, and so does `nnx.Linear` "
        "(Flax NNX, the JAX column): `nnx.Linear(784, 20, rngs=nnx.Rngs(0))` draws its kernel and bias when built, "
        "from the `params` stream of the `nnx.Rngs` it is given (NNX's explicit seed, where torch uses the global "
        "generator). `nnx.state(model, nnx.Param)` is the parameters as a pytree (`state_dict`), `nnx.update(model, "
        "state)` loads one (`load_state_dict`), and `nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))` builds the "
        "model with shapes only, as torch's `meta` device does. A Flax Linen `nn.Dense` (third column) is a "
        "description: `init` returns the parameters and `apply` takes them; the quickstart program is written "
        "that way.",
        "**Layout.** torch stores `weight` as `[out, in]` and computes `x @ W.T`; Flax stores `kernel` as `[in, out]`. "
        "Names map one to one (`linear_relu_stack.0.weight` is `linear_relu_stack_0/kernel`, transposed).",
        "**`model.eval()` vs flags.** torch switches modes on the object, and so does NNX: `model.eval()` and "
        "`model.train()` set `deterministic`/`use_running_average` on every `nnx.Dropout`/`nnx.BatchNorm` inside. "
        "A Linen module takes `train`/`deterministic` as call arguments instead. (This MLP has no dropout or batch "
        "norm, so both modes compute the same.)",
    ], jax_label="Flax NNX", more_sides=[("Flax Linen", "jax_impl.basics.linen.layers")]),
    Chapter("Automatic differentiation", "autograd", ["tutorial_inputs", "loss_and_logits", "single_layer", "frozen_bias",
                                                      "graph", "tracking", "detach_grad", "jacobian_products"], _autograd, [
        "**`.grad` accumulation vs returned gradients.** `backward()` adds into `.grad` (hence 8s and 4s on the second "
        "call and the `zero_grad()` in every training step); `jax.grad`/`jax.vjp` return fresh values, and accumulating "
        "is an explicit `+`.",
        "**In place.** The tutorial notes that in-place operations on tensors autograd needs are discouraged: "
        "they can overwrite values backward needs (torch then raises at `backward`) and lose history. JAX arrays "
        "cannot be modified, so the question does not arise; `jax.grad` of a function using `x.at[i].set(v)` just "
        "works.",
        "**The recorded graph.** The tutorial prints `z.grad_fn` and `loss.grad_fn`: the backward nodes "
        "autograd attached to the results as the forward ran. JAX records nothing on arrays; "
        "`jax.make_jaxpr(jax.grad(f))(w, b)` prints the whole gradient program instead, forward and backward, as "
        "equations of primitives (`dot_general`, `add`, ... `transpose`): what `jit` would compile (`graph` above).",
        "**What is differentiated.** torch tracks tensors with `requires_grad`; JAX differentiates the arguments named "
        "by `argnums`. `torch.no_grad()`/`detach()` correspond to computing outside the function or "
        "`jax.lax.stop_gradient`.",
        "**Eager vs tracing.** torch records the graph as operations run. `jax.grad` also runs the Python function, "
        "on *every* call, with tracers that carry the concrete values: a Python `if x > 0` works under `jax.grad` "
        "(measured: 3 calls, 3 traces; see the jit chapter). `jax.jit` traces with *abstract* values (shape and "
        "dtype only), once per input signature, and so do the bodies of `lax.scan`, `lax.cond` and `lax.while_loop`; "
        "`jax.vmap`'s tracer holds a whole batch, so `if x > 0` on one example cannot be decided either. There "
        "`if x > 0` raises (`TracerBoolConversionError` under `jit`); use `jnp.where`/`lax.cond`, or make the "
        "argument static.",
    ]),
    Chapter("Optimizing model parameters", "optimization", ["sgd_steps", "forgotten_zero_grad", "train_epoch", "evaluate"],
            _optimization, [
        "**Three calls vs returned values.** torch: `loss.backward()` writes `.grad` on every parameter, "
        "`optimizer.step()` reads them and updates the parameters in place, `optimizer.zero_grad()` clears `.grad`. "
        "Flax NNX (the JAX column): `nnx.value_and_grad(loss_fn)(model, ...)` *returns* the gradients (an "
        "`nnx.State` shaped like `nnx.state(model, nnx.Param)`), and `optimizer.update(model, grads)` updates the "
        "parameters and the optax state in place, as `step()` does. Nothing is stored on the parameters, so there "
        "is nothing to zero. Underneath, and spelled out in Flax Linen or plain JAX: `tx.update(grads, opt_state, "
        "params)` returns updates and a new optimizer state and `optax.apply_updates` returns new params "
        "(`flax.training.TrainState.apply_gradients` is those two calls, the quickstart program's Linen step).",
        "**Optimizer state is a pytree.** `optimizer.state[p]['momentum_buffer']` is hidden inside the "
        "optimizer, keyed by parameter object; `nnx.Optimizer.opt_state` is optax's state, and its `trace` "
        "(`optax.tree_utils.tree_get(opt_state, \"trace\")`) has the params' structure. torch's buffer "
        "starts as the first gradient, optax's trace starts at zeros and adds `g + momentum * 0`: the same numbers "
        "from step 1, as the table shows.",
        "**Loops.** The tutorial's `train_loop` is Python per batch, and so is the JAX `train_epoch` shown here "
        "(Flax NNX: `nnx.Optimizer` is the train state, holding the optax transform and its state next to a reference "
        "to the model; `nnx.jit` compiles one step, donating the model's and optimizer's buffers so XLA may update "
        "them in place; plain `optax.sgd(1e-3)`, the tutorial's optimizer; the test asserts torch's losses step by "
        "step). The quickstart program's `jax_impl.train.train_epoch` goes further and compiles the whole epoch as "
        "one `lax.scan` over a Linen `TrainState`. The test loop sums per-batch losses on the host in both.",
    ]),
    Chapter("Save and load the model", "save_load", ["save_weights", "empty_model", "load_weights", "save_whole_model",
                                                     "load_whole_model",
                                                     "load_untrusted", "write_crafted_pickle", "save_safetensors",
                                                     "load_safetensors", "predict_all"], _save_load, [
        "**Pickle runs code.** `torch.save(model)` pickles the class; `torch.load(..., weights_only=False)` can execute "
        "anything in the file. `weights_only=True` refuses such files (`parity/test_basics.py` shows a crafted pickle "
        "refused, and its payload running once the flag is turned off). It is `torch.load`'s default only from torch "
        "2.6; torch 2.4 and 2.5 (which `pyproject.toml` allows) default to `False`, so this project always passes it "
        "explicitly.",
        "**The tutorial's lines, both sides.** `save_weights` is `torch.save(model.state_dict(), path)`; its twin "
        "writes `nnx.state(model, nnx.Param)` (NNX's `state_dict`, as a pure dict) with `flax.serialization`'s "
        "msgpack. `load_weights` is `model.load_state_dict(torch.load(path, weights_only=True)); model.eval()`; its "
        "twin is `nnx.update(model, state)` (NNX's `load_state_dict`) and `model.eval()`. The quickstart's own "
        "writers (`reference_torch/checkpoint.py`, `jax_impl/checkpoint.py`) add an atomic rename and a checksum: "
        "a program's concerns, not the lesson's.",
        "**Build without memory, then load.** `with torch.device(\"meta\")` builds a module whose tensors have "
        "shapes and no storage; `load_state_dict(..., assign=True)` then makes the loaded tensors the module's own. "
        "`nnx.eval_shape(lambda: NeuralNetwork(rngs=nnx.Rngs(0)))` builds the NNX module with "
        "`jax.ShapeDtypeStruct` leaves, drawing and allocating nothing, and `nnx.update` fills it (`empty_model`, "
        "rows above).",
        "**Orbax for checkpoints.** Flax's advice for training checkpoints is Orbax (`orbax-checkpoint`, installed "
        "with flax itself, so no new dependency): `ocp.StandardCheckpointer().save(path, nnx.state(model))`, then "
        "`restore(path, nnx.state(nnx.eval_shape(...)))` and `nnx.update` (the exercise below). It writes a "
        "directory, asynchronously, and handles sharded arrays across hosts; msgpack and safetensors are single "
        "files of host arrays.",
        "**The rows use trained weights**: `trained_torch_model` in `quickstart_parity_guide/guide.py` runs 300 SGD "
        "steps (lr 1e-3, batch 64) from the seed-0 init on the first 19,200 training images, deterministically; one "
        "row uses freshly initialised NNX weights instead. (300 steps at the tutorial's lr: trained, non-random "
        "weights, not yet a good model.)",
        "**Model = code, params = data.** JAX has no whole-model object to save: `save_whole_model` writes the params "
        "pytree and the widths as msgpack, and the model is rebuilt from code.",
        "**safetensors is the shared format**: tensors and names only, no code. Written in torch's names and layout, "
        "either side reads the other's file and predicts the same classes on all 10,000 test images "
        "(`parity/test_basics.py`, after one full epoch).",
    ]),
    Chapter("Functional transforms", "functional", ["model_grad", "per_sample_grads", "jacobians", "hvp", "log1pexp",
                                                     "custom_grad", "checkpointed", "higher_order"], _functional, [
        "**`torch.func` is JAX's model inside torch.** `functional_call(model, params, x)` turns a module into a "
        "function of a params dict, so `grad`, `vmap`, `jacrev`, `jvp` apply as in JAX. JAX's own transforms take only "
        "this style (functions of arrays and pytrees); Flax NNX puts module objects on top, and `nnx.grad`/`nnx.vmap` "
        "(or `nnx.split` to a pytree and `nnx.merge` back) hand them to the same transforms: see the quickstart "
        "chapter.",
        "**Per-sample gradients** are `vmap(grad(loss_of_one_example))` on both sides; both match a float64 loop of "
        "one `backward()` per example (rows above). Without `vmap`, torch's `backward()` only gives the batch sum.",
        "**Custom gradients.** `torch.autograd.Function` has `forward(ctx, ...)`/`backward(ctx, g)` with "
        "`ctx.save_for_backward`; `jax.custom_vjp` has `fwd` returning `(out, residuals)` and `bwd(residuals, g)`. "
        "Both fix `log(1 + exp(x))`'s `nan` gradient at x = 100 (`inf / inf`); the value is still `inf` there (a "
        "stable forward would be `softplus`/`logaddexp`).",
        "**Activation checkpointing, measured.** torch: `torch.utils.checkpoint(segment, ..., use_reentrant=False)`; "
        "what backward keeps is counted by a `torch.autograd.graph.saved_tensors_hooks` pack hook (every tensor "
        "autograd saves, with its bytes). JAX: `jax.checkpoint(segment)`; what `jax.grad` keeps is listed by "
        "`jax.ad_checkpoint.print_saved_residuals`. Four two-layer tanh segments on a (1024, 256) input: both drop "
        "from 23-25 saved tensors to 12, and from 18.6-19.9 MB to 6.3 MB (weights and input included). The compiled "
        "program is another matter: XLA's temporary buffers for `jit(grad(f))` (`memory_analysis()."
        "temp_size_in_bytes`) are *larger* with checkpointing on this CPU, because XLA schedules and reuses buffers "
        "for the whole program; checkpointing's saving is in what is kept between forward and backward.",
        "**Higher order.** torch needs `create_graph=True` so the first gradient is itself differentiable; in JAX "
        "`jax.grad(f)` is a function like any other and `jax.grad(jax.grad(f))` just works. `jax.hessian` is "
        "`jacfwd(jacrev(f))`; a Hessian-vector product is `jvp(grad(f))`, never materialising the Hessian.",
    ]),
    Chapter("jit: tracing and compiling", "jit", ["control_flow", "tracing_counts", "static_argument", "donation", "ready"],
            _jit, [
        "**grad traces concretely, jit abstractly.** `jax.grad(f)` runs `f`'s Python on every call, with concrete "
        "values inside the tracers (so `if x > 0` works). `jax.jit(f)` runs it once per input signature (shapes, "
        "dtypes, static arguments) with abstract tracers, compiles, and replays the compiled program afterwards: "
        "Python side effects (`print`, appending to a list) happen only while tracing. A new shape means a new trace "
        "(`tracing_counts`: 2 runs for shapes 3, 3, 4, 3).",
        "**Compiler against compiler.** torch's counterpart of `jax.jit` is `torch.compile` (TorchDynamo captures the "
        "graph, Inductor compiles it). It differs in what happens at Python it cannot capture: an `if` on a tensor "
        "is a *graph break*, so `torch.compile(f)` runs that part in Python and compiles the pieces around it "
        "(`torch._dynamo.explain` counts 1 break above); `jax.jit` has no fallback, it compiles all of `f` or "
        "fails. `torch.compile(f, fullgraph=True)` refuses graph breaks and then fails as `jax.jit` does "
        "(`Unsupported: Data-dependent branching`). The branch as an operator compiles on both sides: `torch.cond` "
        "is `lax.cond`'s twin (same gradients above). The rows use Dynamo with `backend=\"eager\"`: the capture, "
        "which is what decides graph breaks, without Inductor's seconds of code generation.",
        "**Static arguments** (`static_argnames`) are Python values baked into the trace: each distinct value is a "
        "separate compilation. Use them for shapes, flags and loop counts, never for data.",
        "**Donation** (`donate_argnums`) lets XLA write the output into an input's buffer, torch's in-place `add_` "
        "done functionally: the donated array is deleted afterwards (`input_usable` False). `jax_impl.train` donates "
        "the TrainState to its epoch function.",
        "**Asynchronous dispatch.** A JAX call returns a future at once; `block_until_ready()` (or reading the value) "
        "waits. A benchmark that stops the clock without blocking times the dispatch, not the work. torch on CPU runs "
        "synchronously, but on CUDA it is asynchronous too (`torch.cuda.synchronize()`).",
        "**Recompiles.** `torch.compile` too caches per input signature and recompiles on a new shape (then marks "
        "the dimension dynamic); `jax.config.update(\"jax_log_compiles\", True)` logs every JAX compilation, the way "
        "to spot a recompile per step. Timings are not measured here (`python -m benchmarks.run` times both).",
    ]),
    Chapter("Random numbers: generators vs keys", "prng", ["same_call_twice", "reseed_repeats", "independent_streams",
                                                          "replay_step"], _prng, [
        "**State vs value.** `torch.manual_seed` seeds a hidden global generator that every `rand` advances; a "
        "`torch.Generator` is an explicit but still mutable one. A JAX key is an immutable value: the same key always "
        "draws the same numbers, so each new draw needs a new key from `jax.random.split`.",
        "**`fold_in(key, step)`** derives a key from data (a step, a worker index): step 5's noise is a function of "
        "(seed, 5) alone, drawable in any order, inside `jit`/`vmap`, on any device. One stateful generator advanced "
        "step by step cannot do that (step 5's draw depends on every draw before it); torch gets the same property "
        "with a `Generator` per step seeded from (seed, step), as `replay_step` does, but the seed mix is the "
        "user's: `seed * 1000 + step` makes (seed 0, step 1000) and (seed 1, step 0) the same stream (row above), "
        "where `fold_in` hashes the step into the key.",
        "The numbers differ between the frameworks (different generators and algorithms); the properties agree.",
    ]),
    Chapter("Pytrees and state_dict", "pytrees", ["parameter_order", "scale_all", "flatten_to_vector", "global_norm"],
            _pytrees, [
        "**Order.** A `state_dict` is an ordered dict in registration order: `weight` then `bias`. A Flax params tree "
        "is nested dicts, and `jax.tree` flattens a dict in *sorted key order*, so every layer lists `bias` "
        "before `kernel`. Code that pairs leaves by position across the two (a flat vector, an optimizer state) must "
        "map by name, as `parity/weights.py` does.",
        "**Mapping over parameters.** torch iterates `named_parameters()` or the state_dict; JAX's `jax.tree.map` "
        "applies a function to every leaf of any nesting and returns the same structure. `ravel_pytree` is "
        "`parameters_to_vector` plus the inverse function; `optax.tree.norm` is the norm `clip_grad_norm_` uses "
        "(`optax.global_norm`, its old name, is deprecated).",
    ]),
    Chapter("The model and its train step, three ways", "quickstart",
            ["NeuralNetwork", "torch_linear_init", "loss_fn", "train_step"],
            _quickstart, [
        "**torch**: a module object owns its parameters; the step mutates model and optimizer in place.",
        "**Flax NNX** (`jax_impl/nnx_model.py`): also a Python object owning its parameters (`nnx.Param`), updated in "
        "place by `nnx.Optimizer.update`; `nnx.jit`/`nnx.value_and_grad` split the object into a pytree and merge it "
        "back around the traced function. The closest to torch, and what Flax's docs now recommend to new users. "
        "Its `train_step` is `nnx.jit(..., donate_argnames=(\"model\", \"optimizer\"))`: the model's and the "
        "optimizer's buffers are donated, so XLA may write the new parameters and optax state over the old ones "
        "instead of keeping both alive during the step, as the Linen epoch's donated state does (an array read out "
        "of the model before the step is deleted by it: copy it to keep it). "
        "`parity/test_nnx.py` trains it 300 real steps from torch's weights and compares it with torch at the same "
        "tolerances as the Linen twin.",
        "**Flax Linen** (`jax_impl/model.py`, `jax_impl/train.py`): the module is a stateless description, `init` "
        "returns a params dict and `apply` takes it; the step is a pure function `(state, batch) -> (state, metrics)`. "
        "Maintained, and what most existing Flax code uses. `jax_impl.train` compiles a whole epoch as one `lax.scan` "
        "over a donated state; NNX can do the same by `nnx.split`ting the model into a graph definition and a state "
        "pytree, scanning over the state, and `nnx.merge`ing after (Flax's performance guide), so purity is a "
        "convenience of Linen, not a thing only it allows.",
        "**When to pick which.** Porting torch code or writing new models with state (batch norm, caches, RNG "
        "streams): NNX. Extending a Linen codebase, or wanting every step to be a plain pure function with no object "
        "graph to split: Linen. The numbers are the same either way (table above).",
        "**The initialiser.** torch's `nn.Linear.reset_parameters` draws the weight with `kaiming_uniform_(a=sqrt(5))` "
        "and the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the kaiming bound is sqrt(6 / (6 fan_in)) = "
        "1/sqrt(fan_in), so both are that uniform. `torch_linear_init` gives Flax (Linen and NNX) the same "
        "distribution, replacing Flax's default lecun-normal kernel and zero bias.",
    ], jax_label="Flax Linen", more_sides=[("Flax NNX", "jax_impl.nnx_model")]),
    Chapter("Data parallelism: DDP and JAX sharding", "distributed",
            ["setup", "replicate", "weighted_loss", "train_step", "train_step_shard_map", "train_epoch"],
            _distributed, [
        "**N processes vs one program.** DDP runs N processes, each with a full model and its own loop; they meet only "
        "in collectives (gloo on CPU, NCCL on GPUs). JAX runs one program over N devices: the parameters are one array "
        "replicated (`P()`), each global batch one array split over the mesh axis (`P(\"data\")`). `setup` builds "
        "the mesh with `jax.make_mesh((N,), (\"data\",))` and makes it the current one with `jax.set_mesh(mesh)` (jax 0.10 "
        "has no `jax.sharding.use_mesh`, its earlier spelling; with a mesh set, a bare `P(\"data\")` is a sharding). "
        "On a CPU, `jax.config.update(\"jax_num_cpu_devices\", N)` right after `import jax` splits the host into N "
        "devices, where older code sets `XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX is imported; "
        "either must come before JAX's first computation.",
        "**Bucketed all-reduce of sums / N vs a sharded mean.** DDP hooks every parameter: as gradients are ready during "
        "`backward` they are packed into buckets and each bucket is all-reduced while `backward` goes on. The first "
        "step uses `bucket_cap_mb` (25 MiB), so this MLP's 669,706 float32 gradients (2.7 MB) are one bucket; DDP then "
        "rebuilds the buckets in the order the gradients arrived (`Reducer::rebuild_buckets`), with a 1 MiB first "
        "bucket, so from the second step on there are two all-reduces (the rows above, read from DDP's own logging "
        "data). The reducer divides by the world size and the "
        "all-reduce sums, so every replica holds (g_0 + ... + g_(N-1)) / N. Under `jit`, `train_step` is the one-device "
        "step: the batch mean becomes a partial sum per device plus one all-reduce, and the gradients follow (the compiled "
        "program holds `all-reduce` and no `all-gather` of the batch; `parity/test_distributed.py` checks it). "
        "`train_step_shard_map` writes the per-device loss out instead (next point).",
        "**Unequal shards need weights.** DDP and `pmean` weight every replica 1/N whatever its shard size. A global "
        "batch of 33 on 2 replicas splits 17 + 16; each shard's mean loss times n_r * N / b (1.0303 and 0.9697 above) "
        "makes the average the one-device mean (`quickstart_parity_common/shards.py`). "
        "torch's `DistributedSampler` instead pads the data "
        "set by repeating samples (or drops them with `drop_last=True`), and JAX's `NamedSharding` refuses a dimension "
        "that does not divide (`IndivisibleError`), so the JAX side pads each shard with weight-0 samples. The quickstart's "
        "last batch of 32 splits 16 + 16 on 2 replicas: weights 1, as one device.",
        "**`shard_map`, as JAX's tutorial writes data parallelism.** `train_step_shard_map` maps only the *loss* over "
        "the devices: each device computes its shard's weighted mean and returns `jax.lax.pmean` of it, so the "
        "result is the global batch's loss, the same value on every device (`out_specs=P()`); `jax.value_and_grad` "
        "is applied *outside* `shard_map`. There is no `pmean` of the gradients, and none is needed: the parameters "
        "enter replicated (`in_specs=P()`), and where the replicated value meets device-varying data JAX inserts a "
        "`pvary`, whose transpose is a `psum`, so the gradient comes back already reduced over the devices (the "
        "\"sharding and AD\" notes: [shard_map tutorial](https://docs.jax.dev/en/latest/notebooks/shard_map.html), "
        "[JEP 17111](https://docs.jax.dev/en/latest/jep/17111-shmap-transpose.html)). The per-device `pmean` of the "
        "loss is that all-reduce's 1/N. What `check_vma=True` (the default, kept on) checks: it types every value "
        "inside `shard_map` as varying or invariant across each mesh axis, so an `out_specs=P()` output must be "
        "provably the same on every device (returning the shard's loss without `pmean` is refused with a "
        "`ValueError`), and it makes the transposes above exact. The old `pmap` habit of taking gradients inside "
        "and `pmean`ing them meets the same rule: the gradient of the replicated parameters is already summed, a "
        "`pmean` after it changes nothing, and the step uses N times the gradient; switching the check off "
        "(`check_vma=False`) restores the old behaviour and loses the check. The two rows above: one step of "
        "`train_step_shard_map` and of `train_step` on 2 devices, the same parameters to rounding, against an "
        "update that a factor of 2 in the gradient would change by as much.",
        "**Same initial weights.** DDP broadcasts rank 0's parameters when it wraps the model (`init_sync=True`), which "
        "hides ranks seeded differently; a replicated JAX array is one value by construction, unless it is assembled from "
        "per-device buffers (`jax.make_array_from_single_device_arrays`), as separately seeded hosts would. "
        "`python -m parity.distributed` trains all forms over the whole epoch and compares them per step.",
    ]),
]


def _source(module, name: str) -> str | None:
    """The source of ``module.name``; an alias of something defined elsewhere (or under another
    name) is headed by a comment saying what it is, so the heading always matches the code."""
    obj = getattr(module, name, None)
    if obj is None:
        return None
    target = inspect.unwrap(obj)
    where = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', name)}"
    alias = getattr(target, "__name__", name) != name or getattr(target, "__module__", module.__name__) != module.__name__
    try:
        src = inspect.getsource(target).rstrip()
    except (TypeError, OSError):
        # an import, not an assignment: a notebook cell must run as written
        return f"from {getattr(target, '__module__', '?')} import {getattr(target, '__name__', name)} as {name}"
    return f"# {name} = {where}\n{src}" if alias else src


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


@dataclass
class Built:
    """One chapter as every rendering shows it (markdown here, HTML and notebooks in ``render.py``)."""
    chapter: Chapter
    sides: list[tuple[str, str]]  # (label, module) per column: torch, JAX, then the chapter's more_sides
    pairs: list[tuple[str, list[str | None]]]  # (function name, its source per side; None: no counterpart)
    numbers: list[tuple]  # (what, value per side), computed on the real data
    deprecations: list[str] = field(default_factory=list)  # warnings raised while computing them


def build(data_dir: str = "data") -> list[Built]:
    """Every chapter of ``CHAPTERS`` with its functions' sources and its numbers, computed once."""

    built = []
    for chapter in CHAPTERS:
        mods = [importlib.import_module(module) for _, module in chapter.sides]
        pairs = [(name, [_source(mod, name) for mod in mods]) for name in chapter.functions]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every warning, not once per location: each is recorded
            numbers = chapter.rows(data_dir)
        deprecations = [f"{Path(w.filename).name}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught
                        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))]
        for what, *values in numbers:
            if len(values) != len(mods):
                raise ValueError(f"{chapter.title}: row {what!r} has {len(values)} values for {len(mods)} sides")
        sides = [(label, mod.__name__) for (label, _), mod in zip(chapter.sides, mods, strict=True)]
        built.append(Built(chapter, sides, pairs, numbers, deprecations))
    return built


def generate(data_dir: str = "data", built: list[Built] | None = None) -> str:
    """The guide's markdown text (from ``build(data_dir)`` unless given)."""
    built = build(data_dir) if built is None else built
    out = ["# The PyTorch basics tutorial, side by side with JAX", "",
           "<!-- generated by `python -m quickstart_parity_guide`; do not edit: "
           "quickstart_parity_guide/test_study.py checks it is current -->", "",
           INTRO, ""]
    out += ["Chapters: " + " · ".join(f"[{b.chapter.title}](#{anchor(b.chapter.title)})" for b in built), ""]
    for b in built:
        chapter = b.chapter
        out += [f"## {chapter.title}", ""]
        for name, sources in b.pairs:
            out += [f"### `{name}`", ""]
            for (label, module), src in zip(b.sides, sources, strict=True):
                out += [f"**{label}** (`{module}`)", ""]
                out += (["```python", src, "```", ""] if src else [NO_COUNTERPART, ""])
        labels = [label for label, _ in b.sides]
        out += ["### " + numbers_title(len(labels)), "",
                "| what | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for what, *values in b.numbers:
            out.append(f"| {what} | " + " | ".join(fmt(v) for v in values) + " |")
        if chapter.extra:
            out += ["", chapter.extra]
        out += ["", "### Differences in kind", ""] + [f"- {d}" for d in chapter.differences] + [""]
        out += exercises_markdown(chapter)
    return "\n".join(out)


def exercises_markdown(chapter: Chapter) -> list[str]:
    """The chapter's exercises, each answer folded away (``<details>``), as markdown lines."""
    if not chapter.exercises:
        return []
    out = ["### Exercises", ""]
    for i, ex in enumerate(chapter.exercises, start=1):
        out += [f"{i}. {ex.question}", "", "<details><summary>Answer</summary>", "", "```python", ex.answer.strip(),
                "```", "", "</details>", ""]
    return out


def numbers_title(sides: int) -> str:
    """The heading over a chapter's numbers."""
    return "The numbers " + ("both" if sides == 2 else f"all {sides}") + " produce"


EXERCISES = {
    "tensors": [Exercise(
        "`in_place_add` returns a new array. Do the update in place with `jax.new_ref`, and read the result back.",
        """import jax
import jax.numpy as jnp

x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
ref = jax.new_ref(x)  # a mutable Ref holding x's value
ref[...] += 5  # writes into the Ref (also inside jit); x itself never changes
answer = ref[...]""",
        "bool((answer == x + 5).all()) and bool((x == jnp.array([[1.0, 2.0], [3.0, 4.0]])).all())"),
        Exercise(
        "Hand a torch tensor to JAX and a JAX array to torch without copying, and show that no copy was made.",
        """import jax
import jax.numpy as jnp
import torch

tensor = torch.arange(8.0)
from_torch = jax.dlpack.from_dlpack(tensor)  # a JAX array over torch's buffer
array = jnp.arange(8.0)
from_jax = torch.from_dlpack(array)  # a torch tensor over JAX's buffer
answer = (from_torch.unsafe_buffer_pointer() == tensor.data_ptr(), from_jax.data_ptr() == array.unsafe_buffer_pointer())""",
        "answer == (True, True)")],
    "layers": [Exercise(
        "Build the tutorial's `nn.Linear(in_features=28*28, out_features=20)` as a Flax NNX layer. What shape is "
        "its kernel, and why is it not torch's `(20, 784)`?",
        """from flax import nnx

layer1 = nnx.Linear(28 * 28, 20, rngs=nnx.Rngs(0))  # nnx.Rngs: the named key streams NNX draws parameters from
answer = layer1.kernel.shape  # [in, out]: Flax computes x @ kernel, torch x @ weight.T""",
        "tuple(answer) == (784, 20) and layer1.bias.shape == (20,)")],
    "autograd": [Exercise(
        "torch's `jacobian_products` passes `retain_graph=True` to every `backward`. What does a second `backward` "
        "do without it, and does JAX's `vjp_fn` need anything like it?",
        """import jax
import jax.numpy as jnp
import torch

inp = torch.eye(5, requires_grad=True)
out = (inp + 1).pow(2)
out.backward(torch.ones_like(inp))  # frees the graph's saved tensors
try:
    out.backward(torch.ones_like(inp))
    torch_second = "ran"
except RuntimeError:  # "Trying to backward through the graph a second time"
    torch_second = "RuntimeError"
_, vjp_fn = jax.vjp(lambda inp: (inp + 1) ** 2, jnp.eye(5))
first, again = vjp_fn(jnp.ones((5, 5)))[0], vjp_fn(jnp.ones((5, 5)))[0]  # a plain function: reusable
answer = (torch_second, bool((first == again).all()))""",
        'answer == ("RuntimeError", True)')],
    "optimization": [Exercise(
        "torch's `forgotten_zero_grad` sums two batches' gradients in `.grad`. Write that accumulation for JAX "
        "gradient trees, where it has to be explicit.",
        """import jax
import jax.numpy as jnp

g1 = {"kernel": jnp.ones(3), "bias": jnp.array(1.0)}
g2 = {"kernel": jnp.full(3, 2.0), "bias": jnp.array(-1.0)}
answer = jax.tree.map(jnp.add, g1, g2)  # what a second backward() does to every .grad""",
        'float(answer["bias"]) == 0.0 and bool((answer["kernel"] == 3.0).all())')],
    "save_load": [Exercise(
        "Save a params tree with `flax.serialization` and restore it into a template of zeros.",
        """import jax
import jax.numpy as jnp
from flax import serialization

params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.arange(2.0)}}
data = serialization.to_bytes(params)  # msgpack: arrays and containers only, no code
answer = serialization.from_bytes(jax.tree.map(jnp.zeros_like, params), data)""",
        "all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(answer), jax.tree.leaves(params), strict=True))"),
        Exercise(
        "Save an NNX model with Orbax, Flax's advice for checkpoints, and restore it into `nnx.eval_shape`'s "
        "empty model.",
        """import tempfile

import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jax_impl.nnx_model import NeuralNetwork

model = NeuralNetwork((32,), rngs=nnx.Rngs(0))
path = tempfile.mkdtemp() + "/ckpt"  # Orbax writes a directory, which must not exist yet
checkpointer = ocp.StandardCheckpointer()
checkpointer.save(path, nnx.state(model))
checkpointer.wait_until_finished()  # the save runs in the background
empty = nnx.eval_shape(lambda: NeuralNetwork((32,), rngs=nnx.Rngs(1)))  # shapes only: nothing drawn
nnx.update(empty, checkpointer.restore(path, nnx.state(empty)))
x = np.ones((2, 784), np.float32)
answer = (np.asarray(empty(x)), np.asarray(model(x)))""",
        "np.array_equal(*answer) and not np.array_equal(answer[1], np.asarray(NeuralNetwork((32,), rngs=nnx.Rngs(1))(x)))")],
    "jit": [Exercise(
        "`jax.jit(jax.grad(_f))` fails on the `if`. Rewrite `_f` so it compiles, and check the gradients at 2, -3, 2.",
        """import jax
import jax.numpy as jnp


def f(x):
    return jnp.where(x > 0, x ** 2, -x)  # both branches computed, one selected: no Python bool


g = jax.jit(jax.grad(f))
answer = [float(g(jnp.float32(v))) for v in (2.0, -3.0, 2.0)]""",
        "answer == [4.0, -1.0, 4.0] == j.control_flow([2.0, -3.0, 2.0])['grads']"),
        Exercise(
        "Find which calls of a jitted function compiled, with `jax_log_compiles`, for inputs of length 3, 3, 4, 3.",
        """import logging

import jax
import jax.numpy as jnp


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def double(x):
    return x * 2


handler = Collect()
logging.getLogger("jax").addHandler(handler)
f = jax.jit(double)
inputs = [jnp.ones(n) for n in (3, 3, 4, 3)]  # made first: creating them compiles small programs too
with jax.log_compiles():  # the context form of jax.config.update("jax_log_compiles", True)
    for x in inputs:
        f(x)
logging.getLogger("jax").removeHandler(handler)
answer = [m.split("(ShapedArray(")[1].split(")")[0] for m in handler.messages if m.startswith("Compiling jit(double)")]""",
        "answer == ['float32[3]', 'float32[4]']")],
    "prng": [Exercise(
        "Draw step 7's noise of `replay_step` (seed 0) without drawing steps 0 to 6.",
        """import jax

answer = jax.random.uniform(jax.random.fold_in(jax.random.key(0), 7), (3,))""",
        "np.array_equal(np.asarray(answer), j.replay_step(step=7)['in_order'])")],
    "pytrees": [Exercise(
        "Compute a tree's global norm from `jax.tree.leaves`, without optax.",
        """import jax
import jax.numpy as jnp

params = {"a": jnp.ones((2, 3)), "b": {"c": jnp.full(4, 2.0)}}
answer = jnp.sqrt(sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params)))  # sqrt(6 + 16)""",
        "abs(float(answer) - float(j.global_norm(params))) < 1e-6 and abs(float(answer) - 22 ** 0.5) < 1e-6")],
}
