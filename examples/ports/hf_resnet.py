"""HF ResNet: ``ResNetForImageClassification`` against HF's own port ``FlaxResNetForImageClassification``, with basic
or bottleneck layers (``layer_type``), tiny random config, 32x32 images.

HF's conversion misses the basic layers' convolutions and norms: torch names them ``layers.N.layer.M`` and the Flax tree
``layers/N/layer/layer_M`` (a list attribute of ``FlaxResNetBasicLayerCollection``), so ``from_pretrained(from_pt=True)``
keeps their random initial values. ``make_flax`` renames those keys first.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from transformers import FlaxResNetForImageClassification, ResNetConfig, ResNetForImageClassification

from examples.ports._glue import hf_to_flax, vary_constant_tensors

# two stages; stage 0 has two layers (an identity residual), stage 1 strides 2 (a projection shortcut)
CONFIGS = {
    "basic": dict(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1]),
    "bottleneck": dict(embedding_size=16, hidden_sizes=[16, 16], depths=[2, 1]),
}
NUM_LABELS, BATCH, SIZE = 10, 4, 32
TRAIN_KWARG = ("deterministic", False)
# the rest of the user's glue for parity.check_port (python -m parity.check --glue examples.ports.hf_resnet)
CHECK = dict(output="logits", ignore={"*.activation": "ReLU is a function in Flax",
                                      "*pooler": "pooling is a function in Flax",
                                      "*.shortcut": "an identity shortcut is no module in Flax",
                                      "classifier.0": "Flatten is a reshape"})
BASIC_LAYER = re.compile(r"(\.layers\.\d+\.layer)\.(\d+)\.")


def make_torch(seed: int = 0, layer_type: str = "basic") -> ResNetForImageClassification:
    config = ResNetConfig(num_channels=3, layer_type=layer_type, num_labels=NUM_LABELS, **CONFIGS[layer_type])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ResNetForImageClassification(config)
    vary_constant_tensors(model, seed)  # BatchNorms start at scale 1, bias 0, mean 0, var 1
    return model.float().eval()


def make_flax(torch_model: ResNetForImageClassification):
    config = torch_model.config
    flax_model = FlaxResNetForImageClassification(config, input_shape=(1, SIZE, SIZE, config.num_channels), _do_init=False)
    rename = (lambda key: BASIC_LAYER.sub(r"\1.layer_\2.", key)) if config.layer_type == "basic" else None
    return flax_model.module, hf_to_flax(torch_model, flax_model, rename)  # {"params", "batch_stats"}


def sample_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    return (images,), rng.integers(0, NUM_LABELS, BATCH)


def flax_inputs(inputs):
    # FlaxResNet's wrapper transposes NCHW to NHWC before calling its module; the module takes NHWC
    return tuple(np.ascontiguousarray(x.transpose(0, 2, 3, 1)) for x in inputs)


def torch_output(out):
    return out.logits


def flax_output(out):
    return out.logits
