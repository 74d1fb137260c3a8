"""python -m reference_torch: the PyTorch quickstart (argument parsing only; the work is in train.run)."""
import sys

from common.cli import TORCH_DEVICES, base_parser, non_negative_int, run_guarded
from common.data import DataError
from common.report import NonFiniteLossError


def main(argv=None) -> int:
    p = base_parser("python -m reference_torch", "The PyTorch quickstart on FashionMNIST.", "model.pth", TORCH_DEVICES)
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never try torchvision's download (by default it is tried when the data is missing)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: the tutorial's network; cnn: the convnet of cnn.py (--hidden is ignored)")
    args = vars(p.parse_args(argv))
    # torch is imported only once the flags are valid: a bad flag is refused in a second, not after
    # torch's import (tests/test_cli_validation.py runs every bad flag as a subprocess).
    from .checkpoint import CheckpointError
    from . import cnn_train
    from .train import Config, DeviceError, run

    train_fn = cnn_train.run if args.pop("model") == "cnn" else run
    config = Config(**args)
    return run_guarded(lambda: train_fn(config), (DataError, DeviceError, CheckpointError, NonFiniteLossError), p.prog)


if __name__ == "__main__":
    sys.exit(main())
