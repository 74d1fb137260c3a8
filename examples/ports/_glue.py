"""Helpers the pairs share: seeded weights for the constant tensors, and HF's own torch -> Flax conversion made strict."""
from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
import torch
from flax.traverse_util import flatten_dict, unflatten_dict
from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax


def vary_constant_tensors(model: torch.nn.Module, seed: int) -> None:
    """Give every constant float tensor of the state_dict (norm scales 1, biases 0, BatchNorm's running mean 0 and
    variance 1 at init) seeded values, in place: a trained model's are not constant, and with constants a conversion
    that drops or swaps them (scale <-> bias, mean <-> var) would go unseen in the logits."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point() or t.numel() < 2 or not bool((t == t.flatten()[0]).all()):
                continue
            if key.endswith("running_var"):
                noise = rng.uniform(0.5, 1.5, t.shape)
            else:
                noise = t.flatten()[0].item() + 0.1 * rng.standard_normal(t.shape)
            t.copy_(torch.from_numpy(noise))


def hf_to_flax(torch_model: torch.nn.Module, flax_model, rename: Callable[[str], str] | None = None) -> dict:
    """``torch_model``'s weights in ``flax_model``'s tree, converted by HF's ``convert_pytorch_state_dict_to_flax``;
    ``flax_model`` is a ``FlaxPreTrainedModel``, best built with ``_do_init=False``: only its tree's names and shapes
    (``params_shape_tree``) are used, and a random init costs seconds of XLA compilation (up to 24 s for the tiny ResNet on
    this 2-core machine). ``rename`` maps a torch key first where HF's rules miss a name. Strict where
    ``from_pretrained`` is not: keys the Flax model does not have (GPT-2's tied ``lm_head``, which Flax reads from
    ``wte``) are dropped, and a Flax leaf left unfilled or of the wrong shape raises ``ValueError`` instead of keeping
    a random initial value."""
    rename = rename or (lambda key: key)
    state_dict = {rename(k): v.detach().clone() for k, v in torch_model.state_dict().items()}
    # the converter reads only .params (names, shapes) and .base_model_prefix
    shapes = types.SimpleNamespace(params=flax_model.params_shape_tree, base_model_prefix=flax_model.base_model_prefix)
    converted = flatten_dict(convert_pytorch_state_dict_to_flax(state_dict, shapes))
    target = flatten_dict(flax_model.params_shape_tree)
    missing = sorted("/".join(k) for k in target if k not in converted)
    wrong = sorted("/".join(k) for k in target if k in converted and converted[k].shape != target[k].shape)
    if missing or wrong:
        raise ValueError(f"the conversion leaves {len(missing)} Flax leaves unfilled ({', '.join(missing[:4])}) and "
                         f"{len(wrong)} of the wrong shape ({', '.join(wrong[:4])})")
    return unflatten_dict({k: converted[k] for k in target})
