"""The model-pair registry: one name, both sides and the shared formats, for parity and the benchmarks.

A ``Pair`` joins, by name, ``quickstart_parity_common.models.MODELS`` (shapes, dropout sites, conversion,
matrix products: numpy only), ``reference_torch.registry.MODELS`` and ``jax_impl.registry.MODELS`` (each
side's constructors and steps). It sits above both sides and below ``parity`` and ``benchmarks``, which both
import it and not each other (docs/design.md, "Layers"). A new model pair is one entry in each of those three
registries; ``tests/test_pairs.py`` fails when a name is missing from one of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from jax_impl.registry import MODELS as JAX_MODELS
from jax_impl.registry import ModelEntry as JaxEntry
from quickstart_parity_common.models import MODELS as FORMATS
from quickstart_parity_common.models import DropoutSite, ModelFormat
from reference_torch.registry import MODELS as TORCH_MODELS
from reference_torch.registry import ModelEntry as TorchEntry

__all__ = ["PAIRS", "Pair", "pair"]


@dataclass(frozen=True)
class Pair:
    """One model on both sides. The attributes below the three parts are the names the benchmarks read."""

    name: str
    format: ModelFormat
    torch: TorchEntry
    jax: JaxEntry

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.format.hidden

    @property
    def widths(self) -> bool:
        return self.format.widths

    @property
    def dropout(self) -> tuple[DropoutSite, ...]:
        return self.format.dropout

    @property
    def to_flax(self):
        return self.format.to_flax

    @property
    def step_gemms(self):
        return self.format.step_gemms

    @property
    def torch_module(self):
        return self.torch.module

    @property
    def jax_state(self):
        return self.jax.create_state

    @property
    def jax_train_step(self):
        return self.jax.train_step

    @property
    def jax_train_epoch(self):
        return self.jax.scan_epoch


def _join() -> dict[str, Pair]:
    names = (set(FORMATS), set(TORCH_MODELS), set(JAX_MODELS))
    if not names[0] == names[1] == names[2]:  # a half-registered model fails at import, naming what is missing
        every = set().union(*names)
        where = ("quickstart_parity_common.models", "reference_torch.registry", "jax_impl.registry")
        missing = [f"{n} (not in {w})" for n in sorted(every) for w, have in zip(where, names, strict=True) if n not in have]
        raise ImportError("model pairs registered on one side only: " + ", ".join(missing))
    return {n: Pair(n, FORMATS[n], TORCH_MODELS[n], JAX_MODELS[n]) for n in FORMATS}


PAIRS: dict[str, Pair] = _join()


def pair(name: str) -> Pair:
    """The pair registered as ``name`` (a ``--model`` choice); ValueError naming the choices otherwise."""
    if name not in PAIRS:
        raise ValueError(f"--model {name}: unknown model (use one of {', '.join(PAIRS)})")
    return PAIRS[name]
