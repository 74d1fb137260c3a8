"""The flags both quickstarts share, and the one way a CLI reports a bad input: one line, exit 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class DeviceError(Exception):
    """The requested device is not available (both quickstarts, parity and the benchmarks)."""


def hidden_widths(text: str) -> tuple[int, ...]:
    """``"512,512"`` -> ``(512, 512)``."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: expected comma-separated integers like 512,512") from None
    if not widths or min(widths) <= 0:
        raise argparse.ArgumentTypeError(f"--hidden {text!r}: widths must be positive integers")
    return widths


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive integer")
    return value


def base_parser(prog: str, description: str, save_default: str) -> argparse.ArgumentParser:
    """The quickstart's flags, with their defaults shown in ``--help``."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=64, help="minibatch size")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum, torch's semantics (0: the tutorial)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay added to the gradient, as torch's SGD")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto prefers an accelerator)")
    p.add_argument("--data-dir", default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--save", default=save_default, help="checkpoint path ('' to skip saving)")
    p.add_argument("--hidden", type=hidden_widths, default=(512, 512), help="hidden widths, comma-separated")
    return p


def run_guarded(fn: Callable[[], object], errors: Sequence[type[BaseException]], prog: str) -> int:
    """Run ``fn``; an expected error becomes ``prog: error: <one line>`` on stderr and exit code 2."""
    try:
        fn()
    except tuple(errors) as e:  # type: ignore[misc]
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
