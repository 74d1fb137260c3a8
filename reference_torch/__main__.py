"""python -m reference_torch: the PyTorch quickstart (argument parsing only; the work is in train.run)."""
import sys

from quickstart_parity_common.checkpoint import add_checkpoint_flags
from quickstart_parity_common.cli import TORCH_DEVICES, Progress, base_parser, interrupted, non_negative_int, run_guarded
from quickstart_parity_common.data import DataError
from quickstart_parity_common.models import MODELS
from quickstart_parity_common.report import NonFiniteLossError


def main(argv=None) -> int:
    p = base_parser("python -m reference_torch", "The PyTorch quickstart on FashionMNIST.", "model.pth", TORCH_DEVICES)
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never try torchvision's download (by default it is tried when the data is missing)")
    add_checkpoint_flags(p)
    args = p.parse_args(argv)
    if not MODELS[args.model].resumable and (args.checkpoint_dir or args.resume or args.load or args.limit_train):
        p.error(f"--model {args.model}: --checkpoint-dir, --resume, --load and --limit-train are not built yet for it "
                f"(only for {', '.join(n for n, m in MODELS.items() if m.resumable)})")
    # torch is imported only once the flags are valid: a bad flag is refused in a second, not after
    # torch's import (tests/test_cli_validation.py runs every bad flag as a subprocess).
    from .checkpoint import CheckpointError  # noqa: PLC0415 -- torch after the flags (above)
    from .registry import MODELS as RUNS  # noqa: PLC0415 -- as above
    from .train import Config, DeviceError  # noqa: PLC0415 -- as above

    config = Config(**vars(args))
    progress = Progress(epochs=config.epochs, checkpoint_dir=config.checkpoint_dir)
    train_fn = RUNS[config.model].run
    return run_guarded(lambda: train_fn(config, progress), (DataError, DeviceError, CheckpointError, NonFiniteLossError),
                       p.prog, progress)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before run_guarded: parsing or the framework's import
        sys.exit(interrupted("python -m reference_torch", None))
