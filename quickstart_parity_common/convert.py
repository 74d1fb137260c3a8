"""torch ``state_dict`` <-> Flax variables, by layer type, numpy only (both sides and the referee use it).

Layer names: a torch module path becomes a Flax scope path by joining each ``nn.Sequential`` index
to its parent with ``_`` and turning every other ``.`` into a nesting level:
``linear_relu_stack.0`` -> ``linear_relu_stack_0``; ``block.conv`` -> ``block/conv``;
``layers.1.norm`` -> ``layers_1/norm`` (what Flax names a list of submodules and a submodule).

Layers, identified from the torch entries, or given by ``kinds`` (``kinds_of(model.named_modules())``
reads them from the modules' classes: always do, since entries alone cannot tell a GPT-2 ``Conv1D`` or a
``ConvTranspose2d`` from a ``Linear`` or a ``Conv2d``), and back from the Flax leaves:

================  ======================================  ==============================================
layer (kind)      torch                                   Flax
================  ======================================  ==============================================
Linear            weight [out, in], bias                  params kernel [in, out], bias
``gpt2_conv1d``   HF GPT-2 ``Conv1D``: weight [in, out]   params kernel [in, out] (as is), bias
Conv1d/2d/3d      weight [O, I/groups, *k], bias          params kernel [*k, I/groups, O], bias (grouped,
                                                          depthwise and dilated convolutions alike)
ConvTranspose2d   weight [I, O, kH, kW], bias             params kernel [kH, kW, I, O] spatially flipped:
(``conv_transpose``)                                      ``nn.ConvTranspose(transpose_kernel=False)`` with
                                                          padding ``k - 1 - p`` per side computes torch's
BatchNorm1d/2d    weight, bias, running_mean,             params scale, bias; batch_stats mean, var,
                  running_var, num_batches_tracked        num_batches_tracked (kept so nothing is lost)
LayerNorm         weight, bias (1-D, no running stats)    params scale, bias
GroupNorm         weight, bias (``kinds`` only)           params scale, bias
RMSNorm           weight (``kinds`` only)                 params scale
Embedding         weight [num, dim] (``kinds`` only:      params embedding [num, dim]
                  a bias-free Linear looks the same)
================  ======================================  ==============================================

Every value is copied bit for bit (dtype kept), so a round trip is ``np.array_equal``; an entry that
fits no layer raises ``ConversionError`` naming the key. The MLP's conversion (``torch_to_flax``,
``flax_to_torch_numpy``, ``hidden_of``) is this plus a check that the layers chain as the MLP's do.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

KINDS = ("linear", "gpt2_conv1d", "conv2d", "conv", "conv_transpose", "batchnorm", "layernorm", "groupnorm", "rmsnorm",
         "embedding")
# torch class name -> kind; by name so that this module never imports torch (HF's Conv1D included)
_KIND_OF_CLASS = {"Linear": "linear", "NonDynamicallyQuantizableLinear": "linear", "Conv1D": "gpt2_conv1d",
                  "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
                  "ConvTranspose1d": "conv_transpose", "ConvTranspose2d": "conv_transpose",
                  "ConvTranspose3d": "conv_transpose",
                  "BatchNorm1d": "batchnorm", "BatchNorm2d": "batchnorm", "BatchNorm3d": "batchnorm",
                  "SyncBatchNorm": "batchnorm", "LayerNorm": "layernorm", "GroupNorm": "groupnorm", "RMSNorm": "rmsnorm",
                  "Embedding": "embedding"}
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_FLAX_BUFFER = {"running_mean": "mean", "running_var": "var", "num_batches_tracked": "num_batches_tracked"}


class ConversionError(ValueError):
    """A state_dict or variables tree that does not convert; the message names the key."""


WeightsError = ConversionError  # the MLP's name for it (parity.weights)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; this module never imports torch
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def flax_path(torch_module_path: str) -> tuple[str, ...]:
    """``"layers.1.norm"`` -> ``("layers_1", "norm")``: Sequential indices join their parent with ``_``."""
    out: list[str] = []
    for part in torch_module_path.split("."):
        if part.isdigit():
            if not out:
                raise ConversionError(f"module path {torch_module_path!r} starts with an index")
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def torch_path(flax_module_path: tuple[str, ...]) -> str:
    """Inverse of ``flax_path``: a trailing ``_<digits>`` is a Sequential index."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", p) for p in flax_module_path)


def kinds_of(named_modules) -> dict[str, str]:
    """``{module path: kind}`` for every module of a known layer type in ``model.named_modules()`` (by class name).

    A module of a class this table does not know but that holds parameters is left out: ``state_dict_to_variables``
    then guesses from its entries, or raises naming the key.
    """
    return {name: _KIND_OF_CLASS[type(m).__name__] for name, m in named_modules
            if name and type(m).__name__ in _KIND_OF_CLASS}


def _group(state_dict: Mapping[str, object]) -> OrderedDict[str, dict[str, np.ndarray]]:
    modules: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
    for key, value in state_dict.items():
        module, _, leaf = str(key).rpartition(".")
        if not module:
            raise ConversionError(f"state_dict key {key!r} has no module path (expected <module>.<name>)")
        modules.setdefault(module, {})[leaf] = _numpy(value)
    return modules


def _kind_of(module: str, leaves: dict[str, np.ndarray], kinds: Mapping[str, str]) -> str:
    if module in kinds:
        if kinds[module] not in KINDS:
            raise ConversionError(f"kinds[{module!r}] = {kinds[module]!r}, expected one of {KINDS}")
        return kinds[module]
    weight = leaves.get("weight")
    if weight is None:
        raise ConversionError(f"missing state_dict key {module + '.weight'!r}")
    if "running_mean" in leaves or "running_var" in leaves:
        return "batchnorm"
    return {4: "conv2d", 2: "linear", 1: "layernorm"}.get(weight.ndim) or _fail(
        f"state_dict key {module + '.weight'!r} has shape {weight.shape}: no Linear, Conv2d or norm layer has that")


def _fail(message: str):
    raise ConversionError(message)


def _expect(module: str, leaves: dict, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    for name in required:
        if name not in leaves:
            raise ConversionError(f"missing state_dict key {module + '.' + name!r}")
    extra = set(leaves) - set(required) - set(optional)
    if extra:
        raise ConversionError(f"unknown state_dict key {module + '.' + min(extra)!r}")


def _set(tree: dict, path: tuple[str, ...], leaves: dict, where: str) -> None:
    node = tree
    for p in path:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConversionError(f"{where}: {'/'.join(path)} clashes with a leaf of the same name")
    clash = set(node) & set(leaves)
    if clash:
        raise ConversionError(f"{where}: {'/'.join(path)}/{min(clash)} comes from two torch modules")
    node.update(leaves)


def state_dict_to_variables(state_dict: Mapping[str, object], kinds: Mapping[str, str] | None = None) -> dict:
    """Flax variables ``{"params": ..., "batch_stats": ...}`` (numpy) holding exactly the state_dict's values.

    ``kinds`` maps a torch module path to one of ``KINDS`` where the entries alone cannot tell
    (an ``Embedding`` looks like a bias-free ``Linear``). ``batch_stats`` is absent without BatchNorm.
    """
    kinds = dict(kinds or {})
    params: dict = {}
    stats: dict = {}
    for module, leaves in _group(state_dict).items():
        kind = _kind_of(module, leaves, kinds)
        path = flax_path(module)
        w = leaves.get("weight")
        if kind in ("linear", "gpt2_conv1d"):
            _expect(module, leaves, ("weight",), ("bias",))
            if w.ndim != 2:
                raise ConversionError(f"state_dict key {module + '.weight'!r} has shape {w.shape}, expected a matrix")
            out = {"kernel": np.ascontiguousarray(w.T if kind == "linear" else w)}  # Conv1D stores [in, out] already
        elif kind in ("conv2d", "conv", "conv_transpose"):
            _expect(module, leaves, ("weight",), ("bias",))
            if w.ndim not in ((4,) if kind == "conv2d" else (3, 4, 5)):
                raise ConversionError(f"state_dict key {module + '.weight'!r} has shape {w.shape}, expected "
                                      + ("OIHW" if kind == "conv2d" else "[O or I, I or O, *kernel]"))
            out = {"kernel": np.ascontiguousarray(conv_kernel_to_flax(w, transpose=kind == "conv_transpose"))}
        elif kind == "embedding":
            _expect(module, leaves, ("weight",))
            out = {"embedding": w}
        elif kind == "rmsnorm":
            _expect(module, leaves, ("weight",))
            out = {"scale": w}
        else:  # batchnorm / layernorm / groupnorm: affine weight and bias are Flax's scale and bias
            optional = _BN_BUFFERS if kind == "batchnorm" else ()
            _expect(module, leaves, ("weight", "bias") + (("running_mean", "running_var") if kind == "batchnorm" else ()),
                    optional)
            out = {"scale": w}
            if kind == "batchnorm":
                _set(stats, path, {_FLAX_BUFFER[b]: leaves[b] for b in _BN_BUFFERS if b in leaves}, "batch_stats")
        if "bias" in leaves:
            b = leaves["bias"]
            n_out = w.shape[1 if kind in ("gpt2_conv1d", "conv_transpose") else 0]
            if kind == "conv_transpose":
                n_out = out["kernel"].shape[-1]
            if b.shape != (n_out,):
                raise ConversionError(f"state_dict key {module + '.bias'!r} has shape {b.shape}, expected ({n_out},)")
            out["bias"] = b
        _set(params, path, out, "params")
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def conv_kernel_to_flax(w: np.ndarray, transpose: bool = False) -> np.ndarray:
    """torch's convolution weight in Flax's layout: ``[O, I, *k]`` -> ``[*k, I, O]``; a transposed convolution's
    ``[I, O, *k]`` -> ``[*k, I, O]`` with every spatial axis flipped (``nn.ConvTranspose(transpose_kernel=False)``)."""
    n = w.ndim - 2
    spatial = tuple(range(2, 2 + n))
    if not transpose:
        return w.transpose(*spatial, 1, 0)
    return np.flip(w.transpose(*spatial, 0, 1), axis=tuple(range(n)))


def _walk(tree: Mapping, path: tuple[str, ...] = ()):
    """Yield ``(module path, {leaf: array})`` for every module of a nested variables tree."""
    leaves = {k: v for k, v in tree.items() if not isinstance(v, Mapping)}
    if leaves:
        yield path, leaves
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _walk(v, path + (str(k),))


def variables_to_state_dict(variables: Mapping[str, Mapping], kinds: Mapping[str, str] | None = None
                            ) -> OrderedDict[str, np.ndarray]:
    """A torch state_dict (numpy, torch names and layouts) holding exactly the variables' values.

    The layer kind follows from ``kinds`` (torch module path -> kind, as ``state_dict_to_variables`` takes it)
    or else from the Flax leaves: ``kernel`` 2-D is a Linear, 3-5-D a convolution; ``embedding`` an
    Embedding; ``scale`` with ``batch_stats`` a BatchNorm, without a LayerNorm (RMSNorm: no bias).
    """
    kinds = dict(kinds or {})
    extra = set(variables) - {"params", "batch_stats"}
    if extra:
        raise ConversionError(f"unknown variables collection {min(extra)!r} (expected params, batch_stats)")
    if "params" not in variables:
        raise ConversionError("missing variables collection 'params'")
    stats = {path: leaves for path, leaves in _walk(variables.get("batch_stats", {}))}
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for path, leaves in _walk(variables["params"]):
        name = "/".join(path)
        module = torch_path(path)
        kind = kinds.get(module, "")
        leaves = {k: _numpy(v) for k, v in leaves.items()}
        if "kernel" in leaves:
            k = leaves["kernel"]
            _expect_flax(name, leaves, ("kernel",), ("bias",))
            if k.ndim == 2:
                out[f"{module}.weight"] = np.ascontiguousarray(k if kind == "gpt2_conv1d" else k.T)
            elif k.ndim in (3, 4, 5) and kind != "conv_transpose":
                n = k.ndim - 2
                out[f"{module}.weight"] = np.ascontiguousarray(k.transpose(n + 1, n, *range(n)))  # [*k, I, O] -> [O, I, *k]
            elif k.ndim in (3, 4, 5):
                n = k.ndim - 2
                flipped = np.flip(k, axis=tuple(range(n)))  # undo conv_kernel_to_flax's flip, then [*k, I, O] -> [I, O, *k]
                out[f"{module}.weight"] = np.ascontiguousarray(flipped.transpose(n, n + 1, *range(n)))
            else:
                raise ConversionError(f"params entry {name}/kernel has shape {k.shape}, expected [in, out] or [*k, I, O]")
            n_out = k.shape[-1]
        elif "embedding" in leaves:
            _expect_flax(name, leaves, ("embedding",))
            out[f"{module}.weight"] = leaves["embedding"]
            n_out = None
        elif "scale" in leaves:
            _expect_flax(name, leaves, ("scale",) + (() if kind == "rmsnorm" else ("bias",)))
            out[f"{module}.weight"] = leaves["scale"]
            n_out = leaves["scale"].shape[0]
        else:
            raise ConversionError(f"params entry {name}/{min(leaves)}: no kernel, embedding or scale")
        if "bias" in leaves:
            if leaves["bias"].shape != (n_out,):
                raise ConversionError(f"params entry {name}/bias has shape {leaves['bias'].shape}, expected ({n_out},)")
            out[f"{module}.bias"] = leaves["bias"]
        if path in stats:
            s = stats.pop(path)
            _expect_flax(name, s, ("mean", "var"), ("num_batches_tracked",), "batch_stats")
            out[f"{module}.running_mean"] = _numpy(s["mean"])
            out[f"{module}.running_var"] = _numpy(s["var"])
            if "num_batches_tracked" in s:
                out[f"{module}.num_batches_tracked"] = _numpy(s["num_batches_tracked"])
    if stats:
        raise ConversionError(f"batch_stats entry {'/'.join(next(iter(stats)))} has no params (scale, bias)")
    return out


def _expect_flax(name: str, leaves: Mapping, required: tuple[str, ...], optional: tuple[str, ...] = (),
                 collection: str = "params") -> None:
    for r in required:
        if r not in leaves:
            raise ConversionError(f"missing {collection} entry {name}/{r}")
    extra = set(leaves) - set(required) - set(optional)
    if extra:
        raise ConversionError(f"unknown {collection} entry {name}/{min(extra)}")


# --- The quickstart MLP: torch ``linear_relu_stack.<i>`` <-> Flax ``linear_relu_stack_<i>`` ----------------

MLP_IN_FEATURES = 28 * 28
MLP_NUM_CLASSES = 10
_TORCH_KEY = re.compile(r"linear_relu_stack\.(\d+)\.(weight|bias)")
_FLAX_KEY = re.compile(r"linear_relu_stack_(\d+)")


def _check_chain(layers: dict[int, tuple[tuple, tuple]], key) -> None:
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
    fan_in = MLP_IN_FEATURES
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
        if n == len(indices) - 1 and out_features != MLP_NUM_CLASSES:
            raise WeightsError(f"{key(i, 'weight')} has {out_features} outputs, the last layer needs {MLP_NUM_CLASSES}")
        fan_in = out_features


def hidden_of(tree) -> tuple[int, ...]:
    """The hidden widths of a torch state_dict or a Flax params tree of the MLP (validated on the way)."""
    params = torch_to_flax(tree) if any("." in str(k) for k in tree) else tree
    flax_to_torch_numpy(params)  # validates the chain
    layers = sorted(params.items(), key=lambda kv: int(_FLAX_KEY.fullmatch(kv[0]).group(1)))
    return tuple(int(np.shape(layer["kernel"])[1]) for _, layer in layers[:-1])


def torch_to_flax(state_dict: Mapping[str, object]) -> dict:
    """The MLP's Flax params (numpy) holding exactly the state_dict's values, kernels transposed."""
    found: dict[int, dict[str, tuple]] = {}
    for k, v in state_dict.items():
        m = _TORCH_KEY.fullmatch(k)
        if not m:
            raise WeightsError(f"unknown state_dict key {k!r} (expected linear_relu_stack.<i>.weight|bias)")
        found.setdefault(int(m.group(1)), {})[m.group(2)] = tuple(np.shape(v))
    def torch_key(i, part):
        return f"linear_relu_stack.{i}.{part}"

    for i, parts in found.items():
        for part in ("weight", "bias"):
            if part not in parts:
                raise WeightsError(f"missing state_dict key {torch_key(i, part)!r}")
    _check_chain({i: (p["weight"], p["bias"]) for i, p in found.items()}, lambda i, part: repr(torch_key(i, part)))
    params = state_dict_to_variables(state_dict, kinds={f"linear_relu_stack.{i}": "linear" for i in found})["params"]
    return {k: params[k] for k in sorted(params, key=lambda k: int(_FLAX_KEY.fullmatch(k).group(1)))}


def flax_to_torch_numpy(params: Mapping[str, Mapping[str, object]]) -> OrderedDict[str, np.ndarray]:
    """The MLP's torch state_dict as numpy arrays, without torch: the layout of files both sides read."""
    found: dict[int, dict[str, tuple]] = {}
    for name, layer in params.items():
        m = _FLAX_KEY.fullmatch(str(name))
        if not m or not isinstance(layer, Mapping):
            raise WeightsError(f"unknown params entry {name!r} (expected linear_relu_stack_<i> with kernel and bias)")
        extra = set(layer) - {"kernel", "bias"}
        if extra:
            raise WeightsError(f"unknown params entry {name}/{min(extra)}")
        for part in ("kernel", "bias"):
            if part not in layer:
                raise WeightsError(f"missing params entry {name}/{part}")
        found[int(m.group(1))] = {"kernel": np.shape(layer["kernel"]), "bias": tuple(np.shape(layer["bias"]))}
    def flax_key(i, part):
        return f"linear_relu_stack_{i}/{'kernel' if part == 'weight' else 'bias'}"

    for i, p in found.items():
        if len(p["kernel"]) != 2:
            raise WeightsError(f"{flax_key(i, 'weight')} has shape {tuple(p['kernel'])}, expected a matrix")
    _check_chain({i: (tuple(p["kernel"])[::-1], p["bias"]) for i, p in found.items()}, flax_key)
    state = variables_to_state_dict({"params": {f"linear_relu_stack_{i}": params[f"linear_relu_stack_{i}"]
                                                for i in sorted(found)}})
    return state
