"""Tables of a whole study (`caloquant run`): one row per model variant, drawn from the
validation reports (``caloquant.physics`` JSON), the artifacts' manifests and the benchmark
JSON. They print on the terminal (rich) and become the HTML report's tables."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from caloquant.report.bench import mc_per_core


def _pm(v: float | None, e: float | None, fmt: str = ".4f") -> str:
    if v is None:
        return "-"
    return f"{v:{fmt}}" if e is None else f"{v:{fmt}}±{e:{fmt}}"


def _flag(ok: bool | None) -> str:
    return {True: "[green]yes[/]", False: "[bold red]NO[/]", None: "-"}[ok]


def _allbin(rep: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in rep["bins"] if b["label"] == "all")


def _styled(pull: float, text: str) -> str:
    a = abs(pull)
    return f"[{'red' if a > 5 else 'yellow' if a > 3 else 'green'}]{text}[/]"


def classifier_aucs(rep: dict[str, Any]) -> dict[str, Any]:
    """A validation report's classifier AUCs for a study row: the feature classifier's
    (``auc_vs_reference``) and the CaloChallenge protocol's (``auc_cc_vs_reference``: low- and
    high-level, each with its error), None where not run."""
    cc = rep.get("classifier_calochallenge") or {}
    return {
        "auc_vs_reference": (rep.get("classifier") or {}).get("auc"),
        "auc_cc_vs_reference": {
            lvl: {"auc": cc[lvl]["auc"], "auc_err": cc[lvl]["auc_err"]}
            for lvl in ("low_level", "high_level")
            if lvl in cc
        }
        or None,
    }


def _aucs(r: dict[str, Any]) -> str:
    cc = r.get("auc_cc_vs_reference")
    if not cc:
        return "-"
    return " / ".join(f"{cc[lvl]['auc']:.3f}" for lvl in ("low_level", "high_level") if lvl in cc)


def summary_table(rows: list[dict[str, Any]], tolerance: dict[str, float], mc_label: str) -> Table:
    """Fast and right? Speed from one benchmark run, physics against fp32 (paired) and the
    reference."""
    t = Table(title="Fast and right? Every variant on this CPU")
    for col in (
        "model",
        "variant",
        "executed",
        "best showers/s",
        "x torch fp32",
        f"x {mc_label} (model on thr x str cores)",
        f"x {mc_label} per core",
        "size vs fp32",
        "worst |Ecal/Ecal_fp32 - 1|",
        "within tolerance",
        f"AUC vs {mc_label} (low / high)",
    ):
        t.add_column(col, justify="left" if col in ("model", "variant", "executed") else "right")
    for r in rows:
        t.add_row(
            r["model"],
            r["variant"],
            r["executed"],
            f"{r['showers_per_s']:.1f}",
            f"{r['speedup_vs_fp32']:.2f}x",
            _pm(r["speedup_vs_mc"], r["speedup_vs_mc_err"], ",.0f") if r["speedup_vs_mc"] else "-",
            _pm(r.get("speedup_vs_mc_per_core"), r.get("speedup_vs_mc_per_core_err"), ",.0f"),
            f"{r['size_ratio']:.2f}x",
            "-" if r["worst_ecal_dev"] is None else f"{r['worst_ecal_dev']:.4f}",
            _flag(r["within_tolerance"]),
            _aucs(r),
        )
    t.caption = (
        "Within tolerance: the tuner's paired check on its evaluation set and this run's "
        f"paired validation against fp32 (|Ecal ratio - 1| <= {tolerance['ecal_rel']} + 2 "
        "sigma in every energy bin). Speeds: best grid point of the benchmark, all "
        f"variants in the same run. x {mc_label}: the variant on the cores of its best point "
        "(threads x streams) against the Monte Carlo on one core; per core: showers/s per core "
        "used against the Monte Carlo's showers/s per core. AUC: the CaloChallenge "
        "classifiers (low level: all cells; high level: shower features) against the Monte "
        "Carlo's showers; 0.5 = indistinguishable."
    )
    return t


def speed_table(bench: dict[str, Any], timed: list[tuple[str, dict[str, Any]]]) -> Table:
    """Paper Table 1: inference time per shower and speed-ups, with the Monte Carlo measured here.
    ``timed``: (label, the benchmark's entry of that model), matched by the caller by the file
    timed; the first is the base of the speed-ups."""
    eng = bench["monte_carlo"].get("engine")
    g4 = bench["monte_carlo"]["geant4_literature"]
    base = timed[0][1]["best"]["showers_per_s"]
    t = Table(title="Inference time and speed-up (paper Table 1)")
    cols = [
        "variant",
        "backend",
        "precision",
        "ms/shower (best batch)",
        "latency b=1 p50 ms",
        "best at thr/str/batch",
        "x first variant",
    ]
    if eng:
        lo, hi = eng["flat_range_gev"][0], eng["flat_range_gev"][1]
        cols.append(f"x {eng['engine']} measured (flat {lo:g}-{hi:g} GeV; thr x str cores)")
        cols.append(f"x {eng['engine']} per core")
    cols.append(f"x Geant4 lit. ({g4['seconds_per_shower']:g} s)")
    for c in cols:
        t.add_column(c, justify="left" if c in ("variant", "backend", "precision") else "right")
    if eng:
        t.add_row(
            f"{eng['engine']} Monte Carlo",
            "C++" if eng["engine"] == "geant4" else "numba",
            "fp64",
            f"{1000 * eng['flat_mean_s_per_shower']:,.0f}",
            "-",
            "1 core",
            "-",
            "1",
            "1",
            "-",
        )
    for lab, m in timed:
        b = m["best"]
        lat = (m.get("latency_batch1") or {}).get("latency_ms_p50")
        cells = [
            lab,
            m["backend"],
            m.get("executed_precision") or m["precision"],
            f"{b['ms_per_shower']:.3f}",
            "-" if lat is None else f"{lat:.2f}",
            f"{b['threads']}/{b['streams']}/{b['batch']}",
            f"{b['showers_per_s'] / base:.2f}x",
        ]
        if eng:
            cells.append(
                f"{eng['flat_mean_s_per_shower'] * b['showers_per_s']:,.0f}"
                f"±{eng['flat_mean_s_per_shower_err'] * b['showers_per_s']:,.0f}"
            )
            # showers/s per core used (best point, at most the usable cores) vs the MC's one core
            pc = mc_per_core(bench, b) or (0.0, 0.0)
            cells.append(f"{pc[0]:,.0f}±{pc[1]:,.0f}")
        cells.append(f"{b['speedup_vs_geant4_literature']:,.0f}")
        t.add_row(*cells)
    t.caption = (
        "Monte Carlo: one shower at a time on one core after a warm-up, mean over a flat "
        "spectrum of the timed energy points (trapezoid), error from the spread of the "
        "timed showers; the model runs on the cores of its best point (threads x streams, at "
        "most the usable cores), and 'per core' divides its speed-up by those cores; "
        "the literature figure is quoted, not measured here."
    )
    return t


def moments_summary_table(items: list[tuple[str, dict[str, Any]]], title: str) -> Table:
    """Paper Table 3 in one view: shifts of the shower position and width, cand - ref (cells)."""
    t = Table(title=title)
    t.add_column("comparison")
    for ax in ("x", "y", "z"):
        t.add_column(f"Δ mean {ax}", justify="right")
        t.add_column(f"Δ width {ax}", justify="right")
    for name, rep in items:
        b = _allbin(rep)
        cells = [name]
        for ax in ("x", "y", "z"):
            for k in ("mean", "std"):
                c = b["moments"][ax][k]
                cells.append(_styled(c["pull"], f"{c['shift']:+.3f}±{c['shift_err']:.3f}"))
        t.add_row(*cells)
    t.caption = (
        "cells (layers for z); width = <sqrt M2> per shower; colour: |pull| <= 3 green, "
        "<= 5 yellow, else red"
    )
    return t


def metric_table(items: list[tuple[str, dict[str, Any]]]) -> Table:
    """Paper Table 4: the single validation number (the 3DGAN authors' optimisation metric)."""
    t = Table(
        title="The single validation number (paper Table 4: the authors' optimisation "
        "metric, lower is better)"
    )
    for c in ("comparison", "total", "position", "profile", "sampling fraction"):
        t.add_column(c, justify="left" if c == "comparison" else "right")
    for name, rep in items:
        m = rep.get("optimisation_metric") or {}
        if "total" not in m:
            t.add_row(name, "-", "-", "-", "-")
            continue
        t.add_row(
            name, *(f"{m[k]:.4f}" for k in ("total", "position", "profile", "sampling_fraction"))
        )
    return t


def pixelwise_table(items: list[tuple[str, dict[str, Any]]]) -> Table:
    """Paper Table 5: the pixel-wise comparison with fp32 on the same latents."""
    t = Table(title="Pixel-wise comparison with fp32, same latent vectors (paper Table 5)")
    for c in (
        "variant",
        "pixel-wise mean [GeV]",
        "pixel-wise std [GeV]",
        "Ecal ratio to fp32",
        "proj. MSE (noise)",
    ):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for name, rep in items:
        b = _allbin(rep)
        p, sf = b["pixelwise"], b["sampling_fraction"]
        t.add_row(
            name,
            f"{p['mean']:.4g}",
            f"{p['std']:.3g}",
            _styled(sf["pull"], _pm(sf["ratio"], sf["ratio_err"], ".5f")),
            f"{b['projection_mse']:.3g} ({b['projection_mse_noise']:.2g})",
        )
    t.caption = (
        "pixel-wise: mean over showers of the summed |cell difference|; proj. MSE noise: "
        "its statistical floor"
    )
    return t


def sampling_fraction_table(items: list[tuple[str, dict[str, Any]]]) -> Table:
    """Sampling fraction Ecal/Ep against Ep: the ratio cand/ref in each energy bin."""
    labels = [b["label"] for b in items[0][1]["bins"]]
    t = Table(title="Sampling fraction Ecal/Ep, cand / ref per Ep bin [GeV]")
    t.add_column("comparison")
    for lab in labels:
        t.add_column(lab, justify="right")
    for name, rep in items:
        by = {b["label"]: b["sampling_fraction"] for b in rep["bins"]}
        t.add_row(
            name,
            *(
                _styled(by[lab]["pull"], _pm(by[lab]["ratio"], by[lab]["ratio_err"], ".4f"))
                if lab in by
                else "-"
                for lab in labels
            ),
        )
    ref = items[0][1]["bins"]
    t.caption = "reference <Ecal/Ep>: " + ", ".join(
        f"{b['label']}: {b['sampling_fraction']['ref']:.5f}" for b in ref
    )
    return t


def modern_table(items: list[tuple[str, dict[str, Any]]]) -> Table:
    """Modern metrics: classifier AUC, FPD/KPD, the largest separation power."""
    t = Table(title="Modern metrics against the reference")
    for c in ("comparison", "classifier AUC", "FPD", "KPD", "largest separation power (feature)"):
        t.add_column(c, justify="left" if c == "comparison" else "right")
    for name, rep in items:
        clf, fpd, kpd = rep.get("classifier"), rep.get("fpd"), rep.get("kpd")
        sep = _allbin(rep).get("separation_power") or {}
        k = max(sep, key=lambda s: sep[s]["value"]) if sep else None
        t.add_row(
            name,
            _pm(clf["auc"], clf["auc_err"], ".3f") if clf else "-",
            _pm(fpd["value"], fpd["err"], ".3g") if fpd else "-",
            _pm(kpd["value"], kpd["err"], ".2g") if kpd else "-",
            f"{sep[k]['value']:.3f} ({k}; floor {sep[k]['floor']:.3f})" if k else "-",
        )
    t.caption = (
        "AUC 0.5: indistinguishable; FPD/KPD 0: same distribution; separation power 0: "
        "identical histograms"
    )
    return t


def sizes_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Model sizes")
    for c in ("model", "variant", "file MB", "vs fp32", "int8 layers", "float layers"):
        t.add_column(c, justify="left" if c in ("model", "variant") else "right")
    for r in rows:
        lp = r.get("layer_precisions") or {}
        n8 = sum(v == "int8" for v in lp.values())
        t.add_row(
            r["model"],
            r["variant"],
            f"{r['bytes'] / 1e6:.2f}",
            f"{r['size_ratio']:.2f}x",
            str(n8) if lp else "-",
            str(len(lp) - n8) if lp else "all",
        )
    return t


def tuner_table(
    name: str, manifest: dict[str, Any], trials: list[dict[str, Any]], chosen: str
) -> Table:
    """The tuner's trials (its frontier of speed against physics) and the per-layer decision."""
    t = Table(
        title=f"Tuner: {name} ({manifest['backend']} {manifest['precision']}, "
        f"{manifest['recipe']} recipe)"
    )
    for c in (
        "trial",
        "passes",
        "worst |Ecal ratio - 1|",
        "worst moment shift",
        "showers/s",
        "int8 layers",
        "",
    ):
        t.add_column(c, justify="left" if c in ("trial", "") else "right")
    for tr in trials:
        ph, sp = tr.get("physics") or {}, tr.get("speed") or {}
        units = (tr.get("config") or {}).get("int8_units")
        t.add_row(
            tr["name"],
            _flag(tr["passes"]),
            _pm(ph.get("worst_ecal_rel"), None),
            _pm(ph.get("worst_moment_shift"), None),
            "-" if not sp.get("showers_per_s") else f"{sp['showers_per_s']:.0f}",
            "-" if units is None else str(len(units)),
            "[bold]chosen[/]" if tr["name"] == chosen else "",
        )
    layers = ", ".join(f"{k}: {v}" for k, v in manifest["layer_precisions"].items())
    took = manifest.get("tuning_seconds", 0)
    t.caption = f"per-layer decision: {layers}; tuning took {took:.0f} s"
    return t


def steps_table(log: list[dict[str, Any]]) -> Table:
    t = Table(title="Steps of this run (cached by content)")
    for c in ("step", "status", "seconds (when made)", "key"):
        t.add_column(c, justify="left" if c in ("step", "status", "key") else "right")
    for s in log:
        t.add_row(s["step"], "reused" if s["reused"] else "ran", f"{s['seconds']:.1f}", s["key"])
    return t
