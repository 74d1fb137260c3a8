"""The quickstart as functional JAX: Flax Linen model, optax SGD, one compiled scan per epoch. No torch."""
