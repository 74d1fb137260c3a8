"""Every chapter of the tutorial, torch half next to JAX half: same inputs, same numbers."""
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jax_impl import nnx_model
from jax_impl.basics import autograd as ja
from jax_impl.basics import datasets as jd
from jax_impl.basics import layers as jl
from jax_impl.basics import save_load as js
from jax_impl.basics import tensors as jt
from jax_impl.basics import transforms as jtr
from jax_impl.basics.linen import layers as jll
from jax_impl.data import load_fashion_mnist
from jax_impl.model import init_params
from parity import harness as H
from parity.tolerances import LAYERS
from quickstart_parity_common.data import CLASSES
from quickstart_parity_common.image_folder import write_image_folder
from quickstart_parity_guide.guide import nnx_layers, shard_map_against_jit
from reference_torch.basics import autograd as ta
from reference_torch.basics import datasets as td
from reference_torch.basics import layers as tl
from reference_torch.basics import save_load as ts
from reference_torch.basics import tensors as tt
from reference_torch.basics import transforms as ttr
from reference_torch.data import get_datasets
from reference_torch.model import NeuralNetwork


def np_(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# --- tensors --------------------------------------------------------------------------------------

def test_tensor_creation():
    for fn in ("from_data", "from_numpy"):
        t, j = getattr(tt, fn)(), getattr(jt, fn)()
        np.testing.assert_array_equal(np_(t), np_(j))
        assert t.dtype == torch.int64 and str(j.dtype) == "int32"  # JAX narrows without x64
    t, j = tt.like(tt.from_data()), jt.like(jt.from_data())
    np.testing.assert_array_equal(np_(t["ones"]), np_(j["ones"]))
    for r in (np_(t["rand"]), np_(j["rand"])):
        assert r.shape == (2, 2) and r.dtype == np.float32 and (0 <= r).all() and (r < 1).all()
    t, j = tt.from_shape((2, 3)), jt.from_shape((2, 3))
    for key in ("ones", "zeros"):
        np.testing.assert_array_equal(np_(t[key]), np_(j[key]))
    assert np_(t["rand"]).shape == np_(j["rand"]).shape == (2, 3)


def test_tensor_attributes_and_ops():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)

    assert tt.attributes(torch.from_numpy(x)) == jt.attributes(jnp.asarray(x)) == {"shape": (4, 4), "dtype": "float32",
                                                                                   "device": "cpu"}
    t_in, j_in = torch.tensor(x), jnp.asarray(x)
    t, j = tt.indexing(t_in), jt.indexing(j_in)
    for key in ("first_row", "first_column", "last_column", "after_set"):
        np.testing.assert_array_equal(np_(t[key]), np_(j[key]), err_msg=key)
    assert (np_(t_in)[:, 1] == 0).all()  # torch changed its input
    np.testing.assert_array_equal(np_(j_in), x)  # JAX did not
    np.testing.assert_array_equal(np_(tt.concatenate(torch.tensor(x))), np_(jt.concatenate(jnp.asarray(x))))
    for fn in ("matmul_three_ways", "multiply_three_ways"):
        ts_, js_ = getattr(tt, fn)(torch.tensor(x)), getattr(jt, fn)(jnp.asarray(x))
        for a in ts_ + js_:
            np.testing.assert_array_equal(np_(a), np_(ts_[0]), err_msg=fn)  # small integers: exact
    assert tt.single_element(torch.tensor(x)) == jt.single_element(jnp.asarray(x)) == 120.0


def test_in_place_versus_at_and_the_numpy_bridge():
    t = tt.in_place_add(torch.ones(2, 2))
    j = jt.in_place_add(jnp.ones((2, 2)))
    np.testing.assert_array_equal(np_(t["result"]), np_(j["result"]))
    assert t["same_object"] and np_(t["input_after"])[0, 0] == 6  # add_ mutated the input
    assert not j["same_object"] and np_(j["input_after"])[0, 0] == 1  # .at[].add made a new array
    t, j = tt.numpy_bridge(), jt.numpy_bridge()
    np.testing.assert_array_equal(t["numpy_after_tensor_add"], np.full(5, 2.0))  # shared memory
    np.testing.assert_array_equal(t["tensor_after_numpy_add"], np.full(5, 2.0))
    np.testing.assert_array_equal(j["numpy_after_tensor_add"], np.full(5, 1.0))  # copies
    np.testing.assert_array_equal(j["tensor_after_numpy_add"], np.full(5, 1.0))


# --- datasets and transforms -----------------------------------------------------------------------

def test_dataset_access_by_index(data_dir):
    _, test_data = get_datasets(data_dir, download=False)
    images, labels = load_fashion_mnist(data_dir, train=False)
    for i in (0, 1, 9999):
        t_img, t_name = td.sample(test_data, i)
        j_img, j_name = jd.sample(images, labels, i)
        assert t_name == j_name and np.array_equal(t_img, j_img)
    assert td.sample(test_data, 0)[1] == "Ankle boot"


def test_custom_image_dataset_same_folder(data_dir, tmp_path):
    images, labels = load_fashion_mnist(data_dir, train=False)
    annotations, img_dir = write_image_folder(images[:20], labels[:20], tmp_path)
    t = td.CustomImageDataset(annotations, img_dir, target_transform=ttr.one_hot)
    j = jd.CustomImageDataset(annotations, img_dir, target_transform=jtr.one_hot)
    assert len(t) == len(j) == 20
    for i in range(20):
        (ti, tl_), (ji, jl_) = t[i], j[i]
        assert ti.dtype == torch.uint8 and ti.shape == (1, 28, 28) and ji.dtype == np.uint8
        np.testing.assert_array_equal(ti.numpy(), ji)
        np.testing.assert_array_equal(ti.numpy()[0], images[i])  # PNG round trip is lossless
        np.testing.assert_array_equal(tl_.numpy(), np.asarray(jl_))
        assert int(np.argmax(np.asarray(jl_))) == labels[i]


def test_shuffled_loaders():
    n = 130  # two full batches and a partial one
    for side in (td, jd):
        orders = side.shuffled_orders(n, 64, seed=0, epochs=2)
        for order in orders:
            assert sorted(order.tolist()) == list(range(n))  # a permutation: every sample once
        assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
        assert all(np.array_equal(a, b) for a, b in zip(orders, side.shuffled_orders(n, 64, seed=0, epochs=2), strict=True))
        assert not np.array_equal(orders[0], side.shuffled_orders(n, 64, seed=1, epochs=1)[0])

    batches = list(jd.batch_iterator(np.arange(n), np.arange(n), 64, jax.random.PRNGKey(0)))
    assert [len(b[0]) for b in batches] == [64, 64, 2]


def test_sample_grids(data_dir, tmp_path):
    training_data, _ = get_datasets(data_dir, download=False)
    images, labels = load_fashion_mnist(data_dir, train=True)
    ti = td.sample_grid(training_data, tmp_path / "t.png")
    ji = jd.sample_grid(images, labels, tmp_path / "j.png")
    for idx, png in ((ti, "t.png"), (ji, "j.png")):
        assert len(idx) == 9 and all(0 <= i < 60000 for i in idx)
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ti == td.sample_grid(training_data, tmp_path / "t2.png")  # seeded: the same grid again


def test_transforms(data_dir):
    images, _ = load_fashion_mnist(data_dir, train=False)
    for image in images[:200]:
        t, j = ttr.to_tensor(image), jtr.to_tensor(image)
        assert t.shape == j.shape == (1, 28, 28)
        assert np.array_equal(t.numpy().view(np.uint32), np.asarray(j).view(np.uint32))  # bit for bit
    for label in range(10):
        t, j = ttr.one_hot(label), jtr.one_hot(label)
        np.testing.assert_array_equal(t.numpy(), np.asarray(j))
        assert t.sum() == 1 and t[label] == 1


# --- layers ----------------------------------------------------------------------------------------

def test_layers_walk_through():
    images = tl.minibatch(0)  # torch.rand(3, 28, 28), fed to all three
    layers = tl.make_layers(0)
    params = {name: {"kernel": layer.weight.detach().numpy().T, "bias": layer.bias.detach().numpy()}
              for name, layer in layers.items()}
    t = tl.walk_through(images, layers)
    assert t["flat"].shape == (3, 784) and t["hidden1"].shape == (3, 20) and t["logits"].shape == (3, 10)
    for j in (jl.walk_through(images, nnx_layers(params)), jll.walk_through(images, params)):  # NNX, Linen
        np.testing.assert_array_equal(t["flat"], j["flat"])
        for key in ("hidden1", "relu", "logits", "probabilities"):
            np.testing.assert_allclose(j[key], t[key], rtol=LAYERS.rtol, atol=LAYERS.atol, err_msg=key)
        np.testing.assert_array_equal(t["predicted"], j["predicted"])
    np.testing.assert_allclose(t["probabilities"].sum(1), 1, rtol=1e-6)
    assert (t["relu"] >= 0).all() and (t["hidden1"] < 0).any()
    # NNX's own layers are drawn as torch's nn.Linear draws: uniform within 1/sqrt(fan_in)
    own = jl.make_layers(0)
    assert own["layer1"].kernel.shape == (784, 20) and np.abs(own["layer1"].kernel[...]).max() <= 1 / 28
    assert np.abs(own["layer1"].kernel[...]).max() > 0.9 / 28


def test_named_parameters_map_one_to_one():
    t = tl.named_parameters(NeuralNetwork())
    for j in (dict(jl.named_parameters(nnx_model.NeuralNetwork(rngs=nnx.Rngs(0)))),
              dict(jll.named_parameters(init_params(jax.random.key(0))))):
        assert len(t) == len(j) == 6
        for name, shape in t:
            layer, part = name.rsplit(".", 1)
            flax_name = f"{layer.replace('.', '_')}/{'kernel' if part == 'weight' else 'bias'}"
            assert j[flax_name] == shape[::-1], name  # kernels are transposed


# --- save and load ---------------------------------------------------------------------------------

def test_whole_model_pickle_needs_weights_only_false(tmp_path):
    torch.manual_seed(0)
    model = NeuralNetwork()
    path = tmp_path / "whole.pth"
    ts.save_whole_model(model, path)
    loaded = ts.load_whole_model(path)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        ts.load_untrusted(path)


def test_crafted_pickle_is_refused_by_the_default_load(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    ts.write_crafted_pickle(path, marker)
    with pytest.raises(pickle.UnpicklingError):
        ts.load_untrusted(path)
    assert not marker.exists()  # the payload never ran
    ts.load_whole_model(path)  # weights_only=False runs it: exactly why that flag is for trusted files only
    assert marker.exists()


def _nnx_of(params) -> nnx.Module:
    """A Linen-layout params tree as the chapter's NNX model (``nnx.update`` of its empty model)."""
    model = js.empty_model(H.hidden_of(params))
    nnx.update(model, params)
    return model


def test_safetensors_across_frameworks(first_epoch, real, tmp_path):
    """A model trained by reference_torch predicts the same 10,000 classes in jax_impl, and the reverse."""
    test = real[1]
    t_model = first_epoch["torch_model"]
    ts.save_safetensors(t_model, tmp_path / "from_torch.safetensors")
    params = js.load_safetensors(tmp_path / "from_torch.safetensors")
    t_pred, j_pred = ts.predict_all(t_model, test.x), js.predict_all(_nnx_of(params), test.x)
    assert len(t_pred) == 10_000
    np.testing.assert_array_equal(t_pred, j_pred)

    j_params = first_epoch["jax_state"].params
    js.save_safetensors(_nnx_of(j_params), tmp_path / "from_jax.safetensors")
    model = ts.load_safetensors(tmp_path / "from_jax.safetensors")
    np.testing.assert_array_equal(ts.predict_all(model, test.x), js.predict_all(_nnx_of(j_params), test.x))
    # Lossless both ways, bit for bit.
    for k, v in H.params_as_torch_numpy(j_params).items():
        assert np.array_equal(model.state_dict()[k].numpy(), v), k


def test_msgpack_and_state_dict_round_trips(tmp_path):
    """The tutorial's one-line save and its load, into a fresh model and into an empty one (meta device,
    ``nnx.eval_shape``), bit for bit."""
    net = nnx_model.NeuralNetwork(rngs=nnx.Rngs(0))
    js.save_weights(net, tmp_path / "p.msgpack")
    for into in (None, js.empty_model(), nnx_model.NeuralNetwork(rngs=nnx.Rngs(1))):
        back = js.load_weights(tmp_path / "p.msgpack", into)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(nnx_model.params_of(net)),
                                                        jax.tree.leaves(nnx_model.params_of(back)), strict=True))
    assert not isinstance(js.empty_model().linear_relu_stack_0.kernel.get_value(), jax.Array)  # shapes only
    model = NeuralNetwork()
    ts.save_weights(model, tmp_path / "m.pth")
    for into in (None, ts.empty_model()):
        back = ts.load_weights(tmp_path / "m.pth", into)
        assert not back.training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values(), strict=True))
    assert ts.empty_model().linear_relu_stack[0].weight.is_meta
    assert CLASSES[9] == "Ankle boot"


def test_jax_copy_from_numpy_is_independent_once_ready():
    """What JAX documents: ``jnp.array(n, copy=True)`` copies (``jnp.asarray``'s ``copy=None`` promises
    nothing); the copy is asynchronous, so the test waits for it before mutating ``n``."""
    n = np.ones(1 << 16, np.float32)
    j = jnp.array(n, copy=True).block_until_ready()
    assert j.unsafe_buffer_pointer() != n.ctypes.data
    n[:] = 7
    np.testing.assert_array_equal(np.asarray(j), 1.0)
    assert "only copy when necessary" in " ".join(jnp.asarray.__doc__.split())  # the contract the guide quotes


def test_jax_whole_model_and_untrusted_file(tmp_path):
    net = nnx_model.NeuralNetwork((32,), rngs=nnx.Rngs(0))
    js.save_whole_model(net, tmp_path / "whole.msgpack")
    model = js.load_whole_model(tmp_path / "whole.msgpack")
    assert model.hidden == (32,)
    x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(net(x)))
    path, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    js.write_crafted_pickle(path, marker)
    with pytest.raises(Exception) as info:
        js.load_untrusted(path)
    assert not isinstance(info.value, AssertionError)
    assert not marker.exists()  # msgpack never runs code
    ts.write_crafted_pickle(path, marker)  # torch's crafted file too
    with pytest.raises(Exception) as info:
        js.load_untrusted(path)
    assert not isinstance(info.value, AssertionError)
    assert not marker.exists()


def test_walk_through_needs_no_no_grad():
    """torch's walk_through detaches before .numpy(): no RuntimeError outside torch.no_grad()."""
    assert torch.is_grad_enabled()
    out = tl.walk_through(tl.minibatch(0), tl.make_layers(0))
    assert out["logits"].shape == (3, 10)


# --- data parallelism --------------------------------------------------------------------------------

def test_shard_map_step_with_check_vma_is_the_jit_step(data_dir):
    """The chapter's shard_map step (pmean of the loss, value_and_grad outside, check_vma on) takes the
    one-device step on 2 CPU devices: the same parameters to rounding, and the update is large enough
    that a gradient off by the device count (a pmean of gradients already summed) would show."""
    vs = shard_map_against_jit(data_dir)
    assert np.isfinite(vs["gap"]) and vs["gap"] <= 1e-7, vs
    assert vs["update"] > 100 * 1e-7, vs  # the step moved the parameters: the comparison is not of two no-ops


def test_devices_and_the_recorded_graph():
    """device_put commits an array where jnp.asarray does not; make_jaxpr of the gradient holds the
    forward and the backward (a transpose of the matmul), where torch's grad_fn names one node."""
    x = np.ones((2, 2), np.float32)
    assert jt.to_device(x)["committed"] == (False, True)
    assert jt.to_device(x)["device"] == tt.to_device(x)["device"] == "cpu"
    inputs = ta.tutorial_inputs(0)
    assert ta.graph(**inputs) == "z: AddBackward0, loss: BinaryCrossEntropyWithLogitsBackward0"
    jaxpr = ja.graph(**inputs)
    assert "dot_general" in jaxpr and "transpose" in jaxpr, jaxpr
