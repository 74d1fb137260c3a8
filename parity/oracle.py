"""python -m parity.oracle: jax_impl's training in float64, in a process of its own.

``jax_enable_x64`` must be set before JAX makes any array and leaks into everything imported after
it, so the float64 JAX run never shares a process with the float32 tests.
"""
import jax

jax.config.update("jax_enable_x64", True)

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from jax_impl import train as jtrain  # noqa: E402
from jax_impl.data import load_fashion_mnist  # noqa: E402
from quickstart_parity_common.data import to_float  # noqa: E402

from .weights import flax_to_torch_numpy, hidden_of, torch_to_flax  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.oracle", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--init", required=True, help="npz of the initial state_dict (torch keys)")
    p.add_argument("--out", required=True, help="npz written with losses and final params (torch keys)")
    p.add_argument("--steps", type=int, required=True, help="training steps per epoch (batches from the start)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)

    with np.load(args.init) as f:
        state_dict = {k: f[k].astype(np.float64) for k in f.files}
    params = torch_to_flax(state_dict)
    hidden = hidden_of(params)
    images, labels = load_fashion_mnist(args.data_dir, train=True)
    n = min(len(images), args.steps * args.batch_size)
    # The float32 ToTensor pixels, widened: the same inputs the torch float64 run sees.
    x = to_float(images[:n]).astype(np.float64).reshape(n, -1)
    data = (jax.numpy.asarray(x), jax.numpy.asarray(labels[:n]))
    state = jtrain.create_train_state(jax.tree_util.tree_map(jax.numpy.asarray, params), args.lr, hidden,
                                      momentum=args.momentum, weight_decay=args.weight_decay)
    losses = []
    for _ in range(args.epochs):
        state, epoch_losses = jtrain.train_epoch(state, data, args.batch_size, log=None)
        losses.append(epoch_losses)
    out = flax_to_torch_numpy(jax.device_get(state.params))
    np.savez(args.out, losses=np.concatenate(losses), **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
