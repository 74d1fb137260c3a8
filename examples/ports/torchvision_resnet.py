"""torchvision's ``resnet18(num_classes=10)`` (weights=None) against a Flax NNX port written from torchvision's source.

torchvision's ``ResNet`` has no width or depth argument for basic blocks (``BasicBlock`` refuses ``base_width != 64``,
and there are always four stages), so this is the real resnet18, 11.2 M parameters, fed 32x32 images.

The port keeps torchvision's module names (``nnx.Sequential`` where torchvision has ``nn.Sequential``) and its settings:
BatchNorm eps 1e-5 and momentum 0.1, which NNX writes as 0.9 (its momentum weighs the old running value). What it does
not copy: ``nnx.BatchNorm`` updates the running variance with the biased batch variance, torch with the unbiased one.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torchvision.models import resnet18

from examples.ports._glue import vary_constant_tensors

NUM_CLASSES, BATCH, SIZE = 10, 4, 32
TRAIN_KWARG = None  # NNX: model.train() / model.eval()
# the rest of the user's glue for parity.check_port (python -m parity.check --glue examples.ports.torchvision_resnet)
CHECK = dict(ignore={"*relu": "ReLU is a function in the port", "*pool": "pooling is a function in the port"})


def conv(inplanes, planes, kernel, stride, padding, rngs):
    return nnx.Conv(inplanes, planes, (kernel, kernel), strides=stride, padding=[(padding, padding)] * 2,
                    use_bias=False, rngs=rngs)


def batch_norm(planes, rngs):
    return nnx.BatchNorm(planes, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None, *, rngs):
        self.conv1 = conv(inplanes, planes, 3, stride, 1, rngs)
        self.bn1 = batch_norm(planes, rngs)
        self.conv2 = conv(planes, planes, 3, 1, 1, rngs)
        self.bn2 = batch_norm(planes, rngs)
        self.downsample = downsample

    def __call__(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return nnx.relu(out + identity)


class ResNet18(nnx.Module):
    """NHWC in, logits out."""

    def __init__(self, num_classes=1000, *, rngs):
        self.conv1 = conv(3, 64, 7, 2, 3, rngs)
        self.bn1 = batch_norm(64, rngs)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, 1, rngs)
        self.layer2 = self._make_layer(128, 2, rngs)
        self.layer3 = self._make_layer(256, 2, rngs)
        self.layer4 = self._make_layer(512, 2, rngs)
        self.fc = nnx.Linear(512, num_classes, rngs=rngs)

    def _make_layer(self, planes, stride, rngs):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nnx.Sequential(conv(self.inplanes, planes, 1, stride, 0, rngs), batch_norm(planes, rngs))
        first = BasicBlock(self.inplanes, planes, stride, downsample, rngs=rngs)
        self.inplanes = planes
        return nnx.Sequential(first, BasicBlock(planes, planes, rngs=rngs))

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(axis=(1, 2)))  # AdaptiveAvgPool2d(1) + flatten


def load_torch_state_dict(model: ResNet18, state_dict) -> None:
    """Copy a torchvision ResNet state_dict into ``model`` (built or abstract, from ``nnx.eval_shape``); every key must
    land on a leaf of the same shape and every leaf must be filled (``ValueError`` otherwise). ``num_batches_tracked``
    has no NNX counterpart."""
    filled = set()
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        if leaf == "num_batches_tracked":
            continue
        module = model
        for part in path:  # "layer1.0.downsample.1" -> model.layer1.layers[0].downsample.layers[1]
            module = module.layers[int(part)] if part.isdigit() else getattr(module, part, None)
            if module is None:
                raise ValueError(f"{key}: the port has no module {'.'.join(path)}")
        w = value.detach().cpu().numpy()
        if isinstance(module, nnx.BatchNorm):
            name = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}[leaf]
        elif isinstance(module, nnx.Conv):
            name, w = "kernel", w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif isinstance(module, nnx.Linear):
            name, w = {"weight": ("kernel", w.T), "bias": ("bias", w)}[leaf]
        else:
            raise ValueError(f"{key}: {type(module).__name__} is no layer the loader knows")
        variable = getattr(module, name)
        shape = tuple(variable.get_value().shape)
        if shape != w.shape:
            raise ValueError(f"{key}: shape {w.shape} (torch {tuple(value.shape)}) does not fit {shape}")
        variable.set_value(jnp.asarray(w))
        filled.add(id(variable))
    unfilled = [".".join(map(str, p)) for p, v in nnx.iter_graph(model)
                if isinstance(v, nnx.Variable) and id(v) not in filled]
    if unfilled:
        raise ValueError(f"the state_dict leaves {len(unfilled)} leaves of the port unfilled: {', '.join(unfilled[:4])}")


def make_torch(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = resnet18(weights=None, num_classes=NUM_CLASSES)
    vary_constant_tensors(model, seed)  # BatchNorms start at scale 1, bias 0, mean 0, var 1; fc's bias is not constant
    return model.float().eval()


def make_flax(torch_model):
    # abstract: a random init is replaced leaf by leaf and costs ~20 s of XLA compilation on this 2-core machine
    model = nnx.eval_shape(lambda: ResNet18(NUM_CLASSES, rngs=nnx.Rngs(0)))
    load_torch_state_dict(model, torch_model.state_dict())
    model.eval()
    return model, None


def sample_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32),), rng.integers(0, NUM_CLASSES, BATCH)


def flax_inputs(inputs):
    return tuple(np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in inputs)  # NCHW -> NHWC


def torch_output(out):
    return out


def flax_output(out):
    return out
