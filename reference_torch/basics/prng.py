"""Random numbers in torch: a global generator (``torch.manual_seed``) or explicit
``torch.Generator`` objects, both *stateful*; ``jax_impl/basics/prng.py`` does the same with keys."""
from __future__ import annotations

import torch

__all__ = ["independent_streams", "replay_step", "reseed_repeats", "same_call_twice"]


def same_call_twice(seed: int = 0) -> dict:
    """``torch.rand(3)`` twice after one ``manual_seed``: the hidden state advances, so they differ."""
    torch.manual_seed(seed)
    a, b = torch.rand(3), torch.rand(3)
    return {"first": a.numpy(), "equal": bool(torch.equal(a, b))}


def reseed_repeats(seed: int = 0) -> bool:
    """Seeding again restarts the stream: the same draw again."""
    torch.manual_seed(seed)
    a = torch.rand(3)
    torch.manual_seed(seed)
    return bool(torch.equal(a, torch.rand(3)))


def independent_streams(seed: int = 0, n: int = 3) -> dict:
    """``n`` independent streams, as ``torch.Generator`` objects (one per worker, say), each seeded
    from ``seed`` and its index; their first draws differ pairwise."""
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]
    draws = [torch.rand(3, generator=g).numpy() for g in gens]
    return {"all_distinct": len({d.tobytes() for d in draws}) == n, "first": draws[0]}


def replay_step(seed: int = 0, step: int = 5) -> dict:
    """Noise for training step ``step``, drawn in order (steps 0..``step``) and directly (``step``
    alone), with a ``torch.Generator`` per step seeded from (seed, step) as ``independent_streams``
    does: both draws agree, as with JAX's ``fold_in``. The seed mix ``seed * 1000 + step`` is ad hoc,
    and it collides: (seed 0, step 1000) is (seed 1, step 0)."""
    def at(seed: int, step: int) -> torch.Tensor:
        return torch.rand(3, generator=torch.Generator().manual_seed(seed * 1000 + step))

    in_order = [at(seed, s) for s in range(step + 1)][step]
    direct = at(seed, step)
    return {"direct_equals_in_order": bool(torch.equal(in_order, direct)), "in_order": in_order.numpy(),
            "collides": bool(torch.equal(at(0, 1000), at(1, 0)))}
