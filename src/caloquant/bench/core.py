"""The benchmark grid: every model x threads x streams x batch, timed with a warm-up and a time
budget; memory, per-op profile, roofline (against ceilings measured with each model's own
engine and precision, ``caloquant.bench.ceilings``) and Monte Carlo speed-up (at the cores in
use and per core) alongside.

Timing is robust to interference the guest cannot see. On a shared cloud host a core's
throughput changes by itself for seconds at a time with no other process in the guest and no
steal time (measured on this project's machine class: OpenVINO int8 of the 3DGAN on one thread
ran 177 showers/s for 12 s, then 550-700, in one process; AMX bf16 matmul on one pinned core
flips between about 1000 and 400 GFLOP/s). So every model is loaded first and each grid point's
budget is split into ``rounds`` windows (the repetitions), visited round-robin over all models
and grid points: slow phases of the host are shared by all models rather than landing on one.
Each window's median call time gives a throughput; a point reports the median over windows with
their spread, plus the best window (``showers_per_s_best``, the ``timeit`` view). A fixed
matmul (``host_probe``) timed every round shows how much the host itself moved. Other
processes in the guest are measured too (``other_load_pct``) and a window they disturbed is
re-measured. Compare precisions within one run; across runs, read ``host_probe`` first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from caloquant.bench.ceilings import ceiling_keys, measure_ceilings, merge_ceilings
from caloquant.bench.config import BenchConfig
from caloquant.bench.machine import (
    RssSampler,
    host_probe,
    machine_info,
    memory_bandwidth_gbs,
    release_memory,
    rss_bytes,
)
from caloquant.bench.montecarlo import (
    GEANT4_LITERATURE,
    engine_speedups,
    run_monte_carlo,
    time_mc_engine,
)
from caloquant.bench.profile import CATEGORY_HELP, profile_variant
from caloquant.bench.summary import finish_results, probe_summary, run_notes
from caloquant.bench.variants import (
    ModelRequest,
    Variant,
    latents_for,
    load_variant,
    parse_model_arg,
    prime_libraries,
    quiet_logs,
)
from caloquant.errors import CaloquantError
from caloquant.runtime import usable_cores
from caloquant.timing import OtherLoad, load_snapshot, time_streams

log = logging.getLogger(__name__)

BENCH_FORMAT = 1
MB = 1024.0**2
# JSON keys every result row carries (other tools rely on them).
RESULT_KEYS = (
    "model",
    "backend",
    "precision",
    "threads",
    "streams",
    "batch",
    "showers_per_s",
    "ms_per_shower",
    "peak_rss_mb",
    "model_bytes",
    "cores_used",
    "ceiling_gflops",
    "roofline_fraction",
    "speedup_vs_mc_engine",
    "speedup_vs_mc_engine_per_core",
    "speedup_vs_mc_engine_per_core_err",
    "speedup_vs_mc_engine_per_core_per_energy",
)
Progress = Callable[[int, int, str], None]  # (total steps, steps done, what is running)


def _label(text: str, seen: dict[str, int]) -> str:
    seen[text] = seen.get(text, 0) + 1
    return text if seen[text] == 1 else f"{text}#{seen[text]}"


def _row(
    m: _Loaded,
    point: tuple[int, int, int],
    cores: int,
    run_rss0: int,
    mc: dict[str, Any] | None,
    mc_engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One result row from a grid point's timed windows: median over windows, their spread, best.

    Every model of a run stays loaded (the windows of all models are interleaved), so the
    process RSS holds them all: a model's peak is its own share, the RSS before any model was
    loaded + this model's load growth + the growth during its own windows."""
    t, s, b = point
    v, label, windows, eff = m.variant, m.variant.label, m.windows[point], m.effective[point[:2]]
    sps = np.array([w["showers_per_s"] for w in windows])
    med = float(np.median(sps))
    calls_ms = np.concatenate([w["call_ms"] for w in windows])
    loads = [w["other_load_pct"] for w in windows if w["other_load_pct"] is not None]
    own = run_rss0 + (m.info["model_rss_mb"] * MB) + max(w["rss_growth_bytes"] for w in windows)
    flops = v.flops_per_shower
    used = max(1, min(eff["threads_total"] or t * s, cores))
    return {
        "model": label,
        "backend": v.backend,
        "precision": v.precision,
        "executed_precision": m.info["executed_precision"],
        "threads": t,
        "streams": s,
        "batch": b,
        "showers_per_s": round(med, 3),
        "ms_per_shower": round(1000.0 / med, 4),
        "spread": round(float(sps.max() - sps.min()) / 2 / med, 4),
        "showers_per_s_best": round(float(sps.max()), 3),
        "showers_per_s_windows": [round(float(x), 2) for x in sps],
        "call_spread": round(float(np.median([w["spread"] for w in windows])), 4),
        "showers_per_s_wall": round(
            float(np.median([w["showers_per_s_wall"] for w in windows])), 3
        ),
        "calls": int(calls_ms.size),
        "call_ms_p50": round(float(np.median(calls_ms)), 3),
        "latency_ms_p50": round(float(np.median(calls_ms)), 3) if b == 1 else None,
        "latency_ms_p99": round(float(np.percentile(calls_ms, 99)), 3) if b == 1 else None,
        "peak_rss_mb": round(own / MB, 1),
        "peak_rss_over_baseline_mb": round((own - run_rss0) / MB, 1),
        "process_peak_rss_mb": round(max(w["peak_rss_bytes"] for w in windows) / MB, 1),
        "model_bytes": v.model_bytes,
        "threads_total_effective": eff["threads_total"],
        "streams_effective": eff["streams"],
        "oversubscribed": t * s > cores,
        "cores_used": used,
        "other_load_pct": max(loads) if loads else None,
        "retries": int(sum(w["retries"] for w in windows)),
        "time_boxed": any(w["time_boxed"] for w in windows),
        "achieved_gflops": round(flops * med / 1e9, 2) if flops else None,
        "ceiling_gflops": None,  # filled in once the run's ceilings are final
        "ceiling_engine": None,
        "roofline_fraction": None,
        "roofline_note": "no ceiling: not measured in this run",
        "speedup_vs_geant4_literature": round(
            float(GEANT4_LITERATURE["seconds_per_shower"]) * med, 0
        ),
        "speedup_vs_mc_measured": round(mc["seconds_per_shower"] * med, 2) if mc else None,
        **engine_speedups(mc_engine, med, used),
    }


@dataclass
class _Loaded:
    """A model of the run, loaded and profiled, with its inputs and its timed windows."""

    variant: Variant
    info: dict[str, Any]
    latents: list[np.ndarray]
    windows: dict[tuple[int, int, int], list[dict[str, Any]]]
    effective: dict[tuple[int, int], dict[str, Any]]


def _load_model(
    req: ModelRequest,
    label: str,
    cfg: BenchConfig,
    grid: list[tuple[int, int, int]],
    step: Callable[..., None],
    say: Callable[[str], None],
) -> _Loaded:
    """Load one model (memory measured around it), count its FLOPs and profile it."""
    step(f"{label}: loading")
    release_memory()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    v: Variant = load_variant(req, label, max(cfg.threads), cfg.seed, cfg.skip_self_check)
    max_b = max(max(cfg.batches), cfg.profile_at)
    lat = [latents_for(v.spec, max_b, cfg.seed + 7919 * i) for i in range(max(cfg.streams))]
    first, _ = v.runners(cfg.threads[0], 1)
    first[0](lat[0][:1])
    load_s = time.perf_counter() - t0
    rss_model = rss_bytes() - rss0
    v.count_flops()
    info = v.info()
    info["load_seconds"] = round(load_s, 2)
    info["rss_baseline_mb"] = round(rss0 / MB, 1)
    info["model_rss_mb"] = round(rss_model / MB, 1)
    step(f"{label}: loaded", 1)
    say(
        f"{label}: {v.backend} {v.precision}, {v.model_bytes / MB:.2f} MB, "
        f"{(v.flops_per_shower or 0) / 1e9:.3f} GFLOP/shower, loaded in {info['load_seconds']} s"
    )
    if cfg.profile:
        step(f"{label}: profile")
        info["profile"] = profile_variant(v, lat[0][: cfg.profile_at], max(cfg.threads))
        step(f"{label}: profile", 1)
    return _Loaded(v, info, lat, {p: [] for p in grid}, {})


def _window(m: _Loaded, point: tuple[int, int, int], cfg: BenchConfig) -> None:
    """One timed window of one model at one grid point (re-measured when other processes
    disturbed it); appended to the model's windows."""
    t, s, b = point
    v, label = m.variant, m.variant.label
    runners, m.effective[(t, s)] = v.runners(t, s)
    prev = m.windows[point]
    rss_start = rss_bytes()
    best: dict[str, Any] | None = None
    for attempt in range(cfg.retries + 1):
        # first window: full warm-up; later ones: one untimed call to refill caches
        rss, other = RssSampler(), OtherLoad()
        try:
            new = time_streams(
                runners,
                [m.latents[i][:b] for i in range(s)],
                cfg.timing,
                warmup=not prev,
                monitors=(rss, other),
            )
        except Exception as exc:  # noqa: BLE001 - an engine failing at one grid point
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CaloquantError(
                f"{label}: inference failed at threads {t}, streams {s}, batch {b}: "
                f"{first_line[:160]}"
            ) from None
        new |= {"retries": attempt, "peak_rss_bytes": rss.peak, "other_load_pct": other.pct}
        if best is None or (new["other_load_pct"] or 0) < (best["other_load_pct"] or 0):
            best = new
        if (best["other_load_pct"] or 0) <= cfg.max_other_load_pct:
            break
    assert best is not None
    best["rss_growth_bytes"] = max(best["peak_rss_bytes"] - rss_start, 0)
    prev.append(best)


def run_bench(
    models: Sequence[str], cfg: BenchConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Benchmark every model over the configured grid; returns the JSON-ready report."""
    if not models:
        raise CaloquantError("give at least one model")
    # fail fast on bad arguments, before any timing
    requests = [parse_model_arg(m) for m in models]
    say = log.info
    t_start = time.perf_counter()
    cores = usable_cores()
    grid = [
        (t, s, b)
        for t in cfg.threads
        for s in cfg.streams
        for b in cfg.batches
        if cfg.oversubscribe or t * s <= cores
    ]
    if not grid:
        raise CaloquantError(
            f"every grid point has more threads x streams than the {cores} usable cores; "
            "choose fewer threads or streams, or allow oversubscription"
        )
    total = len(requests) * (len(grid) * cfg.rounds + 1 + int(cfg.profile)) + 2 * int(cfg.ceilings)
    done = 0

    def step(what: str, n: int = 0) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(total, done, what)

    machine = machine_info()
    machine["load_before"] = load_snapshot()
    # a Monte Carlo command that cannot run is bad input too: run it first
    mc = (
        run_monte_carlo(cfg.mc_command, cfg.mc_showers)
        if cfg.mc_command and cfg.mc_showers
        else None
    )
    # every model is loaded (and checked) before anything is measured: bad input fails fast
    prime_libraries({r.backend_name for r in requests})
    seen: dict[str, int] = {}
    run_rss0 = rss_bytes()
    loaded: list[_Loaded] = []
    for req in requests:
        with quiet_logs():  # exporters, quantizers and torch.compile warn freely
            loaded.append(_load_model(req, _label(req.short, seen), cfg, grid, step, say))
    ceilings: dict[str, Any] | None = None
    bandwidth = None
    counts = sorted({1} | {min(t * s, cores) for t in cfg.threads for s in cfg.streams})
    engines: dict[str, set[str]] = {}  # each model is held to its own engine's ceiling
    for m in loaded:
        engines.setdefault(m.variant.backend, set()).update(
            ceiling_keys(m.variant.precision, m.info["executed_precision"])
        )
    if cfg.ceilings:
        step("machine ceilings")
        ceilings = measure_ceilings(counts, engines)
        bandwidth = memory_bandwidth_gbs()
        step("machine ceilings", 1)
    mc_engine = None
    if cfg.mc_engine:
        step(f"Monte Carlo: {cfg.mc_engine}")
        mc_engine = time_mc_engine(cfg.mc_engine, cfg.mc_showers_per_point, cfg.mc_budget_s)
        step(f"Monte Carlo: {cfg.mc_engine}", 1)
    # the windows of every model and grid point are interleaved, round after round, so slow
    # phases of the host are shared by all models instead of landing on one of them; at each
    # grid point the models follow each other within seconds, so their ratios see one host state
    probes: list[dict[str, Any]] = []
    for r in range(cfg.rounds):
        probes.append(host_probe())
        for point in grid:
            for m in loaded:
                t, s_, b = point
                what = f"{m.variant.label}: threads {t}, streams {s_}, batch {b}" + (
                    f", round {r + 1}/{cfg.rounds}" if cfg.rounds > 1 else ""
                )
                step(what)
                with quiet_logs():
                    _window(m, point, cfg)
                step(what, 1)
    probes.append(host_probe())
    model_infos = [m.info for m in loaded]
    results = [_row(m, p, cores, run_rss0, mc, mc_engine) for m in loaded for p in grid]
    for m in loaded:
        m.variant.release()
    del loaded
    release_memory()

    if ceilings is not None:
        step("machine ceilings (again)")
        ceilings = merge_ceilings(ceilings, measure_ceilings(counts, engines))
        step("machine ceilings (again)", 1)
    finish_results(model_infos, results, ceilings)
    machine["load_after"] = load_snapshot()
    return {
        "caloquant_bench": BENCH_FORMAT,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg.to_dict(),
        "machine": machine,
        "ceilings": ceilings,
        "memory_bandwidth_gbs": bandwidth,
        "profile_categories": CATEGORY_HELP,
        "models": model_infos,
        "results": results,
        "monte_carlo": {
            "geant4_literature": GEANT4_LITERATURE,
            "measured": mc,
            "engine": mc_engine,
        },
        "host_probe": probe_summary(probes),
        "contended_points": sum(
            1 for r in results if (r["other_load_pct"] or 0) > cfg.max_other_load_pct
        ),
        "notes": run_notes(cfg),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
