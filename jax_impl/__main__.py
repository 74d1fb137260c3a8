"""python -m jax_impl: the JAX quickstart (argument parsing only; the work is in train.run)."""
import sys

from common.cli import base_parser, run_guarded
from common.data import DataError
from common.report import NonFiniteLossError

from .checkpoint import CheckpointError
from .train import Config, DeviceError, run


def main(argv=None) -> int:
    p = base_parser("python -m jax_impl", "The quickstart in functional JAX (Flax Linen + optax).", "model.msgpack")
    args = p.parse_args(argv)
    config = Config(**vars(args))
    return run_guarded(lambda: run(config), (DataError, DeviceError, CheckpointError, NonFiniteLossError), p.prog)


if __name__ == "__main__":
    sys.exit(main())
