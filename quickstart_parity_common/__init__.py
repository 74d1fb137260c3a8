"""Framework-free pieces both quickstarts share: IDX data files, class names, printed lines.

Imports numpy only, so ``jax_impl`` stays torch-free and ``reference_torch`` stays jax-free.
"""
