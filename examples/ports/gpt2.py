"""HF GPT-2: ``GPT2LMHeadModel`` against HF's own port ``FlaxGPT2LMHeadModel``, tied ``lm_head``, tiny random config.

The dropout probabilities keep GPT-2's 0.1 (``pdrop=``), as a user's config has them: eval mode and HF Flax's
``deterministic=True`` switch them off, and train mode has real dropout on both sides (different random masks).
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import FlaxGPT2LMHeadModel, GPT2Config, GPT2LMHeadModel

from examples.ports._glue import hf_to_flax, vary_constant_tensors

CONFIG = dict(vocab_size=100, n_positions=16, n_embd=64, n_layer=2, n_head=4)
BATCH, SEQ = 3, 8
TRAIN_KWARG = ("deterministic", False)
# the rest of the user's glue for parity.check_port (python -m parity.check --glue examples.ports.gpt2)
CHECK = dict(loss="token_cross_entropy", output="logits", names={"transformer.drop": "transformer/dropout"},
             ignore={"lm_head": "tied to transformer.wte: Flax attends with the embedding",
                     "*.mlp.act": "GELU is a function in HF's Flax GPT-2"})


def make_torch(seed: int = 0, pdrop: float = 0.1, attn_pdrop: float = 0.0) -> GPT2LMHeadModel:
    # attn_pdrop 0 for the port check: HF's Flax GPT-2 drops attention weights inside dot_product_attention_weights,
    # a function, so no mask can be shared with torch's attn_dropout module (embedding and residual dropout can)
    config = GPT2Config(**CONFIG, resid_pdrop=pdrop, embd_pdrop=pdrop, attn_pdrop=attn_pdrop)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    vary_constant_tensors(model, seed)  # LayerNorms and the Conv1D biases start at 1 and 0
    return model.float().eval()


def make_flax(torch_model: GPT2LMHeadModel):
    flax_model = FlaxGPT2LMHeadModel(torch_model.config, _do_init=False)  # the tree's names and shapes, no random init
    return flax_model.module, {"params": hf_to_flax(torch_model, flax_model)}


def sample_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, CONFIG["vocab_size"], (BATCH, SEQ + 1), dtype=np.int64)
    mask = np.ones((BATCH, SEQ), np.int64)
    mask[1, -2:] = 0  # one right-padded row: the mask is used, and no query is left with nothing to attend to
    return {"input_ids": ids[:, :-1], "attention_mask": mask}, ids[:, 1:]


def flax_inputs(inputs):
    # HF Flax takes position_ids as an argument (torch makes them itself); int32, JAX's integer without x64
    ids = inputs["input_ids"]
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    return {"input_ids": ids.astype(np.int32), "attention_mask": inputs["attention_mask"].astype(np.int32),
            "position_ids": positions.astype(np.int32)}


def torch_output(out):
    return out.logits


def flax_output(out):
    return out.logits
