"""Benchmark report: terminal tables (rich), drawn only from the JSON structure of
:func:`caloquant.bench.run_bench`, so a saved ``--json`` can be redrawn; the plots (PNG, mplhep
style) are in ``caloquant.report.bench_figures``."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1024**2:.2f}"


def _opt(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _other(pct: float | None, rep: dict[str, Any]) -> str:
    if pct is None:
        return "-"
    limit = rep.get("config", {}).get("max_other_load_pct", 25.0)
    return f"[yellow]{pct:.0f}%[/]" if pct > limit else f"{pct:.0f}%"


def bench_machine_line(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v and k != "psutil")
    s = (
        f"{m['cpu_model']}, {m['usable_cores']} usable cores, "
        f"flags: {' '.join(m['flags']) or '-'}\n{libs}"
    )
    c = rep.get("ceilings")
    if c:
        # per engine (older reports: torch's only, under "gflops")
        engines = c.get("engines") or {"torch": {"gflops": c["gflops"]}}
        for eng, e in engines.items():
            parts = [
                f"{t} thr: " + ", ".join(f"{k} {v:g}" for k, v in row.items() if v)
                for t, row in e["gflops"].items()
            ]
            s += f"\n{eng} matmul ceilings [GFLOP/s, int8 GOP/s]: " + "; ".join(parts)
            s += "".join(f"; {d}: {why}" for d, why in e.get("missing", {}).items())
        if rep.get("memory_bandwidth_gbs"):
            s += f"; copy bandwidth {rep['memory_bandwidth_gbs']:g} GB/s"
        for w in c.get("warnings", []):
            s += f"\n[yellow]warning: {w}[/]"
    la = m.get("load_before", {}).get("loadavg_1_5_15")
    if la:
        s += f"\nload average before the run: {la[0]:g} (1 min)"
    return s


def _roof(r: dict[str, Any]) -> str:
    """% of the ceiling of the row's own engine and precision; '-' without one, and never a
    fraction above 1 (an older report may hold one: not shown)."""
    f = r.get("roofline_fraction")
    return "-" if f is None or f > 1 else f"{100 * f:.1f}"


def cores_used(rep: dict[str, Any], r: dict[str, Any]) -> int:
    """The cores a row (or a model's best point) ran on: threads x streams as the engine applied
    them, at most the usable cores (a report from before ``cores_used``: threads x streams)."""
    return int(
        r.get("cores_used") or min(r["threads"] * r["streams"], rep["machine"]["usable_cores"])
    )


def mc_per_core(rep: dict[str, Any], r: dict[str, Any]) -> tuple[float, float] | None:
    """Speed-up per core against the Monte Carlo engine timed in the run, and its error: the
    row's own (``speedup_vs_mc_engine_per_core``), or from the flat-spectrum time for a report
    written before it; None without a timed engine."""
    if r.get("speedup_vs_mc_engine_per_core") is not None:
        return r["speedup_vs_mc_engine_per_core"], r.get("speedup_vs_mc_engine_per_core_err") or 0
    eng = rep["monte_carlo"].get("engine")
    if not eng:
        return None
    f = r["showers_per_s"] * eng.get("cores", 1) / cores_used(rep, r)
    return eng["flat_mean_s_per_shower"] * f, eng["flat_mean_s_per_shower_err"] * f


def _per_core(rep: dict[str, Any], r: dict[str, Any]) -> str:
    v = mc_per_core(rep, r)
    return "-" if v is None else f"{v[0]:,.0f} +- {v[1]:,.0f}"


def _roof_notes(rows: list[dict[str, Any]]) -> str:
    """The distinct reasons a row has no roofline fraction (a model above its ceiling first)."""
    notes = dict.fromkeys(
        f"{r['model']}: {r['roofline_note']}"
        for r in sorted(rows, key=lambda r: "above" not in (r.get("roofline_note") or ""))
        if r.get("roofline_note")
    )
    return "; ".join(list(notes)[:4]) + (f"; ... ({len(notes) - 4} more)" if len(notes) > 4 else "")


def bench_results_table(rep: dict[str, Any]) -> Table:
    """One row per grid point."""
    eng = rep["monte_carlo"].get("engine")
    t = Table(
        title="Inference speed (median of windows after warm-up, ± half their range, best window)"
    )
    for col, j in (
        ("model", "left"),
        ("backend", "left"),
        ("prec.", "left"),
        ("thr", "right"),
        ("str", "right"),
        ("batch", "right"),
        ("showers/s", "right"),
        ("±", "right"),
        ("best", "right"),
        ("ms/shower", "right"),
        ("p50/p99 ms (b=1)", "right"),
        ("peak RSS MB", "right"),
        ("% roof", "right"),
        ("other load", "right"),
    ):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    if eng:
        t.add_column(f"x {eng['engine']} per core", justify="right")
    prev = None
    for r in rep["results"]:
        lat = (
            f"{r['latency_ms_p50']:.2f}/{r['latency_ms_p99']:.2f}"
            if r.get("latency_ms_p50") is not None
            else ""
        )
        t.add_row(
            r["model"] if r["model"] != prev else "",
            r["backend"],
            r["precision"],
            str(r["threads"]),
            str(r["streams"]) + ("*" if r.get("oversubscribed") else ""),
            str(r["batch"]),
            f"{r['showers_per_s']:.1f}",
            f"{100 * r['spread']:.0f}%",
            f"{r.get('showers_per_s_best', r['showers_per_s']):.1f}",
            f"{r['ms_per_shower']:.3f}",
            lat,
            f"{r['peak_rss_mb']:.0f}",
            _roof(r),
            _other(r.get("other_load_pct"), rep),
            *([_per_core(rep, r)] if eng else []),
        )
        prev = r["model"]
    t.caption = (
        "* threads x streams exceeds the usable cores (oversubscribed); other load: % of the CPUs "
        "used by other processes during the point; % roof: of the matmul ceiling of the row's "
        "own engine and precision at the cores it used ('-': none)"
    )
    if eng:
        t.caption += (
            f"; x {eng['engine']} per core: showers/s per core used (threads x streams, at most "
            f"the usable cores) against {eng['engine']}'s showers/s on its one core, flat "
            "spectrum, error from the Monte Carlo timing"
        )
    if notes := _roof_notes(rep["results"]):
        t.caption += f"; no roofline fraction: {notes}"
    if rep.get("contended_points"):
        t.caption += (
            f"; [yellow]{rep['contended_points']} point(s) measured while other processes "
            "were busy[/]"
        )
    return t


def bench_models_table(rep: dict[str, Any]) -> Table:
    """One row per model: size, memory, FLOPs, best point, roofline, speed-up against Geant4."""
    g4 = rep["monte_carlo"]["geant4_literature"]
    mc = rep["monte_carlo"].get("measured")
    t = Table(title="Models: best grid point")
    for col in (
        "model",
        "backend",
        "prec.",
        "physics ok",
        "file MB",
        "loaded RSS MB",
        "GFLOP/shower",
        "best showers/s",
        "at thr/str/batch",
        "% roof",
        "b=1 p50 ms",
        f"x Geant4 ({g4['seconds_per_shower']:g} s, lit.)",
    ):
        t.add_column(col, justify="left" if col in ("model", "backend", "prec.") else "right")
    if mc:
        t.add_column("x MC (measured)", justify="right")
    eng = rep["monte_carlo"].get("engine")
    if eng:
        flat = f"flat {eng['flat_range_gev'][0]:g}-{eng['flat_range_gev'][1]:g} GeV"
        t.add_column(
            f"x {eng['engine']} (measured, {flat}; model at thr x str cores, MC on 1 core)",
            justify="right",
        )
        t.add_column(f"x {eng['engine']} per core (measured, {flat})", justify="right")
    for m in rep["models"]:
        b = m["best"]
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[m.get("meets_tolerance")]
        lat = m.get("latency_batch1", {}).get("latency_ms_p50")
        ex = m.get("executed_precision")
        prec = m["precision"] if ex in (None, m["precision"]) else f"{m['precision']} (runs {ex})"
        cells = [
            m["model"],
            m["backend"],
            prec,
            ok,
            _mb(m["model_bytes"]),
            f"{m['model_rss_mb']:.0f}",
            _opt((m["flops_per_shower"] or 0) / 1e9 if m["flops_per_shower"] else None, ".3f"),
            f"{b['showers_per_s']:.1f}",
            f"{b['threads']}/{b['streams']}/{b['batch']}",
            _roof(b),
            _opt(lat, ".2f"),
            f"{b['speedup_vs_geant4_literature']:,.0f}",
        ]
        if mc:
            cells.append(f"{mc['seconds_per_shower'] * b['showers_per_s']:,.1f}")
        if eng:
            cells.append(
                f"{eng['flat_mean_s_per_shower'] * b['showers_per_s']:,.0f} "
                f"+- {eng['flat_mean_s_per_shower_err'] * b['showers_per_s']:,.0f}"
            )
            cells.append(_per_core(rep, b))
        t.add_row(*cells)
    t.caption = (
        f"Geant4: {g4['seconds_per_shower']:g} s/shower from the literature, NOT measured here "
        f"(see JSON monte_carlo). 'physics ok': the artifact's tolerance check; '-' = not checked. "
        "% roof: of the matmul ceiling of the model's own engine and precision ('-': none)."
    )
    if eng:
        t.caption += (
            f" x {eng['engine']}: the model at its best point's threads x streams against "
            f"{eng['engine']} on one core; per core: showers/s per core used against "
            f"{eng['engine']}'s showers/s per core."
        )
    return t


def bench_mc_table(rep: dict[str, Any]) -> Table | None:
    """The Monte Carlo engine timed in this run (`--mc`): seconds per shower per energy point."""
    eng = rep["monte_carlo"].get("engine")
    if not eng:
        return None
    t = Table(
        title=f"Monte Carlo measured in this run: {eng['engine']} ({eng['physics']}), one core"
    )
    for col in ("energy GeV", "showers", "s/shower (mean)", "+- (sem)", "median", "CPU s/shower"):
        t.add_column(col, justify="right")
    for e, v in eng["per_energy"].items():
        if v.get("n", 0) < 1:
            t.add_row(e, "0", "-", "-", "-", "-")
            continue
        w, c = v["wall_s_per_shower"], v["cpu_s_per_shower"]
        t.add_row(
            e,
            str(v["n"]),
            f"{w['mean']:.3g}",
            f"{w['sem']:.2g}",
            f"{w['median']:.3g}",
            f"{c['mean']:.3g}",
        )
    t.caption = (
        f"flat {eng['flat_range_gev'][0]:g}-{eng['flat_range_gev'][1]:g} GeV: "
        f"{eng['flat_mean_s_per_shower']:.3g} "
        f"+- {eng['flat_mean_s_per_shower_err']:.2g} s/shower; start-up {eng['setup_s']:.1f} s"
    )
    return t


def bench_profile_table(rep: dict[str, Any]) -> Table | None:
    rows = [m for m in rep["models"] if m.get("profile")]
    if not rows:
        return None
    cats = list(rows[0]["profile"]["shares_pct"])
    t = Table(title="Where the time goes (% of op time, one stream)")
    for col in ("model", "batch", "thr", *cats, "coverage", "fused ops"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in rows:
        p = m["profile"]
        fused = ", ".join(f"{k} {v}" for k, v in (p.get("fused_ops") or {}).items())
        t.add_row(
            m["model"],
            str(p["batch"]),
            str(p["threads"]),
            *(f"{p['shares_pct'][c]:.1f}" for c in cats),
            _opt(p.get("coverage"), ".2f"),
            fused or "-",
        )
    return t
