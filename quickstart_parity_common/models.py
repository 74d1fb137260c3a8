"""The model pairs as data both sides agree on: names, shapes, dropout sites, conversion, matrix products.

``MODELS`` maps a ``--model`` name to its ``ModelFormat``: what is true of the model whichever framework runs
it, numpy only, so the command lines can check their flags before either framework is imported. Each side
holds its constructors under the same names (``reference_torch.registry``, ``jax_impl.registry``), and
``quickstart_parity_pairs`` joins the three for parity and the benchmarks (docs/design.md, "Layers").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .convert import state_dict_to_variables, torch_to_flax

IN_FEATURES = 28 * 28
NUM_CLASSES = 10

# The CNN's shapes, read by both sides' cnn.py and by its matrix-product count below.
CNN_CHANNELS = (16, 32)
CNN_HIDDEN = 128
CNN_FLAT = CNN_CHANNELS[1] * 7 * 7  # 28 -> conv1 28 -> conv2 (stride 2) 14 -> pool 7
CNN_DROPOUT = 0.25

Gemm = tuple[int, int, int]


@dataclass(frozen=True)
class DropoutSite:
    """One Dropout of a model: its layer name (torch's module path, the Flax module's name), the mask's
    features per sample (the mask is ``(batch, features)``) and its default probability."""

    name: str
    features: int
    p: float


@dataclass(frozen=True)
class ModelFormat:
    """One model, framework-neutral.

    ``to_flax(state_dict)`` is what the JAX side's train state is built from (``jax_impl.registry``);
    ``step_gemms(batch, hidden)`` the (m, k, n) of every matrix product of one training step, from which
    the FLOP count follows; ``hidden`` the default widths and ``widths`` whether ``--hidden`` changes the
    model; ``resumable`` whether the quickstarts' checkpoint flags (``--checkpoint-dir``, ``--resume``,
    ``--load``, ``--limit-train``) are built for it.
    """

    name: str
    help: str
    to_flax: Callable[[dict], dict]
    step_gemms: Callable[[int, tuple[int, ...]], list[Gemm]]
    hidden: tuple[int, ...]
    widths: bool
    resumable: bool
    dropout: tuple[DropoutSite, ...] = ()

    def step_flops(self, batch: int, hidden: tuple[int, ...] | None = None) -> float:
        """FLOPs of one training step's matrix products (2 per multiply-add)."""
        return 2.0 * sum(m * k * n for m, k, n in self.step_gemms(batch, tuple(self.hidden if hidden is None else hidden)))


def _step(layers: list[Gemm]) -> list[Gemm]:
    """Forward, weight gradients, and input gradients of every layer but the first (no gradient w.r.t. the images)."""
    return list(layers) + [(n, m, k) for m, k, n in layers] + [(m, n, k) for m, k, n in layers[1:]]


def mlp_step_gemms(batch: int, hidden: tuple[int, ...] = (512, 512)) -> list[Gemm]:
    """(m, k, n) of every matrix product in one training step of the MLP."""
    dims = [IN_FEATURES, *hidden, NUM_CLASSES]
    return _step([(batch, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)])


def cnn_step_gemms(batch: int, hidden: tuple[int, ...] = ()) -> list[Gemm]:
    """(m, k, n) of the CNN's step with each convolution as its im2col matrix product
    (m = batch x output pixels, k = in-channels x 3 x 3, n = out-channels), then the two Linears.
    BatchNorm, ReLU and pooling are not matrix products and are not counted."""
    c1, c2 = CNN_CHANNELS
    return _step([(batch * 28 * 28, 1 * 9, c1), (batch * 14 * 14, c1 * 9, c2),  # conv1 (stride 1), conv2 (stride 2)
                  (batch, CNN_FLAT, CNN_HIDDEN), (batch, CNN_HIDDEN, NUM_CLASSES)])


MODELS: dict[str, ModelFormat] = {
    "mlp": ModelFormat("mlp", "the tutorial's network", torch_to_flax, mlp_step_gemms, (512, 512), widths=True,
                       resumable=True),
    "cnn": ModelFormat("cnn", "the convnet of cnn.py (--hidden is ignored)", state_dict_to_variables, cnn_step_gemms,
                       (CNN_HIDDEN,), widths=False, resumable=False,
                       dropout=(DropoutSite("dropout", CNN_FLAT, CNN_DROPOUT),)),
}
MODEL_NAMES = tuple(MODELS)


def model_help() -> str:
    """``--model``'s help: every model with its one line."""
    return "; ".join(f"{m.name}: {m.help}" for m in MODELS.values())
