"""The flags both quickstarts share, their validators, and the one way a CLI reports a bad input:
one ``prog: error: ...`` line on stderr, exit 2, before any work starts.

Every validator here is an argparse ``type=``: it runs while the command line is parsed, so a bad
flag never costs a data load or a training run. parity and the benchmarks reuse them.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

# One seed range valid on both sides: torch.manual_seed takes [-2**63, 2**64), but
# jax.random.PRNGKey keeps only the low 32 bits (PRNGKey(2**32) == PRNGKey(0), PRNGKey(-1) ==
# PRNGKey(2**32 - 1)), so any wider range would give two seeds one JAX key.
SEED_MIN, SEED_MAX = 0, 2**32 - 1

# Devices every side resolves (its train.resolve_device); torch adds mps, JAX the alias gpu.
DEVICES = ("auto", "cpu", "cuda")
TORCH_DEVICES = DEVICES + ("mps",)
JAX_DEVICES = DEVICES + ("gpu",)


# float32's largest and smallest normal magnitudes (numpy's finfo values, written out: quickstart_parity_common/cli.py
# is imported before numpy by --help).
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38


class DeviceError(Exception):
    """The requested device is not available (both quickstarts, parity and the benchmarks)."""


def _bad(text: str, why: str) -> NoReturn:
    raise argparse.ArgumentTypeError(f"{text!r}: {why}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        _bad(text, "not an integer")


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        _bad(text, "not a number")
    if not math.isfinite(value):
        _bad(text, "must be finite")
    if abs(value) > FLOAT32_MAX:  # both sides train in float32: the optimizer would see inf
        _bad(text, f"must be finite in float32, the precision both sides train in (|x| <= {FLOAT32_MAX:.4g})")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--epochs``, ``--batch-size``)."""
    value = _int(text)
    if value < 1:
        _bad(text, "must be a positive integer (1 or more)")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (``--threads``: 0 keeps the library's default)."""
    value = _int(text)
    if value < 0:
        _bad(text, "must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (``--lr``: 0 would train nothing, a negative one climbs the loss)."""
    value = _float(text)
    if value <= 0:
        _bad(text, "must be a finite number > 0")
    if value < FLOAT32_TINY:  # rounds to 0 in float32 (or to a subnormal): trains nothing
        _bad(text, f"must be > 0 in float32, the precision both sides train in (>= {FLOAT32_TINY:.4g})")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (``--momentum``, ``--weight-decay``; torch's SGD refuses negatives)."""
    value = _float(text)
    if value < 0:
        _bad(text, "must be a finite number >= 0")
    return value


def seed(text: str) -> int:
    """An integer in [SEED_MIN, SEED_MAX]: one range that gives distinct seeds on both sides."""
    value = _int(text)
    if not SEED_MIN <= value <= SEED_MAX:
        _bad(text, f"must be in {SEED_MIN}..{SEED_MAX} (JAX's PRNGKey keeps 32 bits)")
    return value


def hidden_widths(text: str) -> tuple[int, ...]:
    """``"512,512"`` -> ``(512, 512)``; every element a positive integer (``512,,512`` is refused)."""
    parts = text.split(",")
    widths = []
    for part in parts:
        if not part.strip():
            _bad(text, "an empty width; expected comma-separated positive integers like 512,512")
        try:
            widths.append(int(part))
        except ValueError:
            _bad(text, f"{part.strip()!r} is not an integer; expected comma-separated positive integers like 512,512")
    if min(widths) <= 0:
        _bad(text, "widths must be positive integers")
    return tuple(widths)


def save_path(text: str) -> str:
    """A file the run can write at the end (``''``: don't save), checked before training starts:
    its folder exists and is writable, and the path is not a directory, symlink or device
    (docs/design.md, Reliability)."""
    if text == "":
        return text
    path = Path(text)
    if path.is_symlink():  # the save's rename would replace the link, not write where it points
        _bad(text, "is a symlink; give the file's own path")
    if path.is_dir():
        _bad(text, "is a directory; give a file name")
    if path.exists() and not path.is_file():
        _bad(text, "exists and is not a regular file")
    folder = path.parent
    if not folder.is_dir():
        _bad(text, f"folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        _bad(text, f"folder {str(folder)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        _bad(text, "exists and is not writable")
    return text


def out_dir(text: str) -> str:
    """A report folder, checked while parsing so a run's report is never lost after its work: it (or,
    if absent, the nearest folder above it, where it will be created) is a folder a real temporary
    file can be written in."""
    if text == "":
        _bad(text, "empty; give a folder")
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        _bad(text, f"{str(existing)!r} exists and is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        _bad(text, f"folder {str(existing)!r} is not writable ({e.strerror})")
    return text


def existing_file(text: str) -> str:
    """A regular file that exists and is readable (e.g. a ``--load PATH`` checkpoint)."""
    path = Path(text)
    if not path.exists():
        _bad(text, "no such file")
    if not path.is_file():
        _bad(text, "is not a regular file")
    if not os.access(path, os.R_OK):
        _bad(text, "is not readable")
    return text


def data_dir(text: str) -> str:
    """The data folder: may be absent (the data step creates it), but not a file."""
    if text == "":
        _bad(text, "empty; give a folder (default: data)")
    if Path(text).exists() and not Path(text).is_dir():
        _bad(text, "exists and is not a folder")
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in ``--help``, except for on/off switches: ``--no-download (default: True)`` would
    read as "no download by default"; their help text says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``prog: error: argument --x: ...`` (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def base_parser(prog: str, description: str, save_default: str,
                devices: Sequence[str] = DEVICES) -> argparse.ArgumentParser:
    """The quickstart's flags, validated while parsing, with their defaults shown in ``--help``.

    ``devices`` are the ``--device`` choices the caller's side resolves (TORCH_DEVICES, JAX_DEVICES).
    """
    p = Parser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=5, help="training epochs (1 or more)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="minibatch size")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="SGD learning rate (finite, > 0)")
    p.add_argument("--momentum", type=non_negative_float, default=0.0,
                   help="SGD momentum, torch's semantics (0: the tutorial)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                   help="L2 weight decay added to the gradient, as torch's SGD")
    p.add_argument("--seed", type=seed, default=0, help=f"seed of the weight initialisation ({SEED_MIN}..{SEED_MAX})")
    p.add_argument("--device", choices=tuple(devices), default="auto",
                   help="where to run (auto prefers an accelerator)")
    p.add_argument("--data-dir", type=data_dir, default="data", help="folder holding FashionMNIST/raw/")
    p.add_argument("--save", type=save_path, default=save_default,
                   help="checkpoint path, checked before training ('' to skip saving)")
    # A string default goes through the type too, so --help prints 512,512 and the run gets (512, 512).
    p.add_argument("--hidden", type=hidden_widths, default="512,512", help="hidden widths, comma-separated")
    return p


# The exit status of a run stopped by SIGINT, as a shell reports it (128 + 2).
INTERRUPTED = 130


@dataclass
class Progress:
    """Where a quickstart run is, kept up to date by its ``run``, for the one line Ctrl-C prints."""

    epochs: int = 0
    epoch: int = 0  # the epoch being trained (from 1); 0: not training yet
    step: int = 0  # optimizer steps done when the last epoch ended
    checkpoint_dir: str = ""
    checkpoint: str = ""  # the last resume checkpoint written or resumed from
    trained: bool = False  # every epoch done: saving or predicting

    def where(self) -> str:
        """``stopped in epoch 2 of 5 ...; <how to go on>``."""
        if self.trained:
            at = f"after training (all {self.epochs} epochs, {self.step} steps), before its end"
        elif self.epoch:
            at = f"in epoch {self.epoch} of {self.epochs} (after step {self.step})"
        else:
            at = "before training started"
        if self.checkpoint:
            return (f"stopped {at}; the last checkpoint is {self.checkpoint}: rerun the same command with --resume "
                    "to continue from it")
        if self.checkpoint_dir:
            return f"stopped {at}; no epoch was checkpointed yet in {self.checkpoint_dir}: rerun the same command"
        return f"stopped {at}; nothing was saved: rerun it (with --checkpoint-dir DIR, a run can be resumed)"


def interrupted(prog: str, progress: Progress | None) -> int:
    """The one line for Ctrl-C (stderr), and its exit status."""
    print(f"{prog}: interrupted (Ctrl-C): {(progress or Progress()).where()}", file=sys.stderr)
    return INTERRUPTED


def run_guarded(fn: Callable[[], object], errors: Sequence[type[BaseException]], prog: str,
                progress: Progress | None = None) -> int:
    """Run ``fn``; an expected error becomes ``prog: error: <one line>`` on stderr and exit code 2;
    an out-of-memory error one ``error: out of memory`` line; Ctrl-C one line saying where
    ``progress`` stopped, exit 130 (atomic writes leave every checkpoint whole)."""
    try:
        fn()
    except KeyboardInterrupt:
        return interrupted(prog, progress)
    except tuple(errors) as e:  # type: ignore[misc]
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 -- re-raised unless it is an out-of-memory error
        if not out_of_memory(e):
            raise
        first = (" ".join(str(e).split()) or type(e).__name__)[:200]
        print(f"{prog}: error: out of memory ({first}); try a smaller --hidden or --batch-size", file=sys.stderr)
        # A failed allocation leaves the runtime broken: JAX's at-exit wait on its effect tokens would
        # raise the failure again as tracebacks. Nothing is left to save (checkpoints are atomic).
        sys.stdout.flush()
        sys.stderr.flush()
        hard_exit(2)
        return 2
    return 0


def hard_exit(code: int) -> None:
    """``os._exit``: end the process without the at-exit handlers (a test replaces it)."""
    os._exit(code)


# How each library reports a failed allocation: Python/numpy MemoryError; torch's CPU allocator and
# CUDA (torch.OutOfMemoryError is a RuntimeError); XLA's RESOURCE_EXHAUSTED (JAX, CPU and GPU).
_OOM_TEXT = ("can't allocate memory", "out of memory", "resource_exhausted", "failed to allocate")


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a failed allocation, from any of the libraries the CLIs run."""
    if isinstance(e, MemoryError):
        return True
    text = f"{type(e).__name__} {e}".lower()
    return any(t in text for t in _OOM_TEXT)


# XLA reads XLA_FLAGS when JAX starts its first backend, and an unknown or malformed flag is a fatal
# log line and an abort there, which no Python code can catch: a child process starts the CPU backend
# first (only when XLA_FLAGS is set; about a second), and its fatal line becomes one error line.
_XLA_PROBE = "import jax; jax.devices()"


class XLAFlagsError(Exception):
    """``XLA_FLAGS`` names a flag XLA does not know, or a value it refuses."""


def check_xla_flags(env: dict[str, str] | None = None) -> None:
    """Raise XLAFlagsError with XLA's own words if ``XLA_FLAGS`` would abort JAX's start."""
    env = dict(os.environ if env is None else env)
    if not env.get("XLA_FLAGS", "").strip():
        return
    env.update(JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run([sys.executable, "-c", _XLA_PROBE], capture_output=True, text=True, env=env, check=False)
    if proc.returncode == 0:
        return
    said = [line for line in proc.stderr.splitlines() if "XLA_FLAGS" in line or "flag" in line.lower()]
    if said:  # a failure that is not XLA_FLAGS' is left to the run, which reports it itself
        text = said[0].split("] ", 1)[-1].strip()
        raise XLAFlagsError(f"XLA_FLAGS={env['XLA_FLAGS']!r}: XLA refuses it: {text}")
