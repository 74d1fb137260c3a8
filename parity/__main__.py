"""python -m parity: torch and JAX trained side by side (argument parsing only; see side_by_side.run).

Exit codes: 0 both sides agree within tolerance, 1 they do not (the verdict names each failure),
2 a bad input (one ``error:`` line on stderr).
"""
import os
import sys

# torch and JAX share the GPU in one process: JAX must not preallocate 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
from pathlib import Path

from quickstart_parity_common.cli import (
    DeviceError,
    XLAFlagsError,
    base_parser,
    check_xla_flags,
    non_negative_int,
    out_dir,
    run_guarded,
)
from quickstart_parity_common.data import DataError
from quickstart_parity_common.models import MODEL_NAMES, model_help

from .cnn_side_by_side import run as run_derived
from .precision import MODES
from .side_by_side import DEVICES, SideBySideConfig, run
from .tolerances import CALIBRATED_MODELS


def parser() -> argparse.ArgumentParser:
    """The quickstart's shared flags (quickstart_parity_common.cli.base_parser) and parity's own; every default in --help."""
    p = base_parser("python -m parity", "Train the torch and JAX quickstarts side by side from the same weights "
                    "on the same batches; exit 1 if they disagree beyond tolerance. --save PATH writes torch's "
                    "trained state_dict to PATH and JAX's params next to it as .msgpack.", "", devices=DEVICES)
    p.set_defaults(device="cpu")
    p.add_argument("--precision", choices=MODES, default="default",
                   help="GPU matmul precision: strict = true float32 on both sides; default = each library's default")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--out-dir", type=out_dir, default="runs", help="folder for the JSON report and the PNG plot")
    p.add_argument("--model", choices=MODEL_NAMES, default="mlp",
                   help=f"{model_help()}. {', '.join(CALIBRATED_MODELS)}: calibrated tolerances; every other model: the "
                   "same dropout masks on both sides and float64 runs for the tolerances (CPU)")
    return p


def parse(argv=None) -> SideBySideConfig:
    """The configuration, or ``error:`` and exit 2 for a bad flag (``quickstart_parity_common.cli`` checks shared ones)."""
    p = parser()
    args = p.parse_args(argv)
    if args.save and Path(args.save).suffix == ".msgpack":
        p.error(f"--save {args.save}: name the torch checkpoint (e.g. model.pth); JAX's goes next to it as .msgpack")
    if args.model not in CALIBRATED_MODELS and (args.device != "cpu" or args.save):
        p.error(f"--model {args.model} runs on the CPU with float64 references and saves nothing: drop --device/--save")
    try:  # JAX is imported but not started yet: a bad XLA_FLAGS would abort the process at its start
        check_xla_flags()
    except XLAFlagsError as e:
        p.error(str(e))
    return SideBySideConfig(**vars(args))


def main(argv=None) -> int:
    cfg = parse(argv)
    result = {}
    # One error line for a bad input or a failed allocation (--hidden 100000000), exit 130 for Ctrl-C.
    code = run_guarded(lambda: result.setdefault("report", (run if cfg.model in CALIBRATED_MODELS else run_derived)(cfg)),
                       (DataError, DeviceError), "python -m parity")
    if code:
        return code
    return 0 if result["report"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
