"""python -m parity: torch and JAX trained side by side (argument parsing only; see side_by_side.run)."""
import os
import sys

# torch and JAX share the GPU in one process: JAX must not preallocate 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from common.cli import base_parser, run_guarded
from common.data import DataError

from .side_by_side import SideBySideConfig, run


def main(argv=None) -> int:
    p = base_parser("python -m parity", "Train the torch and JAX quickstarts side by side from the same weights "
                    "on the same batches; exit 1 if they disagree beyond tolerance.", "")
    p.set_defaults(device="cpu")
    p.add_argument("--precision", choices=("default", "strict"), default="default",
                   help="GPU matmul precision: strict = true float32 on both sides; default = each library's default")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--out-dir", default="runs", help="folder for the JSON report and the PNG plot")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="cnn: the convnet pair, same dropout masks, float64 runs for the tolerances (CPU)")
    args = p.parse_args(argv)
    del args.save
    model = args.__dict__.pop("model")
    cfg = SideBySideConfig(**vars(args))
    result = {}

    def go():
        if model == "cnn":
            from .cnn_side_by_side import run as run_cnn  # only this mode needs it

            result["report"] = run_cnn(cfg)
        else:
            result["report"] = run(cfg)

    from reference_torch.train import DeviceError

    code = run_guarded(go, (DataError, DeviceError), p.prog)
    if code:
        return code
    return 0 if result["report"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
