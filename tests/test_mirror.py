"""The two sides mirror each other: every public name of one module exists in its twin.

Names only one framework needs are listed with the reason; anything else missing is a drift.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

PAIRS = ["train", "model", "checkpoint", "data", "__main__", "cnn", "cnn_train", "distributed", "launch",
         "multiprocess", "registry"] + [
    f"basics.{chapter}" for chapter in ("autograd", "datasets", "distributed", "functional", "jit", "layers",
                                        "optimization", "prng", "pytrees", "quickstart", "save_load", "tensors",
                                        "transforms")]

ONE_SIDE_ONLY = {
    ("reference_torch", "__main__"): {"TORCH_DEVICES": "the devices torch can name (mps among them)"},
    ("jax_impl", "__main__"): {"JAX_DEVICES": "the devices JAX can name"},
    ("jax_impl", "train"): {
        "TrainState": "Flax keeps params and optimizer state in one value; torch's model and optimizer hold them",
        "Batch": "the type of a JAX batch of device arrays; torch's DataLoader yields them",
        "create_train_state": "builds that TrainState; torch's make_optimizer binds to the model's parameters",
        "train_step": "the jitted pure step; torch's step is the tutorial's inline loop body",
    },
    ("jax_impl", "model"): {
        "torch_linear_init": "torch's nn.Linear draws this itself",
        "layer_name": "Flax names layers explicitly; torch's come from nn.Sequential",
        "init_params": "Flax params are created apart from the module; torch draws them in the constructor",
    },
    ("jax_impl", "data"): {
        "to_float": "ToTensor's scaling done by hand; torchvision's transform does it",
        "device_dataset": "the split placed on the device once; torch's DataLoader moves batches",
        "load_fashion_mnist": "one split as numpy; torchvision's datasets.FashionMNIST",
    },
    ("jax_impl", "cnn"): {
        "BatchNorm": "torch's BatchNorm2d: Flax's nn.BatchNorm has another momentum and a biased running variance",
        "PAD1": "torch's padding=1 spelled as Flax's explicit padding ('SAME' pads differently at stride 2)",
        "conv_init": "torch's nn.Conv2d draws this itself",
        "init_variables": "Flax variables are created apart from the module; torch's in the constructor",
    },
    ("jax_impl", "cnn_train"): {
        "CNNState": "the TrainState plus batch_stats and the dropout key; torch's module holds both",
        "create_train_state": "builds that CNNState; torch's make_optimizer binds to the model's parameters",
        "train_step": "the jitted pure step threading batch_stats and dropout keys; torch reuses train.train_epoch",
        "scan_epoch": "the one-scan epoch, slower for convolutions on XLA:CPU (jax-ml/jax#12868); torch has one loop",
    },
    ("reference_torch", "distributed"): {
        "allreduce_sum_hook": "the sum control as a DDP comm hook; JAX's is make_step's grad_reduce",
        "worker": "one DDP rank's process (reference_torch.launch starts N); the JAX worker process is main",
        "weighted_loss": "one rank's shard loss; JAX's lives with its step forms in jax_impl.sharding",
        "train_step": "one DDP rank's step; JAX's two forms are built by jax_impl.sharding.make_step",
    },
    ("reference_torch", "launch"): {
        "free_port": "the DDP ranks' TCP rendezvous; JAX's devices share one process",
        "run": "one config, blocking; JAX's process takes torch's weights as well (run_many, start)",
    },
    ("jax_impl", "launch"): {
        "start": "the JAX process started without waiting, so it trains while DDP's ranks run",
        "collect": "waits for start's process and reads its results; DDP's run_many joins its ranks itself",
        "start_processes": "the N JAX processes started without waiting; torchrun starts DDP's and run_processes waits",
        "collect_processes": "waits for start_processes's processes; torch's run_processes waits on torchrun itself",
    },
    ("jax_impl", "distributed"): {
        "test_metrics": "the worker's own test evaluation (a JSON field); parity evaluates DDP's weights",
        "main": "the JAX worker process's CLI (N host devices and x64 must be set before JAX starts)",
    },
    ("jax_impl", "basics.distributed"): {
        "train_step_shard_map": "the per-device form written out with an explicit pmean; DDP has the one form",
    },
    ("reference_torch", "data"): {
        "get_datasets": "torchvision's datasets; jax_impl reads the IDX files with numpy",
        "get_dataloaders": "torch's DataLoader; JAX batches by slicing device arrays",
    },
}


def public_names(module) -> set[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and not inspect.ismodule(v)
                 and getattr(v, "__module__", module.__name__) == module.__name__]
    return set(names)


@pytest.mark.parametrize("pair", PAIRS)
def test_every_public_name_has_its_twin(pair):
    torch_mod = importlib.import_module(f"reference_torch.{pair}")
    jax_mod = importlib.import_module(f"jax_impl.{pair}")
    t, j = public_names(torch_mod), public_names(jax_mod)
    missing_in_jax = t - j - set(ONE_SIDE_ONLY.get(("reference_torch", pair), {}))
    missing_in_torch = j - t - set(ONE_SIDE_ONLY.get(("jax_impl", pair), {}))
    assert not missing_in_jax, f"reference_torch.{pair} has {sorted(missing_in_jax)}, jax_impl.{pair} does not"
    assert not missing_in_torch, f"jax_impl.{pair} has {sorted(missing_in_torch)}, reference_torch.{pair} does not"
    for name in sorted(t & j):  # the same functions take the same argument names where frameworks agree
        a, b = getattr(torch_mod, name), getattr(jax_mod, name)
        same_args = ("build_model", "resolve_device", "check_outputs", "run", "main")
        if inspect.isfunction(a) and inspect.isfunction(b) and name in same_args:
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name


def test_exceptions_listed_are_real():
    """A stale entry in ONE_SIDE_ONLY would hide nothing; keep the list honest."""
    for (side, pair), names in ONE_SIDE_ONLY.items():
        module = importlib.import_module(f"{side}.{pair}")
        assert set(names) <= public_names(module), (side, pair, set(names) - public_names(module))


# Modules only one side has, and why (docs/design.md, "The mirror"); any other file must have its twin.
ONE_SIDE_MODULES = {
    "jax_impl.loops": "the compiled epoch and test pass; torch's loops are the tutorial's Python for-loops",
    "jax_impl.sharding": "mesh, step forms and batch layout; DDP keeps these inside the library",
    "jax_impl.nnx_model": "the same model in Flax NNX; torch has one module system",
    "jax_impl.basics.linen.layers": "the Linen form of the NNX layers chapter (the guide's third column); torch has one",
}


def _modules(side: str) -> set[str]:
    root = Path(importlib.import_module(side).__file__).parent
    return {".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")
            if p.name != "__init__.py" and "__pycache__" not in p.parts}


def test_every_module_has_its_twin_or_a_reason():
    torch_mods, jax_mods = _modules("reference_torch"), _modules("jax_impl")
    alone = {f"reference_torch.{m}" for m in torch_mods - jax_mods} | {f"jax_impl.{m}" for m in jax_mods - torch_mods}
    assert alone == set(ONE_SIDE_MODULES), f"unpaired: {sorted(alone - set(ONE_SIDE_MODULES))}; " \
                                           f"listed but paired or gone: {sorted(set(ONE_SIDE_MODULES) - alone)}"
    assert torch_mods & jax_mods == set(PAIRS), f"pairs the name test skips: {sorted(torch_mods & jax_mods - set(PAIRS))}"
