"""python -m reference_torch: the PyTorch quickstart (argument parsing only; the work is in train.run)."""
import sys

from common.cli import base_parser, run_guarded
from common.data import DataError
from common.report import NonFiniteLossError

from .checkpoint import CheckpointError
from .train import Config, DeviceError, run


def main(argv=None) -> int:
    p = base_parser("python -m reference_torch", "The PyTorch quickstart on FashionMNIST.", "model.pth")
    p.add_argument("--threads", type=int, default=Config.threads, help="torch intra-op threads (0: torch's default, one per core)")
    p.add_argument("--no-download", dest="download", action="store_false", help="never try torchvision's download")
    args = p.parse_args(argv)
    config = Config(**vars(args))
    return run_guarded(lambda: run(config), (DataError, DeviceError, CheckpointError, NonFiniteLossError), p.prog)


if __name__ == "__main__":
    sys.exit(main())
