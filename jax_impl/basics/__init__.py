"""The tutorial's chapters in JAX, mirroring ``reference_torch.basics``."""
