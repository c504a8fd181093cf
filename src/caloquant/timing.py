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

Whether one model is faster than another is decided by :func:`race`: paired interleaved
rounds, a confidence interval on the per-round speed ratios, more rounds (time-boxed) while the
interval reaches across the tie band, and the other load on the machine recorded
(:class:`OtherLoad`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
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


# --- other load during a measurement -----------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_pressure() -> float | None:
    """Share of the last 10 s in which runnable tasks waited for a CPU (Linux PSI), in %."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(first.split("avg10=")[1].split()[0])
    return None


def load_snapshot() -> dict[str, Any]:
    """How busy the machine is (other processes distort timings): load averages and CPU pressure."""
    try:
        la: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        la = None
    return {
        "loadavg_1_5_15": la,
        "cpu_pressure_avg10_pct": _cpu_pressure(),
        "time_unix": round(time.time(), 1),
    }


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy (all CPUs; steal time included)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
        return (user + nice + system + irq + softirq + steal) / _HZ
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """Share of the machine's CPU capacity used by anything but this process (other processes,
    hypervisor steal) while the block runs, in % (None where /proc/stat is missing). Other load
    slows a measurement down: 50 % on 2 cores is one core taken away."""

    def __enter__(self) -> OtherLoad:
        self.pct: float | None = None
        self._t, self._busy, self._self = (
            time.perf_counter(),
            _machine_busy_s(),
            sum(os.times()[:2]),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _machine_busy_s()
        wall = time.perf_counter() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (sum(os.times()[:2]) - self._self)
        self.pct = round(max(0.0, 100 * other / (wall * (os.cpu_count() or 1))), 1)


# --- a race against a reference model ------------------------------------------------------------


@dataclass(frozen=True)
class RaceConfig:
    """How :func:`race` decides whether a model is faster than a reference.

    ``tie_band``: speed ratios within 1 +- this are a tie; ``confidence``: of the interval on
    the ratio; rounds go on from ``min_rounds`` while an interval contains ``1 + tie_band``
    (the decision is open), up to ``max_rounds`` or ``budget_s`` seconds."""

    tie_band: float = 0.03
    confidence: float = 0.90
    min_rounds: int = 5
    max_rounds: int = 20
    budget_s: float = 90.0

    def __post_init__(self) -> None:
        if not 0 <= self.tie_band < 1:
            raise CaloquantError(f"race tie band must lie in [0, 1), got {self.tie_band}")
        if not 0.5 <= self.confidence < 1:
            raise CaloquantError(f"race confidence must lie in [0.5, 1), got {self.confidence}")
        if not 3 <= self.min_rounds <= self.max_rounds:
            raise CaloquantError(
                f"need 3 <= min_rounds <= max_rounds, got {self.min_rounds}, {self.max_rounds}"
            )
        if not self.budget_s > 0:
            raise CaloquantError(f"race budget must be positive, got {self.budget_s} s")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio_interval(
    model_sps: Sequence[float], reference_sps: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """The speed ratio model / reference from paired rounds (round i of each was timed in the
    same interleaved round, so a slow spell of the host hits both): the geometric mean of the
    per-round ratios and its Student-t interval at ``confidence``, as (ratio, low, high)."""
    from scipy import stats

    d = np.log(np.asarray(model_sps, dtype=float) / np.asarray(reference_sps, dtype=float))
    m = float(d.mean())
    if len(d) < 2:
        return float(np.exp(m)), 0.0, float("inf")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(np.exp(m)), float(np.exp(m - half)), float(np.exp(m + half))


def verdict(low: float, high: float, tie_band: float) -> str:
    """'faster' (the whole interval above 1 + band), 'slower' (below 1 - band), 'tie' (inside
    the band) or 'open' (the interval reaches across a band edge)."""
    if low > 1 + tie_band:
        return "faster"
    if high < 1 - tie_band:
        return "slower"
    if low >= 1 - tie_band and high <= 1 + tie_band:
        return "tie"
    return "open"


def race(
    fns: dict[str, Runner],
    reference: str,
    latent: np.ndarray,
    cfg: TimingConfig,
    rc: RaceConfig,
) -> dict[str, Any]:
    """Each model against ``reference`` in paired interleaved rounds: every round times every
    model once (the order rotates from round to round), the decision is made on the per-round
    speed ratios (:func:`ratio_interval`), and rounds go on while a model's interval contains
    ``1 + tie_band`` (time-boxed by ``rc``). A shared host slows both sides of a ratio alike, so
    a decision that holds on a quiet host holds under load or comes out 'open' (a tie for the
    caller), instead of flipping with who else used the CPU.

    Returns per model its rounds (showers/s) and, for every model but the reference, the
    per-round ratios, the ratio and its interval, and the :func:`verdict`; the rounds run, the
    seconds, and the other load on the machine during the race (:class:`OtherLoad`)."""
    keys = list(fns)
    if reference not in fns:
        raise CaloquantError(f"the race's reference '{reference}' is not among its models")
    sps: dict[str, list[float]] = {k: [] for k in keys}
    slow: set[str] = set()  # time-boxed: one call was the measurement, not raced further
    t0 = time.perf_counter()
    before = load_snapshot()
    stats: dict[str, tuple[float, float, float]] = {}
    with OtherLoad() as other:
        r = 0
        while True:
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            round_sps = {}
            for k in order:
                if k in slow:
                    continue
                w = time_streams([fns[k]], [latent], cfg, warmup=(r == 0))
                round_sps[k] = w["showers_per_s"]
                if w["time_boxed"]:
                    slow.add(k)
            for k, v in round_sps.items():
                sps[k].append(v)
            r += 1
            paired = [k for k in keys if k != reference and k not in slow]
            stats = {
                k: ratio_interval(sps[k], sps[reference], rc.confidence)
                for k in paired
                if reference not in slow
            }
            open_ = [k for k, (_, lo, hi) in stats.items() if lo <= 1 + rc.tie_band <= hi]
            if r >= rc.max_rounds or reference in slow:
                break
            if r >= rc.min_rounds and (not open_ or time.perf_counter() - t0 > rc.budget_s):
                break
    out: dict[str, Any] = {
        "reference": reference,
        "rounds": r,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_before": before,
        "other_load_pct": other.pct,
        "models": {},
    }
    for k in keys:
        row: dict[str, Any] = {
            "showers_per_s": float(np.median(sps[k])),
            "rounds": sps[k],
            "time_boxed": k in slow,
        }
        if k in stats:
            ratio, lo, hi = stats[k]
            row |= {
                "ratio_rounds": [a / b for a, b in zip(sps[k], sps[reference])],
                "ratio": ratio,
                "ratio_interval": [lo, hi],
                "verdict": verdict(lo, hi, rc.tie_band),
            }
        elif k != reference:
            row["verdict"] = "slower" if k in slow else "open"
        out["models"][k] = row
    return out
