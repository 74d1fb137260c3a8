"""Real PyTorch -> JAX porting pairs, each with the glue a user writes for it (issue 23).

Every module holds one pair built from a tiny random config (no download) and exposes:

- ``make_torch(seed=0)``: the torch model, float32, in eval mode.
- ``make_flax(torch_model)``: ``(flax_module, variables)`` for a Linen port (HF's ``FlaxXxx(config).module`` and
  ``{"params": ...}``, plus ``"batch_stats"`` for ResNets), or ``(nnx_model, None)`` for an NNX port, holding the
  torch model's weights; NNX ports come back in eval mode.
- ``sample_inputs(seed=0)``: ``(inputs, targets)`` in numpy; ``inputs`` as the torch model takes them (a dict is
  passed as keywords, a tuple positionally), ``targets`` integer labels.
- ``flax_inputs(inputs)``: the same inputs as the Flax side's ``__call__`` takes them.
- ``torch_output(out)`` / ``flax_output(out)``: the logits array of each side's output.
- ``TRAIN_KWARG``: ``(name, value)`` of the Flax call's train-mode argument, or ``None`` where the mode is set on the
  model (NNX: ``model.train()`` / ``model.eval()``).
"""
