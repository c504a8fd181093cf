"""What a benchmark run reports beside its result rows: roofline fractions (against the ceiling
of the row's own engine and precision) and per-model bests, the host probe's spread, the notes
that explain the columns, and the comparison of two runs (`compare_runs`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from caloquant.bench.ceilings import ceiling_for, ceiling_keys
from caloquant.errors import CaloquantError

if TYPE_CHECKING:
    from caloquant.bench.config import BenchConfig

log = logging.getLogger(__name__)
# a model's best grid point, as ``models[i]["best"]`` of the report
BEST_KEYS = (
    "threads",
    "streams",
    "batch",
    "showers_per_s",
    "ms_per_shower",
    "cores_used",
    "ceiling_gflops",
    "ceiling_engine",
    "roofline_fraction",
    "roofline_note",
    "speedup_vs_geant4_literature",
    "speedup_vs_mc_engine",
    "speedup_vs_mc_engine_err",
    "speedup_vs_mc_engine_per_core",
    "speedup_vs_mc_engine_per_core_err",
)


def _roofline(r: dict[str, Any], ceilings: dict[str, Any]) -> None:
    """Fill a row's ceiling (its own engine and the fastest of the precisions it executes,
    :func:`~caloquant.bench.ceilings.ceiling_keys`, at the cores it used) and fraction.
    No ceiling: None and the reason. A fraction above 1 means the ceiling is not the engine's
    peak for this work (or was measured while the host was slower): a bug of the measurement,
    never reported as a fraction."""
    keys = ceiling_keys(r["precision"], r.get("executed_precision"))
    found = {k: ceiling_for(ceilings, r["backend"], k, r["cores_used"]) for k in keys}
    have = {k: c for k, (c, _) in found.items() if c is not None}
    key = max(have, key=have.__getitem__) if have else keys[0]
    ceil, why = found[key]
    r["ceiling_gflops"], r["ceiling_engine"] = ceil, f"{r['backend']} {key}"
    r["roofline_fraction"], r["roofline_note"] = None, why
    if ceil is None or r["achieved_gflops"] is None:
        return
    frac = r["achieved_gflops"] / ceil
    if frac > 1:
        r["roofline_note"] = (
            f"not reported: achieved {r['achieved_gflops']:g} GFLOP/s is above the "
            f"{r['ceiling_engine']} ceiling of {ceil:g} GFLOP/s at {r['cores_used']} thread(s), so "
            "that ceiling is not the engine's peak for this model"
        )
        log.warning(
            "%s (%s, %s threads x %s streams, batch %s): roofline %s",
            r["model"],
            r["backend"],
            r["threads"],
            r["streams"],
            r["batch"],
            r["roofline_note"],
        )
        return
    r["roofline_fraction"] = round(frac, 4)


def finish_results(
    infos: list[dict[str, Any]], results: list[dict[str, Any]], ceilings: dict[str, Any] | None
) -> None:
    """Roofline fractions against the run's final ceilings; per-model best point and latency."""
    for r in results:
        if ceilings:
            _roofline(r, ceilings)
    for info in infos:
        rows = [r for r in results if r["model"] == info["model"]]
        best = max(rows, key=lambda r: r["showers_per_s"])
        info["best"] = {k: best.get(k) for k in BEST_KEYS}
        info["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rows)
        one = [r for r in rows if r["batch"] == 1 and r["streams"] == 1]
        if one:
            fastest = min(one, key=lambda r: r["latency_ms_p50"])
            info["latency_batch1"] = {
                k: fastest[k] for k in ("threads", "latency_ms_p50", "latency_ms_p99")
            }


def probe_summary(probes: list[dict[str, float | None]]) -> dict[str, Any]:
    """Host probe per round and, per dtype, (max - min) / median over the run."""
    out: dict[str, Any] = {
        "method": "1-thread square matmul (n=512, median of calls over ~40 ms) at the start of "
        "every round and at the end; GFLOP/s (GOP/s for int8)",
        "rounds": probes,
    }
    for d in probes[0]:
        vals = np.array([p[d] for p in probes if p.get(d)], dtype=float)
        out[f"{d}_spread"] = (
            round(float((vals.max() - vals.min()) / np.median(vals)), 3) if vals.size else None
        )
    return out


def run_notes(cfg: BenchConfig) -> list[str]:
    """The report's ``notes``: what the columns of a result row mean and how they were timed."""
    return [
        f"showers_per_s: median over {cfg.rounds} windows of {cfg.duration_s / cfg.rounds:g} s; "
        "the windows of all models and grid "
        "points are interleaved round after round over the whole run "
        "(each window: sum over streams of batch / median call time; "
        "all in showers_per_s_windows, the largest in "
        "showers_per_s_best); spread: (max - min) / 2 of the windows relative to the median; "
        "call_spread: half the "
        "16-84 % range of call times within a window, relative to its median",
        "ms_per_shower = 1000 / showers_per_s (amortized); "
        "latency_ms_p50/p99: per call at batch 1, all windows",
        "model_rss_mb: process RSS growth from before loading the model "
        "to after loading it and one batch-1 call; "
        "peak_rss_mb: the model's own peak = RSS before any model was loaded "
        "+ model_rss_mb + the largest RSS growth "
        "during its windows (sampled every 5 ms); "
        "process_peak_rss_mb: the whole process, which holds every model of the run",
        "host_probe: a fixed 1-thread fp32 and int8 matmul timed at the start of every round; "
        "its spread shows how much "
        "the machine's own speed moved during the run (0 % is a quiet host)",
        "roofline_fraction: FLOPs per shower x showers/s over the matmul ceiling measured "
        "with the row's own engine and precision (ceiling_engine; a model that executes "
        "several precisions, e.g. int8+fp32, is held to the fastest of their ceilings) at "
        "the cores in use (cores_used); None with "
        "roofline_note where that engine has no ceiling for the precision, or where the "
        "model would exceed it (a fraction above 1 is never reported)",
        "speedup_vs_mc_engine: the model at the row's threads x streams (cores_used cores) "
        "against the Monte Carlo engine on one core; speedup_vs_mc_engine_per_core: showers/s "
        "per core against the engine's showers/s per core (= speedup_vs_mc_engine / "
        "cores_used); both per energy (_per_energy) and with errors from the spread of the "
        "timed Monte Carlo showers (_err)",
        "speedup_vs_geant4_literature uses a Geant4 time from the literature, "
        "NOT measured here (see monte_carlo)",
        "other_load_pct: share of the machine's CPUs used by other processes "
        "(and hypervisor steal) during a window; "
        f"a window above {cfg.max_other_load_pct:g} % is re-measured up to {cfg.retries} "
        "time(s), keeping the quietest",
    ]


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Relative differences between two reports, grid point by grid point: of showers/s, and of
    each model's speed relative to the first model at the same point (the within-run ratio)."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["model"], r["backend"], r["precision"], r["threads"], r["streams"], r["batch"])

    def stats(diffs: list[dict[str, Any]]) -> dict[str, Any]:
        rel = np.array([d["rel_diff"] for d in diffs])
        return {
            "points": len(diffs),
            "max_rel_diff": float(rel.max()),
            "median_rel_diff": float(np.median(rel)),
            "within_10pct": int((rel <= 0.10).sum()),
            "worst": sorted(diffs, key=lambda d: -d["rel_diff"])[:5],
        }

    def rel(x: float, y: float) -> float:
        return abs(x - y) / ((x + y) / 2)

    rb = {key(r): r for r in b["results"]}
    ref_model = a["results"][0]["model"]
    ref_a = {key(r)[3:]: r["showers_per_s"] for r in a["results"] if r["model"] == ref_model}
    ref_b = {key(r)[3:]: r["showers_per_s"] for r in b["results"] if r["model"] == ref_model}
    diffs, ratios = [], []
    for r in a["results"]:
        o = rb.get(key(r))
        if o is None:
            continue
        point = dict(zip(("model", "backend", "precision", "threads", "streams", "batch"), key(r)))
        x, y = r["showers_per_s"], o["showers_per_s"]
        diffs.append({"point": point, "a": x, "b": y, "rel_diff": rel(x, y)})
        p = key(r)[3:]
        if r["model"] != ref_model and p in ref_a and p in ref_b:
            qa, qb = x / ref_a[p], y / ref_b[p]
            ratios.append(
                {"point": point, "a": round(qa, 4), "b": round(qb, 4), "rel_diff": rel(qa, qb)}
            )
    if not diffs:
        raise CaloquantError("the two reports have no grid point in common")
    out = stats(diffs)
    if ratios:
        out["ratio_to_reference"] = {"reference_model": ref_model, **stats(ratios)}
    probes = {}
    for d in ("fp32", "int8"):
        pa = [p[d] for p in (a.get("host_probe") or {}).get("rounds", []) if p.get(d)]
        pb = [p[d] for p in (b.get("host_probe") or {}).get("rounds", []) if p.get(d)]
        if pa and pb:
            probes[d] = {
                "median_a": float(np.median(pa)),
                "median_b": float(np.median(pb)),
                "rel_diff": rel(float(np.median(pa)), float(np.median(pb))),
                "spread_a": a["host_probe"].get(f"{d}_spread"),
                "spread_b": b["host_probe"].get(f"{d}_spread"),
            }
    if probes:
        out["host_probe"] = probes
        # a fixed workload that ran at different speeds: the machine changed, not the models
        out["host_changed"] = any(p["rel_diff"] > 0.10 for p in probes.values())
    return out
