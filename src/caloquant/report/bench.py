"""Benchmark report: terminal tables (rich) and plots (PNG, mplhep style), drawn only from the
JSON structure of :func:`caloquant.bench.run_bench`, so a saved ``--json`` can be redrawn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

PREC_COLORS = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:purple", "int8": "tab:red"}
BACKEND_MARKERS = {"torch": "o", "openvino": "s", "onnxruntime": "^"}
CAT_COLORS = {"convolution": "tab:blue", "normalization": "tab:green", "activation": "tab:olive",
              "quantize/dequantize": "tab:red", "layout": "tab:purple", "other": "tab:gray"}


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
    s = f"{m['cpu_model']}, {m['usable_cores']} usable cores, flags: {' '.join(m['flags']) or '-'}\n{libs}"
    c = rep.get("ceilings")
    if c:
        parts = [f"{t} thr: " + ", ".join(f"{k} {v:g}" for k, v in row.items() if v) for t, row in c["gflops"].items()]
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
    t = Table(title="Inference speed (median of windows after warm-up, ± half their range, best window)")
    for col, j in (("model", "left"), ("backend", "left"), ("prec.", "left"), ("thr", "right"), ("str", "right"),
                   ("batch", "right"), ("showers/s", "right"), ("±", "right"), ("best", "right"), ("ms/shower", "right"),
                   ("p50/p99 ms (b=1)", "right"), ("peak RSS MB", "right"), ("% roof", "right"), ("other load", "right")):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    prev = None
    for r in rep["results"]:
        lat = f"{r['latency_ms_p50']:.2f}/{r['latency_ms_p99']:.2f}" if r.get("latency_ms_p50") is not None else ""
        roof = _opt(100 * r["roofline_fraction"] if r.get("roofline_fraction") is not None else None, ".1f")
        t.add_row(r["model"] if r["model"] != prev else "", r["backend"], r["precision"], str(r["threads"]),
                  str(r["streams"]) + ("*" if r.get("oversubscribed") else ""), str(r["batch"]),
                  f"{r['showers_per_s']:.1f}", f"{100 * r['spread']:.0f}%",
                  f"{r.get('showers_per_s_best', r['showers_per_s']):.1f}", f"{r['ms_per_shower']:.3f}", lat,
                  f"{r['peak_rss_mb']:.0f}", roof, _other(r.get("other_load_pct"), rep))
        prev = r["model"]
    t.caption = ("* threads x streams exceeds the usable cores (oversubscribed); other load: % of the CPUs used by "
                 "other processes during the point")
    if rep.get("contended_points"):
        t.caption += f"; [yellow]{rep['contended_points']} point(s) measured while other processes were busy[/]"
    return t


def bench_models_table(rep: dict[str, Any]) -> Table:
    """One row per model: size, memory, FLOPs, best point, roofline, speed-up against Geant4."""
    g4 = rep["monte_carlo"]["geant4_literature"]
    mc = rep["monte_carlo"].get("measured")
    t = Table(title="Models: best grid point")
    for col in ("model", "backend", "prec.", "physics ok", "file MB", "loaded RSS MB", "GFLOP/shower", "best showers/s",
                "at thr/str/batch", "% roof", "b=1 p50 ms", f"x Geant4 ({g4['seconds_per_shower']:g} s, lit.)"):
        t.add_column(col, justify="left" if col in ("model", "backend", "prec.") else "right")
    if mc:
        t.add_column("x MC (measured)", justify="right")
    eng = rep["monte_carlo"].get("engine")
    if eng:
        t.add_column(f"x {eng['engine']} (measured, flat {eng['flat_range_gev'][0]:g}-{eng['flat_range_gev'][1]:g} GeV)", justify="right")
    for m in rep["models"]:
        b = m["best"]
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[m.get("meets_tolerance")]
        lat = m.get("latency_batch1", {}).get("latency_ms_p50")
        ex = m.get("executed_precision")
        prec = m["precision"] if ex in (None, m["precision"]) else f"{m['precision']} (runs {ex})"
        cells = [m["model"], m["backend"], prec, ok, _mb(m["model_bytes"]), f"{m['model_rss_mb']:.0f}",
                 _opt((m["flops_per_shower"] or 0) / 1e9 if m["flops_per_shower"] else None, ".3f"),
                 f"{b['showers_per_s']:.1f}", f"{b['threads']}/{b['streams']}/{b['batch']}",
                 _opt(100 * b["roofline_fraction"] if b.get("roofline_fraction") is not None else None, ".1f"),
                 _opt(lat, ".2f"), f"{b['speedup_vs_geant4_literature']:,.0f}"]
        if mc:
            cells.append(f"{mc['seconds_per_shower'] * b['showers_per_s']:,.1f}")
        if eng:
            cells.append(f"{eng['flat_mean_s_per_shower'] * b['showers_per_s']:,.0f} "
                         f"+- {eng['flat_mean_s_per_shower_err'] * b['showers_per_s']:,.0f}")
        t.add_row(*cells)
    t.caption = (f"Geant4: {g4['seconds_per_shower']:g} s/shower from the literature, NOT measured here "
                 f"(see JSON monte_carlo). 'physics ok': the artifact's tolerance check; '-' = not checked.")
    return t


def bench_mc_table(rep: dict[str, Any]) -> Table | None:
    """The Monte Carlo engine timed in this run (`--mc`): seconds per shower per energy point."""
    eng = rep["monte_carlo"].get("engine")
    if not eng:
        return None
    t = Table(title=f"Monte Carlo measured in this run: {eng['engine']} ({eng['physics']}), one core")
    for col in ("energy GeV", "showers", "s/shower (mean)", "+- (sem)", "median", "CPU s/shower"):
        t.add_column(col, justify="right")
    for e, v in eng["per_energy"].items():
        if v.get("n", 0) < 1:
            t.add_row(e, "0", "-", "-", "-", "-")
            continue
        w, c = v["wall_s_per_shower"], v["cpu_s_per_shower"]
        t.add_row(e, str(v["n"]), f"{w['mean']:.3g}", f"{w['sem']:.2g}", f"{w['median']:.3g}", f"{c['mean']:.3g}")
    t.caption = (f"flat {eng['flat_range_gev'][0]:g}-{eng['flat_range_gev'][1]:g} GeV: {eng['flat_mean_s_per_shower']:.3g} "
                 f"+- {eng['flat_mean_s_per_shower_err']:.2g} s/shower; start-up {eng['setup_s']:.1f} s")
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
        t.add_row(m["model"], str(p["batch"]), str(p["threads"]), *(f"{p['shares_pct'][c]:.1f}" for c in cats),
                  _opt(p.get("coverage"), ".2f"), fused or "-")
    return t


# --- plots -----------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib.pyplot as plt  # the backend is the caller's (the command line picks Agg)

    return plt


def _throughput_plot(rep: dict[str, Any], out: Path) -> Path:
    from caloquant.report.plots import _save

    plt = _plt()
    res = rep["results"]
    batches = sorted({r["batch"] for r in res})
    configs = sorted({(r["threads"], r["streams"]) for r in res}, key=lambda ts: (ts[0] * ts[1], ts))
    labels = [f"{t}x{s}" for t, s in configs]
    ncol = min(2, len(batches))
    nrow = (len(batches) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.5 * ncol, 5.2 * nrow), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in res))
    for ax, b in zip(axes.flat, batches):
        for m in models:
            rows = {(r["threads"], r["streams"]): r for r in res if r["model"] == m and r["batch"] == b}
            if not rows:
                continue
            any_r = next(iter(rows.values()))
            ys = [rows[c]["showers_per_s"] if c in rows else float("nan") for c in configs]
            errs = [rows[c]["showers_per_s"] * rows[c]["spread"] if c in rows else 0 for c in configs]
            ax.errorbar(range(len(configs)), ys, yerr=errs, marker=BACKEND_MARKERS.get(any_r["backend"], "o"),
                        color=PREC_COLORS.get(any_r["precision"]), capsize=3, label=f"{m}")
        ax.set_xticks(range(len(configs)), labels)
        ax.set_xlabel("threads x streams")
        ax.set_ylabel("showers / s")
        ax.set_yscale("log")
        ax.set_title(f"batch {b}", fontsize=13)
    for ax in list(axes.flat)[len(batches):]:
        ax.axis("off")
    handles, lbls = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, lbls, loc="lower center", ncol=min(3, len(lbls)), fontsize=10, bbox_to_anchor=(0.5, -0.02 - 0.03 * ((len(lbls) - 1) // 3)))
    fig.suptitle("Throughput vs threads x streams (colour: precision, marker: backend)", fontsize=14)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(lbls) - 1) // 3), 1, 0.97))
    return _save(fig, out / "throughput_threads_streams.png")


def _speedup_plot(rep: dict[str, Any], out: Path) -> Path:
    """Bars per model: the speed-up against every Monte Carlo time known to the run, side by
    side: the literature figure (not measured), a time given by the user, and the engine
    timed in this run (flat-spectrum mean with its statistical error)."""
    from caloquant.report.plots import _save

    plt = _plt()
    ms = rep["models"]
    mcs = rep["monte_carlo"]
    g4, mc, eng = mcs["geant4_literature"], mcs.get("measured"), mcs.get("engine")
    series: list[tuple[str, float, float | None, dict[str, Any]]] = [
        (f"vs Geant4 {g4['seconds_per_shower']:g} s/shower (literature, not measured here)", g4["seconds_per_shower"], None, {})]
    if mc:
        series.append((f"vs Monte Carlo given ({mc['seconds_per_shower']:.3g} s/shower)", mc["seconds_per_shower"], None,
                       {"color": "white", "hatch": "//"}))
    if eng:
        lo, hi = eng["flat_range_gev"]
        series.append((f"vs {eng['engine']} measured in this run ({eng.get('physics', '')}, one core, mean over a flat "
                       f"{lo:g}-{hi:g} GeV spectrum: {eng['flat_mean_s_per_shower']:.3g} s/shower)",
                       eng["flat_mean_s_per_shower"], eng["flat_mean_s_per_shower_err"], {"color": "white", "hatch": "xx"}))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(ms) + 3), 5.8))
    x = np.arange(len(ms), dtype=float)
    w = 0.8 / len(series)
    colors = [PREC_COLORS.get(m["precision"], "grey") for m in ms]
    for k, (label, sec, err, style) in enumerate(series):
        vals = np.array([m["best"]["showers_per_s"] * sec for m in ms])
        errs = None if err is None else np.array([m["best"]["showers_per_s"] * err for m in ms])
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * w, vals, width=w, yerr=errs, capsize=3, edgecolor="black",
                      color=style.get("color", colors), hatch=style.get("hatch"), label=label)
        for bar, v in zip(bars, vals):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:,.0f}x", ha="center", va="bottom", fontsize=8, rotation=90 if len(series) > 1 else 0)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 4)  # room for the legend and the labels
    ax.set_xticks(x, [f"{m['model']}\n{m['backend']} {m['precision']}" for m in ms], rotation=20, ha="right", fontsize=9)
    ax.set_ylabel("speed-up (best grid point)")
    ax.set_title("Speed-up against Monte Carlo", fontsize=14)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out / "speedup_vs_monte_carlo.png")


def _profile_plot(rep: dict[str, Any], out: Path) -> Path | None:
    from caloquant.report.plots import _save

    plt = _plt()
    ms = [m for m in rep["models"] if m.get("profile")]
    if not ms:
        return None
    ncol = min(3, len(ms))
    nrow = (len(ms) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 5.0 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, ms):
        sh = {k: v for k, v in m["profile"]["shares_pct"].items() if v >= 0.05}
        ax.pie(list(sh.values()), labels=[f"{k}\n{v:.1f}%" if v >= 3 else "" for k, v in sh.items()],
               colors=[CAT_COLORS.get(k, "grey") for k in sh], startangle=90, counterclock=False,
               wedgeprops={"edgecolor": "white"}, textprops={"fontsize": 9})
        p = m["profile"]
        ax.set_title(f"{m['model']}\n{m['backend']} {m['precision']}, batch {p['batch']}, {p['threads']} thr", fontsize=10)
    for ax in list(axes.flat)[len(ms):]:
        ax.axis("off")
    from matplotlib.patches import Patch

    fig.legend([Patch(color=c) for c in CAT_COLORS.values()], list(CAT_COLORS), loc="lower center", ncol=6, fontsize=10)
    fig.suptitle("Per-op time profile", fontsize=14)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, out / "profile_pies.png")


def _roofline_plot(rep: dict[str, Any], out: Path) -> Path | None:
    from caloquant.report.plots import _save

    plt = _plt()
    ms = [m for m in rep["models"] if m["best"].get("roofline_fraction") is not None]
    if not ms:
        return None
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(ms) + 3), 5.0))
    fr = [100 * m["best"]["roofline_fraction"] for m in ms]
    bars = ax.bar(range(len(ms)), fr, color=[PREC_COLORS.get(m["precision"], "grey") for m in ms], edgecolor="black")
    for b, v in zip(bars, fr):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}%", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(ms)), [f"{m['model']}\n{m['backend']} {m['precision']}" for m in ms], rotation=20, ha="right", fontsize=9)
    ax.set_ylabel("% of the matmul ceiling (best point)")
    ax.set_title("Achieved fraction of the measured ceiling of each precision", fontsize=13)
    return _save(fig, out / "roofline_fraction.png")


def bench_plots(rep: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Throughput vs threads x streams per precision, speed-up bars, profile pies, roofline bars."""
    import mplhep as hep

    from caloquant.report.plots import STYLE_OVERRIDES

    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with plt.style.context([hep.style.ROOT, STYLE_OVERRIDES]):
        paths.append(_throughput_plot(rep, out))
        paths.append(_speedup_plot(rep, out))
        for p in (_profile_plot(rep, out), _roofline_plot(rep, out)):
            if p is not None:
                paths.append(p)
    return paths
