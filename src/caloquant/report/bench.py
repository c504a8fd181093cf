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
        parts = [
            f"{t} thr: " + ", ".join(f"{k} {v:g}" for k, v in row.items() if v)
            for t, row in c["gflops"].items()
        ]
        s += "\nmatmul ceilings [GFLOP/s]: " + "; ".join(parts)
        if rep.get("memory_bandwidth_gbs"):
            s += f"; copy bandwidth {rep['memory_bandwidth_gbs']:g} GB/s"
        for w in c.get("warnings", []):
            s += f"\n[yellow]warning: {w}[/]"
    la = m.get("load_before", {}).get("loadavg_1_5_15")
    if la:
        s += f"\nload average before the run: {la[0]:g} (1 min)"
    return s


def bench_results_table(rep: dict[str, Any]) -> Table:
    """One row per grid point."""
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
    prev = None
    for r in rep["results"]:
        lat = (
            f"{r['latency_ms_p50']:.2f}/{r['latency_ms_p99']:.2f}"
            if r.get("latency_ms_p50") is not None
            else ""
        )
        roof = _opt(
            100 * r["roofline_fraction"] if r.get("roofline_fraction") is not None else None, ".1f"
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
            roof,
            _other(r.get("other_load_pct"), rep),
        )
        prev = r["model"]
    t.caption = (
        "* threads x streams exceeds the usable cores (oversubscribed); other load: % of the CPUs "
        "used by other processes during the point"
    )
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
        t.add_column(
            f"x {eng['engine']} (measured, flat "
            f"{eng['flat_range_gev'][0]:g}-{eng['flat_range_gev'][1]:g} GeV)",
            justify="right",
        )
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
            _opt(
                100 * b["roofline_fraction"] if b.get("roofline_fraction") is not None else None,
                ".1f",
            ),
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
        t.add_row(*cells)
    t.caption = (
        f"Geant4: {g4['seconds_per_shower']:g} s/shower from the literature, NOT measured here "
        f"(see JSON monte_carlo). 'physics ok': the artifact's tolerance check; '-' = not checked."
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
