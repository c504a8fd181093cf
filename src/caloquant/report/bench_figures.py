"""Benchmark plots (PNG, mplhep style), drawn only from the JSON structure of
:func:`caloquant.bench.run_bench`, so a saved ``--json`` can be redrawn; the tables are in
``caloquant.report.bench``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.report.bench import cores_used

PREC_COLORS = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:purple", "int8": "tab:red"}
BACKEND_MARKERS = {"torch": "o", "openvino": "s", "onnxruntime": "^"}
CAT_COLORS = {
    "convolution": "tab:blue",
    "normalization": "tab:green",
    "activation": "tab:olive",
    "quantize/dequantize": "tab:red",
    "layout": "tab:purple",
    "other": "tab:gray",
}


def _plt() -> Any:
    import matplotlib.pyplot as plt  # the backend is the caller's (the command line picks Agg)

    return plt


def _throughput_plot(rep: dict[str, Any], out: Path) -> Path:
    from caloquant.report.plots import save_figure

    plt = _plt()
    res = rep["results"]
    batches = sorted({r["batch"] for r in res})
    configs = sorted(
        {(r["threads"], r["streams"]) for r in res}, key=lambda ts: (ts[0] * ts[1], ts)
    )
    labels = [f"{t}x{s}" for t, s in configs]
    ncol = min(2, len(batches))
    nrow = (len(batches) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(7.5 * ncol, 5.2 * nrow), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in res))
    for ax, b in zip(axes.flat, batches):
        for m in models:
            rows = {
                (r["threads"], r["streams"]): r for r in res if r["model"] == m and r["batch"] == b
            }
            if not rows:
                continue
            any_r = next(iter(rows.values()))
            ys = [rows[c]["showers_per_s"] if c in rows else float("nan") for c in configs]
            errs = [
                rows[c]["showers_per_s"] * rows[c]["spread"] if c in rows else 0 for c in configs
            ]
            ax.errorbar(
                range(len(configs)),
                ys,
                yerr=errs,
                marker=BACKEND_MARKERS.get(any_r["backend"], "o"),
                color=PREC_COLORS.get(any_r["precision"]),
                capsize=3,
                label=f"{m}",
            )
        ax.set_xticks(range(len(configs)), labels)
        ax.set_xlabel("threads x streams")
        ax.set_ylabel("showers / s")
        ax.set_yscale("log")
        ax.set_title(f"batch {b}", fontsize=13)
    for ax in list(axes.flat)[len(batches) :]:
        ax.axis("off")
    handles, lbls = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        lbls,
        loc="lower center",
        ncol=min(3, len(lbls)),
        fontsize=10,
        bbox_to_anchor=(0.5, -0.02 - 0.03 * ((len(lbls) - 1) // 3)),
    )
    fig.suptitle(
        "Throughput vs threads x streams (colour: precision, marker: backend)", fontsize=14
    )
    fig.tight_layout(rect=(0, 0.06 + 0.03 * ((len(lbls) - 1) // 3), 1, 0.97))
    return save_figure(fig, out / "throughput_threads_streams.png")


def _speedup_plot(rep: dict[str, Any], out: Path) -> Path:
    """Bars per model: the speed-up against every Monte Carlo time known to the run, side by
    side: the literature figure (not measured), a time given by the user, and the engine
    timed in this run (flat-spectrum mean with its statistical error)."""
    from caloquant.report.plots import save_figure

    plt = _plt()
    ms = rep["models"]
    mcs = rep["monte_carlo"]
    g4, mc, eng = mcs["geant4_literature"], mcs.get("measured"), mcs.get("engine")
    ones = [1.0] * len(ms)
    series: list[tuple[str, float, float | None, dict[str, Any], list[float]]] = [
        (
            f"vs Geant4 {g4['seconds_per_shower']:g} s/shower (literature, not measured here)",
            g4["seconds_per_shower"],
            None,
            {},
            ones,
        )
    ]
    if mc:
        series.append(
            (
                f"vs Monte Carlo given ({mc['seconds_per_shower']:.3g} s/shower)",
                mc["seconds_per_shower"],
                None,
                {"color": "white", "hatch": "//"},
                ones,
            )
        )
    if eng:
        lo, hi = eng["flat_range_gev"]
        series.append(
            (
                f"vs {eng['engine']} measured in this run ({eng.get('physics', '')}, flat "
                f"{lo:g}-{hi:g} GeV: {eng['flat_mean_s_per_shower']:.3g} s/shower on one core;"
                "\nmodel on its best point's threads x streams)",
                eng["flat_mean_s_per_shower"],
                eng["flat_mean_s_per_shower_err"],
                {"color": "white", "hatch": "xx"},
                ones,
            )
        )
        series.append(
            (
                f"vs {eng['engine']} per core (showers/s per core used against "
                f"{eng['engine']}'s on its one core)",
                eng["flat_mean_s_per_shower"],
                eng["flat_mean_s_per_shower_err"],
                {"color": "white", "hatch": ".."},
                [1 / cores_used(rep, m["best"]) for m in ms],
            )
        )
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(ms) + 3), 5.8))
    x = np.arange(len(ms), dtype=float)
    w = 0.8 / len(series)
    colors = [PREC_COLORS.get(m["precision"], "grey") for m in ms]
    for k, (label, sec, err, style, scale) in enumerate(series):
        sps = np.array([m["best"]["showers_per_s"] for m in ms]) * np.array(scale)
        vals = sps * sec
        errs = None if err is None else sps * err
        bars = ax.bar(
            x + (k - (len(series) - 1) / 2) * w,
            vals,
            width=w,
            yerr=errs,
            capsize=3,
            edgecolor="black",
            color=style.get("color", colors),
            hatch=style.get("hatch"),
            label=label,
        )
        for bar, v in zip(bars, vals):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                v,
                f"{v:,.0f}x",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90 if len(series) > 1 else 0,
            )
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 4)  # room for the legend and the labels
    ax.set_xticks(
        x,
        [f"{m['model']}\n{m['backend']} {m['precision']}" for m in ms],
        rotation=20,
        ha="right",
        fontsize=9,
    )
    ax.set_ylabel("speed-up (best grid point)")
    ax.set_title("Speed-up against Monte Carlo", fontsize=14)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, out / "speedup_vs_monte_carlo.png")


def _profile_plot(rep: dict[str, Any], out: Path) -> Path | None:
    from caloquant.report.plots import save_figure

    plt = _plt()
    ms = [m for m in rep["models"] if m.get("profile")]
    if not ms:
        return None
    ncol = min(3, len(ms))
    nrow = (len(ms) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 5.0 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, ms):
        sh = {k: v for k, v in m["profile"]["shares_pct"].items() if v >= 0.05}
        ax.pie(
            list(sh.values()),
            labels=[f"{k}\n{v:.1f}%" if v >= 3 else "" for k, v in sh.items()],
            colors=[CAT_COLORS.get(k, "grey") for k in sh],
            startangle=90,
            counterclock=False,
            wedgeprops={"edgecolor": "white"},
            textprops={"fontsize": 9},
        )
        p = m["profile"]
        ax.set_title(
            f"{m['model']}\n{m['backend']} {m['precision']}, batch {p['batch']}, "
            f"{p['threads']} thr",
            fontsize=10,
        )
    for ax in list(axes.flat)[len(ms) :]:
        ax.axis("off")
    from matplotlib.patches import Patch

    fig.legend(
        [Patch(color=c) for c in CAT_COLORS.values()],
        list(CAT_COLORS),
        loc="lower center",
        ncol=6,
        fontsize=10,
    )
    fig.suptitle("Per-op time profile", fontsize=14)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out / "profile_pies.png")


def _roofline_plot(rep: dict[str, Any], out: Path) -> Path | None:
    """Bars per model: the best point's fraction of the matmul ceiling of the model's own engine
    and precision. A model without such a ceiling, or above it (a fraction above 1 is a fault of
    the ceiling, never drawn), is named under the plot instead."""
    from caloquant.report.plots import save_figure

    plt = _plt()

    def ok(m: dict[str, Any]) -> bool:
        f = m["best"].get("roofline_fraction")
        return f is not None and 0 < f <= 1

    ms = [m for m in rep["models"] if ok(m)]
    if not ms:
        return None
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(ms) + 3), 5.0))
    fr = [100 * m["best"]["roofline_fraction"] for m in ms]
    bars = ax.bar(
        range(len(ms)),
        fr,
        color=[PREC_COLORS.get(m["precision"], "grey") for m in ms],
        edgecolor="black",
    )
    for b, v in zip(bars, fr):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}%", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(
        range(len(ms)),
        [
            f"{m['model']}\n{m['backend']} {m['precision']}"
            + (
                f"\nceiling: {m['best']['ceiling_engine']}"
                if m["best"].get("ceiling_engine")
                else ""
            )
            for m in ms
        ],
        rotation=20,
        ha="right",
        fontsize=9,
    )
    ax.set_ylim(0, 110)
    ax.set_ylabel("% of the engine's matmul ceiling (best point)")
    ax.set_title("Achieved fraction of the ceiling of each engine and precision", fontsize=13)
    left_out = [m["model"] for m in rep["models"] if not ok(m)]
    if left_out:
        fig.text(
            0.01,
            0.01,
            "no fraction (no ceiling of their engine and precision, or above it): "
            + ", ".join(left_out),
            fontsize=8,
        )
    return save_figure(fig, out / "roofline_fraction.png")


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
