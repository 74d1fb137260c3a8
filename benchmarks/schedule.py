"""Interleaved rounds and paired ratios: timing that holds on a machine whose speed drifts.

A slow phase of the machine (another process, a frequency change) lasts minutes. Timing each
variant's epochs back to back lands such a phase on whichever variant runs then. Here every unit
is built and warmed up first; then each *round* runs one call of every unit, in an order rotated
from round to round, so that within a round every unit sees the same machine. Ratios (to the
limit, between variants) are taken *within* each round and summarised by their median and
spread across rounds. Everything here is pure arithmetic on a clock that the caller passes in,
so the tests check it with a fake clock.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# A quantity whose interquartile range across rounds exceeds this fraction of its median is
# flagged noisy: its median is printed with the flag, not as a fact.
NOISY_IQR = 0.10
# A step whose share of the limit (its own matrix products, back to back) reaches this is bound by arithmetic,
# not by what runs between the products (dispatch, Python, small kernels).
ARITHMETIC_BOUND = 0.8


@dataclass(frozen=True)
class Unit:
    """One thing timed per round: ``build()`` returns the callable to time; ``work`` is what one
    call computes (FLOPs), so that rates of different units compare; ``before()`` pins the
    process settings the unit runs under (torch threads, matmul precision) before its build and
    before each call."""

    key: str
    build: Callable[[], Callable[[], object]]
    work: float
    before: Callable[[], None] = field(default=lambda: None)


@dataclass
class Timing:
    """A unit's times: ``build_s`` (set-up), ``warmup_s`` (first call: compile, caches), ``times``
    (one call per round, in round order) and the last call's return value."""

    key: str
    work: float
    build_s: float = 0.0
    warmup_s: float = 0.0
    times: list[float] = field(default_factory=list)
    last: object = None

    @property
    def rates(self) -> list[float]:
        return [self.work / t for t in self.times]


def rotation(n: int, rounds: int) -> list[list[int]]:
    """Round r runs units r, r+1, ..., n-1, 0, ..., r-1 (mod n): each unit once per round, and
    over n rounds each unit in each position once."""
    return [[(r + i) % n for i in range(n)] for r in range(rounds)]


def run_rounds(units: Sequence[Unit], rounds: int, clock: Callable[[], float] = time.perf_counter,
               progress: Callable[[str], None] | None = None) -> tuple[dict[str, Timing], list[tuple[str, int, str]]]:
    """Warm every unit up (build, then one untimed-as-steady call), then ``rounds`` interleaved rounds.

    Returns the timings by key and the event log ``(phase, round, key)`` in the order run, phase
    ``"build"``, ``"warmup"`` or ``"round"`` (round -1 outside the rounds). Each clock read follows
    the unit's own synchronisation (the callables return only when their work is done).
    """
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise ValueError(f"unit keys must be unique: {keys}")
    timings = {u.key: Timing(u.key, u.work) for u in units}
    calls: dict[str, Callable[[], object]] = {}
    log: list[tuple[str, int, str]] = []
    for u in units:
        u.before()
        t0 = clock()
        calls[u.key] = u.build()
        timings[u.key].build_s = clock() - t0
        log.append(("build", -1, u.key))
        if progress:
            progress(f"build {u.key}")
        t0 = clock()
        timings[u.key].last = calls[u.key]()
        timings[u.key].warmup_s = clock() - t0
        log.append(("warmup", -1, u.key))
        if progress:
            progress(f"warm-up {u.key}")
    for r, order in enumerate(rotation(len(units), rounds)):
        for i in order:
            u = units[i]
            u.before()
            t0 = clock()
            timings[u.key].last = calls[u.key]()
            timings[u.key].times.append(clock() - t0)
            log.append(("round", r, u.key))
            if progress:
                progress(f"round {r + 1}/{rounds} {u.key}")
    return timings, log


def spread(values: Sequence[float]) -> dict:
    """Median, min, max, quartiles (numpy's linear interpolation) and the relative IQR of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"spread of non-finite or empty values: {list(values)}")
    q1, median, q3 = (float(q) for q in np.percentile(v, [25, 50, 75]))
    rel_iqr = (q3 - q1) / abs(median) if median else float("inf")
    return {"median": median, "min": float(v.min()), "max": float(v.max()), "q1": q1, "q3": q3,
            "rel_iqr": rel_iqr, "n": int(v.size), "noisy": not rel_iqr <= NOISY_IQR}


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """``num[r] / den[r]`` for every round r: both measured in the same round."""
    if len(num) != len(den):
        raise ValueError(f"paired ratio of {len(num)} and {len(den)} rounds")
    return [a / b for a, b in zip(num, den, strict=True)]


def per_round_max(rate_lists: Sequence[Sequence[float]]) -> list[float]:
    """The best rate in each round over several probes (the limit is the best any of them reaches)."""
    return [max(rs) for rs in zip(*rate_lists, strict=True)]
