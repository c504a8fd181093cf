"""The final race (caloquant.timing.race): the decision rests on paired per-round speed
ratios with a confidence interval, so it holds when another process loads the CPU. These tests
time real work (element-wise numpy of known size) but assert decisions, not speeds: a model
doing a third of the reference's work must come out 'faster' on a quiet and on a loaded host,
and a model doing the same work must never come out 'faster' (a tie or open, which the tuner
treats as "not faster": the exact model stays)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from caloquant.timing import RaceConfig, TimingConfig, race, ratio_interval, verdict

TIMING = TimingConfig(window_s=0.15, rounds=1, warmup_s=0.05)
RACE = RaceConfig(tie_band=0.03, confidence=0.9, min_rounds=5, max_rounds=12, budget_s=20.0)


def _work(n: int):  # noqa: ANN202 - a runner
    # element-wise work runs on one thread: a loaded host slows it in proportion (a
    # multi-threaded matmul under load stalls at its barriers, which only adds noise here)
    a = np.random.default_rng(0).standard_normal(60_000)

    def run(x: np.ndarray) -> np.ndarray:
        y = a
        for _ in range(n):
            y = np.tanh(y * 1.01)
        return y

    return run


def _models() -> dict:
    # the reference and "equal" do the same work in separate function objects; "third" a third
    return {"exact": _work(9), "equal": _work(9), "third": _work(3)}


def _decide() -> dict[str, str]:
    res = race(_models(), "exact", np.zeros((1, 1), np.float32), TIMING, RACE)
    assert res["rounds"] >= RACE.min_rounds
    for k, m in res["models"].items():
        assert len(m["rounds"]) == res["rounds"], k  # every model timed in every round
    assert res["other_load_pct"] is None or res["other_load_pct"] >= 0
    return {k: m["verdict"] for k, m in res["models"].items() if k != "exact"}


def test_ratio_interval_and_verdict() -> None:
    """Paired ratios: a host slowing every model alike in one round does not move the ratio."""
    ref = [100.0, 50.0, 100.0, 80.0, 100.0]  # round 2 and 4: the host was busy
    model = [200.0, 100.0, 200.0, 160.0, 200.0]  # exactly 2x in every round
    r, lo, hi = ratio_interval(model, ref, 0.9)
    assert r == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    _, lo, hi = ratio_interval([101.0, 99.0, 102.0, 98.0], [100.0] * 4, 0.9)
    assert lo < 1 < hi and verdict(lo, hi, 0.03) == "tie"
    assert verdict(1.05, 1.2, 0.03) == "faster" and verdict(0.8, 0.9, 0.03) == "slower"
    assert verdict(1.0, 1.1, 0.03) == "open"  # reaches across 1 + band: more rounds


def test_race_holds_under_load() -> None:
    """The same decisions without and with a CPU-burning process beside the race (one per
    core): a third of the work is 'faster', the same work is never 'faster'."""
    quiet = _decide()
    assert quiet["third"] == "faster", quiet
    assert quiet["equal"] != "faster", quiet
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        loaded = _decide()
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert loaded["third"] in ("faster", "open"), loaded  # the same choice, or an explicit tie
    assert loaded["equal"] != "faster", loaded
