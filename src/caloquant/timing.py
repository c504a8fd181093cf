"""The one way caloquant times inference, used by `quantize` (the speeds in an artifact's
manifest) and by `bench` (the grid), so that their numbers mean the same thing.

A *window* runs one or more streams concurrently (one Python thread each; the engines
release the GIL): a warm-up, then calls until the window's time is up (at least
``min_calls``, at most ``max_calls`` per stream). Its throughput is the sum over streams of
batch / median call time, robust to a stray slow call. Several models are compared in
*interleaved rounds* (A B C A B C ...): a slow spell of a shared host then hits all of them,
and each model's speed is the median over its rounds. Speeds are compared as ratios inside
one run, never across runs.

Every measurement is time-boxed: a model whose first call takes longer than
``first_call_budget_s`` is timed by that one call (``time_boxed: True`` in the result) instead
of being called again and again (an fp16 matmul runs at ~3 GFLOP/s on a CPU without fp16
arithmetic: a benchmark must not spend minutes there).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError

Runner = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class TimingConfig:
    """How long and how often to time. ``window_s`` per window, ``rounds`` windows per model
    (interleaved over models), ``warmup_s`` before a model's first window."""

    window_s: float = 1.0
    rounds: int = 5
    warmup_s: float = 0.25
    min_calls: int = 3
    max_calls: int = 200
    first_call_budget_s: float = 20.0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise CaloquantError(f"timing window must be positive, got {self.window_s} s")
        if self.rounds < 1:
            raise CaloquantError(f"timing rounds must be at least 1, got {self.rounds}")
        if self.warmup_s < 0:
            raise CaloquantError(f"warm-up must not be negative, got {self.warmup_s} s")
        if not 1 <= self.min_calls <= self.max_calls:
            raise CaloquantError(
                f"need 1 <= min_calls <= max_calls, got {self.min_calls}, {self.max_calls}"
            )
        if not self.first_call_budget_s > 0:
            raise CaloquantError(
                f"first-call budget must be positive, got {self.first_call_budget_s} s"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_streams(
    runners: Sequence[Runner],
    inputs: Sequence[np.ndarray],
    cfg: TimingConfig,
    warmup: bool = True,
    monitors: Sequence[Any] = (),
) -> dict[str, Any]:
    """One window: every stream runs concurrently. Each stream first makes one untimed call;
    ``warmup``: calls go on until ``cfg.warmup_s`` has passed before timing starts.
    ``monitors``: context managers entered around the timed part (memory, other load).

    Returns showers/s (sum over streams of batch / median call time), ms per shower, the
    wall-clock throughput, per-call times and ``time_boxed`` when a first call exceeded the
    budget (then that call alone is the measurement)."""
    s = len(runners)
    ready, go = threading.Barrier(s + 1), threading.Barrier(s + 1)
    durations: list[list[float]] = [[] for _ in range(s)]
    spans = [(0.0, 0.0)] * s
    errors: list[BaseException] = []
    boxed = [False] * s
    deadline = [0.0]

    def work(i: int) -> None:
        f, x = runners[i], inputs[i]
        try:
            t0 = time.perf_counter()
            f(x)
            first = time.perf_counter() - t0
            if first > cfg.first_call_budget_s:
                boxed[i] = True
                durations[i].append(first)
            elif warmup:
                end = t0 + cfg.warmup_s
                while time.perf_counter() < end:
                    f(x)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            errors.append(exc)
        ready.wait()
        go.wait()
        if errors or boxed[i]:
            return
        d = durations[i]
        start = time.perf_counter()
        try:
            while len(d) < cfg.min_calls or (
                time.perf_counter() < deadline[0] and len(d) < cfg.max_calls
            ):
                t0 = time.perf_counter()
                f(x)
                d.append(time.perf_counter() - t0)
                if d[-1] > cfg.first_call_budget_s:  # a pathologically slow engine: stop here
                    boxed[i] = True
                    break
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        spans[i] = (start, time.perf_counter())

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(s)]
    for w in workers:
        w.start()
    ready.wait()
    with contextlib.ExitStack() as stack:
        for m in monitors:
            stack.enter_context(m)
        deadline[0] = time.perf_counter() + cfg.window_s
        go.wait()
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    batch = len(inputs[0])
    meds = [float(np.median(d)) for d in durations]
    pooled = np.concatenate([np.asarray(d) / m for d, m in zip(durations, meds)])
    sps = sum(batch / m for m in meds)
    wall = sum(
        batch * len(d) / max(b - a, 1e-12) if b > a else batch / m
        for d, m, (a, b) in zip(durations, meds, spans)
    )
    all_ms = 1000 * np.concatenate([np.asarray(d) for d in durations])
    return {
        "showers_per_s": sps,
        "ms_per_shower": 1000.0 / sps,
        "spread": float((np.percentile(pooled, 84) - np.percentile(pooled, 16)) / 2),
        "showers_per_s_wall": wall,
        "calls": int(sum(len(d) for d in durations)),
        "call_ms_p50": float(np.median(all_ms)),
        "call_ms_p99": float(np.percentile(all_ms, 99)),
        "call_ms": all_ms,
        "time_boxed": any(boxed),
    }


def throughput(fn: Runner, latent: np.ndarray, cfg: TimingConfig | None = None) -> dict[str, Any]:
    """Showers/s of one model on one batch: one window (with warm-up) of ``cfg``."""
    r = time_streams([fn], [latent], cfg or TimingConfig())
    r.pop("call_ms")
    return r


def interleaved(
    fns: dict[str, Runner],
    latent: np.ndarray,
    cfg: TimingConfig | None = None,
    rounds: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Speeds of several models in interleaved rounds (A B C A B C ...); per model the median
    over rounds, every round kept. Ratios between these numbers are what caloquant reports.
    The first round of each model carries the warm-up."""
    cfg = cfg or TimingConfig()
    n = rounds or cfg.rounds
    runs: dict[str, list[float]] = {k: [] for k in fns}
    boxed: dict[str, bool] = dict.fromkeys(fns, False)
    for r in range(n):
        for k, fn in fns.items():
            if boxed[k]:
                continue  # one call of a pathologically slow model is its measurement
            w = time_streams([fn], [latent], cfg, warmup=(r == 0))
            runs[k].append(w["showers_per_s"])
            boxed[k] = w["time_boxed"]
    out: dict[str, dict[str, Any]] = {}
    for k, v in runs.items():
        med = float(np.median(v))
        out[k] = {
            "showers_per_s": med,
            "ms_per_shower": 1000.0 / med,
            "rounds": v,
            "spread": float((max(v) - min(v)) / 2 / med),
            "time_boxed": boxed[k],
        }
    return out
