"""python -m jax_impl: the JAX quickstart (argument parsing only; the work is in train.run)."""
import sys

from quickstart_parity_common.checkpoint import add_checkpoint_flags
from quickstart_parity_common.cli import (
    JAX_DEVICES,
    Progress,
    XLAFlagsError,
    base_parser,
    check_xla_flags,
    interrupted,
    run_guarded,
)
from quickstart_parity_common.data import DataError
from quickstart_parity_common.models import MODELS
from quickstart_parity_common.report import NonFiniteLossError


def main(argv=None) -> int:
    p = base_parser("python -m jax_impl", "The quickstart in functional JAX (Flax Linen + optax).", "model.msgpack",
                    JAX_DEVICES)
    add_checkpoint_flags(p)
    args = p.parse_args(argv)
    if not MODELS[args.model].resumable and (args.checkpoint_dir or args.resume or args.load or args.limit_train):
        p.error(f"--model {args.model}: --checkpoint-dir, --resume, --load and --limit-train are not built yet for it "
                f"(only for {', '.join(n for n, m in MODELS.items() if m.resumable)})")
    try:  # before JAX starts: a bad XLA_FLAGS aborts the process there
        check_xla_flags()
    except XLAFlagsError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    # JAX is imported only once the flags are valid: a bad flag is refused in a second, not after
    # JAX's import (tests/test_cli_validation.py runs every bad flag as a subprocess).
    from .checkpoint import CheckpointError  # noqa: PLC0415 -- JAX after the flags (above)
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
        sys.exit(interrupted("python -m jax_impl", None))
