"""The tutorial's chapters in PyTorch, one module per chapter, mirrored in ``jax_impl.basics``."""
