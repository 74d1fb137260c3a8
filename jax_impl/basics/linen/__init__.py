"""The Flax Linen form of chapters whose JAX twin (one level up) is Flax NNX: the guide's third column."""
