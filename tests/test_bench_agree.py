"""benchmarks.agree: two runs agree on a ratio only when each median lies in the other's spread."""
from __future__ import annotations

import json
import math

import pytest

from benchmarks import agree


def spread(median, lo, hi):
    return {"median": median, "min": lo, "max": hi}


META = {"model": "mlp", "hidden": [512, 512], "batch_size": 64, "samples": 60000, "rounds": 5, "quick": False}


def run(pair, vs_tut, of_limit, timed_at="2026-11-25T18:51:10Z", **meta):
    return {"meta": {**META, "timed_at": timed_at, **meta}, "devices": {"cpu": {
        "pairs": [{"what": "jax-scan vs torch-eager", **pair}],
        "variants": [{"key": "jax-scan", "vs_tutorial": vs_tut, "of_limit": of_limit},
                     {"key": "torch-tutorial", "vs_tutorial": None, "of_limit": spread(0.1, 0.1, 0.1)}]}}}


@pytest.mark.parametrize("a, b, ok", [
    (spread(1.0, 0.9, 1.1), spread(1.05, 0.95, 1.2), True),
    (spread(1.0, 0.9, 1.1), spread(1.15, 1.05, 1.2), False),  # B's median outside A's range
    (spread(1.0, 0.99, 1.01), spread(1.02, 0.9, 1.2), False),  # A's range too narrow for B's median
    (spread(1.0, 1.0, 1.0), spread(1.0, 1.0, 1.0), True),  # bounds inclusive
    (spread(math.nan, 0.9, 1.1), spread(1.0, 0.9, 1.1), False),  # NaN never agrees
    ({"median": 1.0}, spread(1.0, 0.9, 1.1), False),  # no spread, no agreement
])
def test_agree(a, b, ok):
    assert agree.agree(a, b) is ok
    assert agree.agree(b, a) is ok


@pytest.mark.parametrize("a, b, ok", [
    (spread(1.0, 0.9, 1.1), spread(1.15, 1.05, 1.2), True),  # ranges share 1.05–1.1
    (spread(1.0, 0.9, 1.1), spread(1.15, 1.1, 1.2), True),  # touching counts
    (spread(1.0, 0.9, 1.0), spread(1.15, 1.1, 1.2), False),
    (spread(1.0, math.nan, 1.1), spread(1.0, 0.9, 1.1), False),
])
def test_overlap(a, b, ok):
    assert agree.overlap(a, b) is ok
    assert agree.overlap(b, a) is ok


def test_every_ratio_is_compared_and_the_exit_code_says_it(tmp_path, capsys):
    a = run(spread(2.0, 1.8, 2.2), spread(3.0, 2.9, 3.1), spread(0.5, 0.4, 0.6))
    b = run(spread(2.1, 1.9, 2.3), spread(3.5, 3.4, 3.6), spread(0.5, 0.45, 0.55), timed_at="2026-11-26T09:00:00Z")
    rows = agree.compare(a, b)
    assert [r["ratio"] for r in rows] == ["cpu: jax-scan vs torch-eager", "cpu: jax-scan over the tutorial",
                                          "cpu: jax-scan share of the limit", "cpu: torch-tutorial share of the limit"]
    assert [r["agree"] for r in rows] == [True, False, True, True]
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert agree.main([str(pa), str(pb)]) == 1
    out = capsys.readouterr().out
    assert "3/4 paired ratios agree" in out and "3/4 have overlapping" in out
    assert agree.main([str(pa), str(pa)]) == 2  # one file twice agrees with itself: refused, not "4/4 agree"
    assert capsys.readouterr().err.count("error:") == 1


def test_bad_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert agree.main([str(bad), str(bad)]) == 2
    assert capsys.readouterr().err.count("error:") == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"devices": {}}))
    assert agree.main([str(other), str(other)]) == 2
    assert agree.main([str(tmp_path / "missing.json"), str(other)]) == 2


@pytest.mark.parametrize("change, named", [
    ({"model": "cnn"}, "model is 'mlp'"),
    ({"samples": 256, "rounds": 2}, "samples is 60000"),
    ({"rounds": 2}, "rounds is 5"),
    ({"hidden": [64]}, "hidden is [512, 512]"),
    ({"quick": True}, "quick is False"),
    ({"timed_at": "2026-11-25T18:51:10Z"}, "hold the same run"),  # a copy of one run under another name
    ({"device": "cuda"}, "devices ['cpu']"),
])
def test_runs_that_measured_different_things_refused(change, named, tmp_path, capsys):
    a = run(spread(2.0, 1.8, 2.2), spread(3.0, 2.9, 3.1), spread(0.5, 0.4, 0.6))
    b = run(spread(2.0, 1.8, 2.2), spread(3.0, 2.9, 3.1), spread(0.5, 0.4, 0.6), timed_at="2026-11-26T09:00:00Z")
    if "device" in change:
        b["devices"] = {"cuda": b["devices"].pop("cpu")}
    else:
        b["meta"].update(change)
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert agree.main([str(pa), str(pb)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "error:" in captured.err and named in captured.err, captured.err
    assert captured.out == ""
