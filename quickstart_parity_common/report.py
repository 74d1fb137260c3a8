"""The tutorial's printed lines, formatted in one place so both quickstarts print them identically."""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

LOG_EVERY = 100  # the tutorial prints the loss every 100 batches
RULE = "-------------------------------"


class NonFiniteLossError(Exception):
    """Training produced a NaN or inf loss."""


def epoch_header(epoch: int) -> str:
    """``Epoch t`` and its rule; ``epoch`` counts from 1 as the tutorial prints it."""
    return f"Epoch {epoch}\n{RULE}"


def loss_line(loss: float, current: int, size: int) -> str:
    """``loss: 2.303494  [   64/60000]``."""
    return f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]"


def loss_lines(losses: Sequence[float], batch_size: int, size: int) -> list[str]:
    """The lines the tutorial prints for one epoch's per-step losses (every LOG_EVERY batches).

    ``current = (batch + 1) * len(X)``, where ``len(X)`` is the batch's real length (the last
    batch may be partial).
    """
    lines = []
    for batch in range(0, len(losses), LOG_EVERY):
        length = min(batch_size, size - batch * batch_size)
        lines.append(loss_line(float(losses[batch]), (batch + 1) * length, size))
    return lines


def test_line(accuracy: float, avg_loss: float) -> str:
    """The tutorial's evaluation print, trailing spaces included (``print`` adds the last newline)."""
    return f"Test Error: \n Accuracy: {(100 * accuracy):>0.1f}%, Avg loss: {avg_loss:>8f} \n"


def prediction_line(predicted: str, actual: str) -> str:
    return f'Predicted: "{predicted}", Actual: "{actual}"'


def end_epoch(history: dict, epoch: int, accuracy: float, avg_loss: float, losses, out, verbose: bool) -> None:
    """The end of a training epoch, as every run prints and records it: the tutorial's test line on
    ``out``, the epoch's training time (``history["epoch_s"][-1]``) on stderr, and the three per-epoch
    lists of ``history`` extended. A NaN or inf test loss stops the run first (NonFiniteLossError)."""
    check_finite_test(avg_loss, epoch)
    out(test_line(accuracy, avg_loss))
    if verbose:
        print(f"[epoch {epoch}: {history['epoch_s'][-1]:.2f} s training]", file=sys.stderr)
    history["accuracy"].append(accuracy)
    history["avg_loss"].append(avg_loss)
    history["losses"].append(losses)


def check_finite(losses: Sequence[float], epoch: int) -> None:
    """Raise NonFiniteLossError naming the epoch and the first step whose loss is NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, dtype=np.float64)))
    if bad.size:
        step = int(bad[0])
        raise NonFiniteLossError(
            f"loss became {float(losses[step])} at epoch {epoch}, step {step}; "
            "training stopped (try a smaller --lr)"
        )


def check_finite_params(params: Mapping[str, np.ndarray], epoch: int) -> None:
    """Raise NonFiniteLossError naming the epoch and the first parameter holding NaN or inf.

    The losses ``check_finite`` sees come from before each update; the epoch's last update can
    still make the weights NaN, and they must not be saved or reported as a result.
    """
    for name, value in params.items():
        if not np.isfinite(np.asarray(value)).all():
            raise NonFiniteLossError(
                f"parameters became NaN or inf at epoch {epoch} ({name}); training stopped, "
                "nothing saved (try a smaller --lr)"
            )


def check_finite_test(avg_loss: float, epoch: int | None = None) -> None:
    """Raise NonFiniteLossError if the test pass's Avg loss is NaN or inf (finite weights can still
    overflow the logits): it is never printed as a result, and the run saves nothing."""
    if not np.isfinite(avg_loss):
        at = f"after epoch {epoch}" if epoch else "of the loaded model"
        raise NonFiniteLossError(f"the test loss {at} is {float(avg_loss)}; stopped before saving "
                                 "(try a smaller --lr or --momentum)")
