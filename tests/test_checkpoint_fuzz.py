"""Property-based fuzzing of every checkpoint format either side reads: each hostile file ends in
the project's CheckpointError naming the file, or (a byte nothing depends on) loads the original
values exactly; never another exception, never other values."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict

import jax
import numpy as np
import pytest
import torch
from flax import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jax_impl import checkpoint as jck
from jax_impl import train as jtrain
from jax_impl.basics import save_load as js
from jax_impl.model import init_params
from quickstart_parity_common.checkpoint import (
    PARAMS_FORMAT,
    CheckpointError,
    digest,
    flatten,
    safetensors_bytes,
)
from reference_torch import checkpoint as tck
from reference_torch import train as ttrain
from reference_torch.basics import save_load as ts
from reference_torch.model import NeuralNetwork

HIDDEN = (8,)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _torch_model(seed=0):
    torch.manual_seed(seed)
    return NeuralNetwork(HIDDEN)


def _values_torch(model):
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def _values_jax(params):
    return [np.asarray(v) for v in jax.tree_util.tree_leaves(params)]


def _torch_resume_parts(seed=0):
    model = _torch_model(seed)
    opt = ttrain.make_optimizer(model, 1e-2, 0.9)
    model(torch.rand(4, 784)).sum().backward()
    opt.step()
    return model, opt


def _jax_state(seed=0):
    cfg = jtrain.Config(hidden=HIDDEN, momentum=0.9, lr=1e-2)
    return jtrain.create_train_state(init_params(jax.random.PRNGKey(seed), HIDDEN), cfg.lr, HIDDEN, momentum=0.9), cfg


# name -> (write a valid file at path and return its values, load path and return values)
def _torch_weights():
    def write(path):
        model = _torch_model()
        tck.save(model, path)
        return _values_torch(model)
    return write, lambda path: _values_torch(tck.load(path, NeuralNetwork(HIDDEN)))


def _torch_resume():
    cfg = ttrain.Config(hidden=HIDDEN, momentum=0.9, lr=1e-2)

    def write(path):
        model, opt = _torch_resume_parts()
        tck.save_resume(path, model, opt, 1, 1, asdict(cfg))
        return _values_torch(model)

    def load(path):
        model = _torch_model(1)
        tck.load_resume(path, model, ttrain.make_optimizer(model, 1e-2, 0.9), asdict(cfg))
        return _values_torch(model)
    return write, load


def _jax_weights():
    def write(path):
        params = init_params(jax.random.PRNGKey(0), HIDDEN)
        jck.save(params, path)
        return _values_jax(params)
    return write, lambda path: _values_jax(jck.load(path, init_params(jax.random.PRNGKey(1), HIDDEN)))


def _jax_resume():
    def write(path):
        state, cfg = _jax_state()
        jck.save_resume(path, state, jax.random.PRNGKey(0), 1, asdict(cfg))
        return _values_jax(state.params)

    def load(path):
        state, cfg = _jax_state(1)
        return _values_jax(jck.load_resume(path, state, jax.random.PRNGKey(0), asdict(cfg))[0].params)
    return write, load


def _safetensors(loader):
    def write(path):
        model = _torch_model()
        ts.save_safetensors(model, path)
        return _values_torch(model)
    return write, loader


FORMATS = {
    "torch .pth weights": _torch_weights(),
    "torch .pth resume": _torch_resume(),
    "jax .msgpack weights": _jax_weights(),
    "jax .msgpack resume": _jax_resume(),
    "safetensors, torch loader": _safetensors(lambda p: _values_torch(ts.load_safetensors(p))),
    "safetensors, jax loader": _safetensors(lambda p: [v for k, v in sorted(
        (f"{layer}.{n}", np.ascontiguousarray(a.T) if n == "kernel" else a)
        for layer, d in js.load_safetensors(p).items() for n, a in d.items())]),
}


def _assert_refused_or_exact(load, path, original):
    try:
        values = load(path)
    except CheckpointError as e:
        assert str(path) in str(e), str(e)
        return
    def key(vs):
        return sorted((v.shape, v.tobytes()) for v in vs)

    assert key(values) == key(original), "a corrupt file loaded other values"


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(data=st.data())
def test_corrupt_bytes(fmt, data, tmp_path_factory):
    write, load = FORMATS[fmt]
    path = tmp_path_factory.mktemp("fuzz") / "ckpt"
    original = write(path)
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
    else:
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=4096)))
    path.write_bytes(bytes(raw))
    _assert_refused_or_exact(load, path, original)


# Semantic attacks on a weights file whose checksum is recomputed (as a hostile writer would), so
# the name, dtype, shape and finiteness checks must catch them on their own.
def _write_pth(path, flat):
    sd = OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in flat.items())
    sd._metadata = OrderedDict({tck.METADATA_KEY: {"sha256": digest(flat)}})
    torch.save(sd, path)


def _write_msgpack(path, flat):
    tree: dict = {}
    for k, v in flat.items():
        layer, name = k.split("/") if "/" in k else (k, "x")
        tree.setdefault(layer, {})[name] = v
    path.write_bytes(serialization.msgpack_serialize({"format": PARAMS_FORMAT, "params": tree,
                                                      "sha256": digest(flatten(tree))}))


def _write_safetensors(path, flat):
    path.write_bytes(safetensors_bytes(flat, {}))


SEMANTIC = {
    "torch .pth weights": (lambda: {k: v.numpy() for k, v in _torch_model().state_dict().items()}, _write_pth,
                           lambda p: tck.load(p, NeuralNetwork(HIDDEN))),
    "jax .msgpack weights": (lambda: {k: np.asarray(v)
                                      for k, v in flatten(init_params(jax.random.PRNGKey(0), HIDDEN)).items()},
                             _write_msgpack, lambda p: jck.load(p, init_params(jax.random.PRNGKey(1), HIDDEN))),
    "safetensors, torch loader": (lambda: {k: v.numpy() for k, v in _torch_model().state_dict().items()}, _write_safetensors,
                                  ts.load_safetensors),
    "safetensors, jax loader": (lambda: {k: v.numpy() for k, v in _torch_model().state_dict().items()}, _write_safetensors,
                                js.load_safetensors),
}


@pytest.mark.parametrize("fmt", list(SEMANTIC))
@SETTINGS
@given(data=st.data())
def test_hostile_values_with_valid_checksum(fmt, data, tmp_path_factory):
    make, write, load = SEMANTIC[fmt]
    flat = make()
    names = sorted(flat)
    name = data.draw(st.sampled_from(names))
    attack = data.draw(st.sampled_from(["nan", "inf", "dtype", "extra", "missing", "shape"]))
    if attack in ("nan", "inf"):
        a = flat[name].copy()
        a.flat[data.draw(st.integers(0, a.size - 1))] = np.nan if attack == "nan" else -np.inf
        flat[name] = a
    elif attack == "dtype":
        dtype = data.draw(st.sampled_from([np.float64, np.float16, np.int32, np.int64, np.uint8]))
        flat[name] = flat[name].astype(dtype)
    elif attack == "extra":
        flat[name.rsplit("bias", 1)[0] + "extra" if "bias" in name else name + "_extra"] = np.zeros(3, np.float32)
    elif attack == "missing":
        del flat[name]
    else:
        a = flat[name]
        flat[name] = np.zeros(a.shape[:-1] + (a.shape[-1] + data.draw(st.integers(1, 3)),), np.float32)
    path = tmp_path_factory.mktemp("hostile") / "ckpt"
    write(path, flat)
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert str(path) in str(e.value)


def test_flipped_payload_byte_is_caught_by_the_checksum(tmp_path):
    """The issue's case: one weight changed, nothing else. Only the checksum can see it."""
    path = tmp_path / "m.pth"
    tck.save(_torch_model(), path)
    sd = torch.load(path, weights_only=True)
    sd["linear_relu_stack.0.weight"][0, 0] += 213.8
    torch.save(sd, path)  # _metadata (with the old checksum) travels along
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        tck.load(path, NeuralNetwork(HIDDEN))
    params = init_params(jax.random.PRNGKey(0), HIDDEN)
    jck.save(params, tmp_path / "p.msgpack")
    payload = serialization.msgpack_restore((tmp_path / "p.msgpack").read_bytes())
    payload["params"]["linear_relu_stack_0"]["kernel"] = payload["params"]["linear_relu_stack_0"]["kernel"] + 1
    (tmp_path / "p.msgpack").write_bytes(serialization.msgpack_serialize(payload))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        jck.load(tmp_path / "p.msgpack", params)
