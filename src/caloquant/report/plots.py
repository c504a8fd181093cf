"""Validation plots (PNG, HEP style via mplhep), drawn from a validation report dictionary.

Only the JSON structure of :class:`caloquant.physics.ValidationReport` is used, so the same
plots can be redrawn from a saved ``--json`` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# the matplotlib backend is the caller's (the command line picks Agg); figures closed after saving
import matplotlib.pyplot as plt
import mplhep as hep
import numpy as np
from matplotlib.colors import LogNorm

from caloquant.fileio import atomic_path

# ROOT style with fonts sized for multi-panel figures.
STYLE_OVERRIDES = {
    "font.size": 13,
    "axes.labelsize": 14,
    "axes.titlesize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.constrained_layout.use": False,
}
REF_STYLE = {"color": "black", "label": "reference"}
CAND_STYLE = {"color": "tab:red", "label": "candidate"}
AXIS_NAMES = {"x": "x (transverse) cell", "y": "y (transverse) cell", "z": "z (depth) layer"}


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write a figure as PNG atomically and close it (every plot of the reports)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _ep(label: str) -> str:
    return "all energies" if label == "all" else f"Ep {label} GeV"


def _ratio_axes(title: str) -> tuple[plt.Figure, plt.Axes, plt.Axes]:
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(8, 7), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    fig.subplots_adjust(hspace=0.05)
    ax.set_title(title, fontsize=14)
    return fig, ax, rax


def _ratio(
    rax: plt.Axes, x: np.ndarray, r: np.ndarray, re: np.ndarray, c: np.ndarray, ce: np.ndarray
) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c / r
        err = np.abs(ratio) * np.hypot(ce / c, re / r)
    rax.axhline(1.0, color="black", lw=1)
    rax.errorbar(x, ratio, yerr=err, fmt="o", ms=3, color=CAND_STYLE["color"])
    rax.set_ylabel("cand / ref")
    finite = ratio[np.isfinite(ratio)]
    if finite.size:
        lo, hi = np.quantile(finite, [0.02, 0.98])
        pad = max(0.02, 0.2 * (hi - lo))
        rax.set_ylim(min(lo, 1) - pad, max(hi, 1) + pad)


def shower_shapes(report: dict[str, Any], out: Path, bin_label: str = "all") -> list[Path]:
    b = next(x for x in report["bins"] if x["label"] == bin_label)
    paths = []
    for ax_name, prof in b["profiles"].items():
        for scale in ("linear", "log"):
            fig, ax, rax = _ratio_axes(f"Shower shape along {ax_name}, {_ep(bin_label)}")
            x = np.arange(len(prof["ref"]))
            r, re, c, ce = (np.asarray(prof[k]) for k in ("ref", "ref_err", "cand", "cand_err"))
            hep.histplot(r, np.arange(len(r) + 1) - 0.5, yerr=re, ax=ax, **REF_STYLE)
            hep.histplot(c, np.arange(len(c) + 1) - 0.5, yerr=ce, ax=ax, **CAND_STYLE)
            ax.set_yscale(scale)
            ax.set_ylabel("mean energy per cell slice [GeV]")
            ax.legend()
            _ratio(rax, x, r, re, c, ce)
            rax.set_xlabel(AXIS_NAMES[ax_name])
            paths.append(save_figure(fig, out / f"shape_{ax_name}_{scale}.png"))
    return paths


def sampling_fraction(report: dict[str, Any], out: Path) -> Path:
    rows = [b for b in report["bins"] if b["label"] != "all"]
    fig, ax, rax = _ratio_axes("Sampling fraction Ecal / Ep")
    x = np.array([(b["lo_gev"] + b["hi_gev"]) / 2 for b in rows])
    xerr = np.array([(b["hi_gev"] - b["lo_gev"]) / 2 for b in rows])
    sf = [b["sampling_fraction"] for b in rows]
    r, re = np.array([s["ref"] for s in sf]), np.array([s["ref_err"] for s in sf])
    c, ce = np.array([s["cand"] for s in sf]), np.array([s["cand_err"] for s in sf])
    ax.errorbar(x, r, xerr=xerr, yerr=re, fmt="s", **REF_STYLE)
    ax.errorbar(x, c, xerr=xerr, yerr=ce, fmt="o", **CAND_STYLE)
    ax.set_ylabel("<Ecal / Ep>")
    ax.legend()
    rax.axhline(1.0, color="black", lw=1)
    ratio = np.array([s["ratio"] for s in sf])
    rerr = np.array([s["ratio_err"] for s in sf])
    rax.errorbar(x, ratio, xerr=xerr, yerr=rerr, fmt="o", color=CAND_STYLE["color"])
    rax.set_ylabel("cand / ref")
    rax.set_xlabel("Ep [GeV]")
    return save_figure(fig, out / "sampling_fraction.png")


def energy_resolution(report: dict[str, Any], out: Path) -> Path:
    """sigma/mean of Ecal/Ep against the bin's mean Ep, with the fits a/sqrt(E) (+) b."""
    from caloquant.physics import resolution_model

    rows = [b for b in report["bins"] if b["label"] != "all"]
    fig, ax, rax = _ratio_axes("Energy resolution of Ecal/Ep")
    fit = report.get("resolution_fit") or {}
    for who, style, marker in (("ref", REF_STYLE, "s"), ("cand", CAND_STYLE, "o")):
        x = np.array([b["ep_mean_gev"][who] for b in rows])
        y = np.array([b["resolution"][who] for b in rows])
        ye = np.array([b["resolution"][f"{who}_err"] for b in rows])
        f = fit.get(who) or {}
        label = style["label"]
        if "a" in f:
            grid = np.geomspace(x.min(), x.max(), 200)
            ax.plot(grid, resolution_model(grid, f["a"], f["b"]), color=style["color"], lw=1.2)
            label += f": a = {f['a']:.3f}±{f['a_err']:.3f}, b = {f['b']:.4f}±{f['b_err']:.4f}"
        ax.errorbar(x, y, yerr=ye, fmt=marker, color=style["color"], label=label)
    ax.set_ylabel("σ / mean of Ecal/Ep")
    ax.legend(fontsize=10)
    rax.axhline(1.0, color="black", lw=1)
    x = np.array([b["ep_mean_gev"]["ref"] for b in rows])
    rax.errorbar(
        x,
        [b["resolution"]["ratio"] for b in rows],
        yerr=[b["resolution"]["ratio_err"] for b in rows],
        fmt="o",
        color=CAND_STYLE["color"],
    )
    rax.set_ylabel("cand / ref")
    rax.set_xlabel("Ep [GeV]")
    return save_figure(fig, out / "energy_resolution.png")


def projections(report: dict[str, Any], out: Path, bin_label: str = "all") -> Path:
    b = next(x for x in report["bins"] if x["label"] == bin_label)
    fig, axes = plt.subplots(3, 3, figsize=(16, 14), layout="constrained")
    names = {"xy": ("y", "x"), "xz": ("z", "x"), "yz": ("z", "y")}
    for row, (plane, data) in enumerate(b["projections"].items()):
        r, c = np.asarray(data["ref"]), np.asarray(data["cand"])
        vmax = max(r.max(), c.max(), 1e-12)
        vmin = max(
            vmax * 1e-5,
            min(
                r[r > 0].min() if (r > 0).any() else vmax, c[c > 0].min() if (c > 0).any() else vmax
            ),
        )
        for col, (img, title) in enumerate(((r, "reference"), (c, "candidate"))):
            im = axes[row, col].imshow(
                np.where(img > 0, img, np.nan),
                origin="lower",
                norm=LogNorm(vmin, vmax),
                cmap="viridis",
                aspect="auto",
            )
            axes[row, col].set_title(f"{title} {plane}")
            fig.colorbar(im, ax=axes[row, col], label="GeV per shower")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(r > vmax * 1e-4, c / r, np.nan)
        im = axes[row, 2].imshow(
            ratio, origin="lower", cmap="RdBu_r", vmin=0.8, vmax=1.2, aspect="auto"
        )
        axes[row, 2].set_title(f"cand / ref {plane}")
        fig.colorbar(im, ax=axes[row, 2])
        for col in range(3):
            axes[row, col].set_xlabel(names[plane][0])
            axes[row, col].set_ylabel(names[plane][1])
    fig.suptitle(
        f"Average-shower projections, {_ep(bin_label)}; projection MSE "
        f"{b['projection_mse']:.3g} (noise {b['projection_mse_noise']:.3g})"
    )
    return save_figure(fig, out / "projections.png")


def cell_spectrum(report: dict[str, Any], out: Path, bin_label: str = "all") -> Path:
    b = next(x for x in report["bins"] if x["label"] == bin_label)
    edges = 10.0 ** np.asarray(report["cell_spectrum_log10_edges"])
    r, c = (
        np.asarray(b["cell_spectrum"]["ref"], float),
        np.asarray(b["cell_spectrum"]["cand"], float),
    )
    fig, ax, rax = _ratio_axes("Cell-energy spectrum (cells above threshold)")
    hep.histplot(r / b["n_ref"], edges, yerr=np.sqrt(r) / b["n_ref"], ax=ax, **REF_STYLE)
    hep.histplot(c / b["n_cand"], edges, yerr=np.sqrt(c) / b["n_cand"], ax=ax, **CAND_STYLE)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("cells per shower")
    ax.legend()
    centers = np.sqrt(edges[1:] * edges[:-1])
    _ratio(
        rax,
        centers,
        r / b["n_ref"],
        np.sqrt(r) / b["n_ref"],
        c / b["n_cand"],
        np.sqrt(c) / b["n_cand"],
    )
    rax.set_xlabel("cell energy [GeV]")
    return save_figure(fig, out / "cell_spectrum.png")


FEATURE_LABELS = {
    "sf": "Ecal / Ep",
    "n_hits": "hit cells",
    "mean_x": "mean x [cell]",
    "mean_y": "mean y [cell]",
    "mean_z": "mean z [layer]",
    "std_x": "std x [cell]",
    "std_y": "std y [cell]",
    "std_z": "std z [layer]",
    "max_z": "layer of the hottest cell",
}


def features(report: dict[str, Any], out: Path) -> Path:
    hists = report.get("histograms", {})
    keys = [k for k in FEATURE_LABELS if k in hists]
    ncol = 3
    nrow = max(1, int(np.ceil(len(keys) / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(15, 4.5 * nrow))
    axes = np.atleast_1d(axes).ravel()
    sep = next(x for x in report["bins"] if x["label"] == "all").get("separation_power", {})
    for ax, k in zip(axes, keys):
        h = hists[k]
        edges = np.asarray(h["edges"])
        r, c = np.asarray(h["ref"], float), np.asarray(h["cand"], float)
        hep.histplot(r / r.sum(), edges, ax=ax, **REF_STYLE)
        hep.histplot(c / c.sum(), edges, ax=ax, **CAND_STYLE)
        ax.set_xlabel(FEATURE_LABELS[k])
        if k in sep:
            ax.set_title(
                f"sep. power {sep[k]['value']:.3g} (floor {sep[k]['floor']:.2g})", fontsize=11
            )
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    axes[0].legend()
    fig.tight_layout()
    return save_figure(fig, out / "features.png")


def roc(report: dict[str, Any], out: Path) -> Path | None:
    clf = report.get("classifier")
    if not clf:
        return None
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.plot(
        clf["roc"]["fpr"],
        clf["roc"]["tpr"],
        color=CAND_STYLE["color"],
        label=f"AUC {clf['auc']:.3f} +- {clf['auc_err']:.3f}",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="indistinguishable")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"Classifier test: ref vs cand (JSD {clf['jsd']:.3g})", fontsize=13)
    ax.legend(loc="lower right")
    return save_figure(fig, out / "classifier_roc.png")


def validation_plots(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write every validation plot into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with plt.style.context([hep.style.ROOT, STYLE_OVERRIDES]):
        paths = shower_shapes(report, out)
        if len(report["bins"]) > 1:
            paths.append(sampling_fraction(report, out))
            paths.append(energy_resolution(report, out))
        paths.append(projections(report, out))
        paths.append(cell_spectrum(report, out))
        paths.append(features(report, out))
        p = roc(report, out)
        if p:
            paths.append(p)
    return paths
