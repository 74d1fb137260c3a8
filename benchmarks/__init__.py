"""Timing the quickstart's training in torch and JAX, on CPU and GPU (``python -m benchmarks.run``)."""
