"""Terminal summary tables (rich) for validation reports."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _pm(v: float, e: float, fmt: str = ".4f") -> str:
    return f"{v:{fmt}}±{e:{fmt}}"


def _pull_style(pull: float) -> str:
    a = abs(pull)
    return "red" if a > 5 else ("yellow" if a > 3 else "green")


def validation_table(report: dict[str, Any]) -> Table:
    """One row per energy bin: counts, sampling fraction, moment shifts, projection MSE,
    pixel-wise."""
    paired = report.get("paired", False)
    t = Table(
        title=f"Validation: {report['cand']} vs {report['ref']}" + (" (paired)" if paired else "")
    )
    for col in (
        "Ep bin [GeV]",
        "n ref/cand",
        "Ecal/Ep ref",
        "cand/ref",
        "Δ mean z",
        "Δ std z",
        "Δ std y",
        "proj. MSE (noise)",
    ):
        t.add_column(col, justify="right")
    if paired:
        t.add_column("pixel-wise [GeV]", justify="right")
    for b in report["bins"]:
        sf = b["sampling_fraction"]
        mz, sz, sy = b["moments"]["z"]["mean"], b["moments"]["z"]["std"], b["moments"]["y"]["std"]
        cells = [
            b["label"],
            f"{b['n_ref']}/{b['n_cand']}",
            _pm(sf["ref"], sf["ref_err"], ".5f"),
            f"[{_pull_style(sf['pull'])}]{_pm(sf['ratio'], sf['ratio_err'], '.4f')}[/]",
            f"[{_pull_style(mz['pull'])}]{mz['shift']:+.3f}±{mz['shift_err']:.3f}[/]",
            f"[{_pull_style(sz['pull'])}]{sz['shift']:+.3f}±{sz['shift_err']:.3f}[/]",
            f"[{_pull_style(sy['pull'])}]{sy['shift']:+.3f}±{sy['shift_err']:.3f}[/]",
            f"{b['projection_mse']:.3g} ({b['projection_mse_noise']:.2g})",
        ]
        if paired:
            p = b["pixelwise"]
            cells.append(f"{p['mean']:.4g}±{p['std']:.3g}")
        t.add_row(*cells)
    return t


MOMENT_ROWS = (
    ("mean", "mean <M1>"),
    ("mean_sqrt_m2", "width <sqrt M2>"),
    ("sqrt_mean_m2", "width sqrt<M2>"),
    ("profile_mean", "average-profile mean"),
    ("profile_std", "average-profile std"),
)


def moments_table(report: dict[str, Any], bin_label: str = "all") -> Table:
    """Shower position and width per axis, in each convention (cells), ref and cand with errors."""
    b = next(x for x in report["bins"] if x["label"] == bin_label)
    t = Table(title=f"Shower moments in cell units, Ep bin {bin_label}")
    t.add_column("axis")
    t.add_column("quantity")
    for col in ("ref", "cand", "cand - ref"):
        t.add_column(col, justify="right")
    for ax, m in b["moments"].items():
        for i, (k, name) in enumerate(MOMENT_ROWS):
            c = m[k]
            t.add_row(
                ax if i == 0 else "",
                name,
                _pm(c["ref"], c["ref_err"]),
                _pm(c["cand"], c["cand_err"]),
                f"[{_pull_style(c['pull'])}]{c['shift']:+.4f}±{c['shift_err']:.4f}[/]",
                end_section=i == len(MOMENT_ROWS) - 1,
            )
    t.caption = (
        "M1, M2: mean and variance of each shower's profile. <sqrt M2>: caloquant's `std` key; "
        "sqrt<M2>: the 3DGAN authors' convention; average-profile: of the summed profile "
        "(energy-weighted over showers), as the statistics box of the authors' ROOT shower-shape "
        "plots, probably the paper's Table 3."
    )
    return t


def resolution_table(report: dict[str, Any]) -> Table:
    """Energy response <Ecal/Ep> and resolution sigma/mean of Ecal/Ep per energy bin, with the
    fit."""
    t = Table(title="Energy response and resolution (Ecal/Ep per shower)")
    for col in (
        "Ep bin [GeV]",
        "<Ep> [GeV]",
        "<Ecal/Ep> ref",
        "<Ecal/Ep> cand",
        "σ/mean ref",
        "σ/mean cand",
        "cand/ref",
    ):
        t.add_column(col, justify="right")
    for b in report["bins"]:
        if b["label"] == "all" or "resolution" not in b:
            continue
        sf, r = b["sampling_fraction"], b["resolution"]
        t.add_row(
            b["label"],
            f"{b['ep_mean_gev']['ref']:.1f}",
            _pm(sf["ref"], sf["ref_err"], ".5f"),
            _pm(sf["cand"], sf["cand_err"], ".5f"),
            _pm(r["ref"], r["ref_err"]),
            _pm(r["cand"], r["cand_err"]),
            f"[{_pull_style(r['pull'])}]{_pm(r['ratio'], r['ratio_err'], '.3f')}[/]",
        )
    fit = report.get("resolution_fit") or {}
    lines = []
    for who in ("ref", "cand"):
        f = fit.get(who) or {}
        if "a" in f:
            lines.append(
                f"{who}: a = {f['a']:.4f}±{f['a_err']:.4f}, b = {f['b']:.4f}±{f['b_err']:.4f} "
                f"(chi2/ndof {f['chi2']:.1f}/{f['ndof']})"
            )
        elif "skipped" in f:
            lines.append(f"{who}: no fit ({f['skipped']})")
    if lines:
        t.caption = f"{fit.get('model', '')}: " + "; ".join(lines)
    return t


def optimisation_table(report: dict[str, Any]) -> Table:
    """The 3DGAN authors' epoch-selection metric and its three parts (lower is better)."""
    m = report.get("optimisation_metric") or {}
    t = Table(title="3DGAN authors' optimisation metric (lower is better)")
    for col in (
        "Ep window [GeV]",
        "n ref/cand",
        "position",
        "profile",
        "sampling fraction",
        "empty profile slices x/y/z",
    ):
        t.add_column(col, justify="right")
    if "skipped" in m:
        t.caption = f"not computed: {m['skipped']}"
        return t
    for p in m["per_point"]:
        e = p["empty_slices"]
        t.add_row(
            f"{p['energy_gev']:g}±{m['half_width_gev']:g}",
            f"{p['n_ref']}/{p['n_cand']}",
            f"{p['position']:.4f}",
            f"{p['profile']:.4f}",
            f"{p['sampling_fraction']:.4f}",
            f"{e['x']}/{e['y']}/{e['z']}",
        )
    t.add_row(
        "mean",
        "",
        f"{m['position']:.4f}",
        f"{m['profile']:.4f}",
        f"{m['sampling_fraction']:.4f}",
        "",
        end_section=True,
    )
    t.caption = f"total = position + profile + sampling fraction = {m['total']:.4f}"
    return t


def global_table(report: dict[str, Any]) -> Table:
    t = Table(title="Distribution distances (all energies)", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("meaning")
    if report.get("fpd"):
        t.add_row(
            "FPD",
            f"{report['fpd']['value']:.4g} ± {report['fpd']['err']:.2g}",
            "Fréchet physics distance (0 = same)",
        )
        t.add_row(
            "KPD",
            f"{report['kpd']['value']:.3g} ± {report['kpd']['err']:.2g}",
            "kernel physics distance, unbiased (0 = same)",
        )
    if report.get("classifier"):
        c = report["classifier"]
        t.add_row(
            "classifier AUC", f"{c['auc']:.4f} ± {c['auc_err']:.4f}", "0.5 = indistinguishable"
        )
        t.add_row("classifier JSD", f"{c['jsd']:.4f}", "0 = indistinguishable")
    for level, cc in (report.get("classifier_calochallenge") or {}).items():
        if level in ("low_level", "high_level"):
            t.add_row(
                f"CaloChallenge {level.replace('_', '-')} AUC",
                f"{cc['auc']:.4f} ± {cc['auc_err']:.4f}",
                f"JSD {cc['jsd']:.4f} ± {cc['jsd_err']:.4f}; 0.5 = indistinguishable",
            )
    sep = report["bins"][0].get("separation_power", {})
    for k, v in sep.items():
        t.add_row(f"sep. power {k}", f"{v['value']:.4f}", f"statistical floor {v['floor']:.4f}")
    return t


def validation_tables(report: dict[str, Any]) -> list[Table]:
    """Every terminal table of a validation report, in the order `caloquant validate` prints
    them."""
    tables = [validation_table(report), moments_table(report)]
    if len(report["bins"]) > 1:
        tables.append(resolution_table(report))
    return [*tables, optimisation_table(report), global_table(report)]


def quantize_summary(m: dict[str, Any]) -> Table:
    """The chosen configuration of a `quantize` run: physics per energy point, speed, size."""
    ok = m["meets_tolerance"]
    ex = m.get("executed_precision")
    runs = (
        f", runs {ex}" if ex and ex != m["precision"] else ""
    )  # e.g. int8 asked, a bf16 + fp32 split was fastest
    t = Table(
        title=f"{m['backend']} {m['precision']} ({m['recipe']} recipe{runs}): "
        + ("[green]physics within tolerance[/]" if ok else "[bold red]PHYSICS OUTSIDE TOLERANCE[/]")
    )
    t.add_column("Ep [GeV]", justify="right")
    t.add_column("Ecal_q / Ecal_fp32", justify="right")
    t.add_column("max |moment shift| [cells]", justify="right")
    t.add_column("pixel-wise [GeV]", justify="right")
    t.add_column("hit cells q/fp32", justify="right")
    tol = m["tolerance"]
    for p in m["physics"]["points"]:
        r = p["ecal_ratio"]
        style = "green" if abs(r - 1) <= tol["ecal_rel"] else "red"
        ms = max(abs(v) for v in p["moment_shifts"].values())
        t.add_row(
            f"{p['energy_gev']:g}",
            f"[{style}]{r:.4f}±{p['ecal_ratio_err']:.4f}[/]",
            f"[{'green' if ms <= tol['moment_shift'] else 'red'}]{ms:.4f}[/]",
            f"{p['pixelwise_gev']:.4g}",
            f"{p['hit_ratio']:.3f}",
        )
    sp = m["speed"]
    layers = ", ".join(f"{k}:{v}" for k, v in m["layer_precisions"].items())
    t.caption = (
        f"{sp['showers_per_s']:.0f} showers/s = {sp['speedup_vs_torch_fp32']:.2f}x PyTorch fp32 "
        f"eager ({sp['baseline_torch_fp32_showers_per_s']:.0f}/s, batch {sp['batch']}, "
        f"{sp['threads']} threads); size {m['size_bytes'] / 1e6:.2f} MB "
        f"({m['size_bytes'] / m['fp32_param_bytes']:.2f}x fp32); tolerance |ΔEcal| <= "
        f"{tol['ecal_rel']}, |Δmoment| <= {tol['moment_shift']}; layers: {layers}"
    )
    race = m.get("race")
    if race and race.get("decision"):  # the final race against the exact engine model
        t.caption += f"\nfinal race: {race['decision']}: {race['why']}"
    return t


def head_to_head_table(m: dict[str, Any]) -> Table | None:
    """The chosen caloquant configuration next to other tools at the same tolerance."""
    rows = m.get("head_to_head") or []
    if not rows:
        return None
    t = Table(
        title="Head to head at the same tolerance (paired physics vs fp32, speed vs PyTorch "
        "fp32 eager)"
    )
    for col in (
        "configuration",
        "speed-up",
        "worst |Ecal ratio - 1|",
        "worst moment shift",
        "within tolerance",
        "int8 layers",
    ):
        t.add_column(col, justify="right")
    ph, sp = m["physics"], m["speed"]
    t.add_row(
        f"caloquant {m['recipe']} recipe",
        f"{sp['speedup_vs_torch_fp32']:.2f}x",
        f"{ph['worst_ecal_rel']:.4f}",
        f"{ph['worst_moment_shift']:.4f}",
        "yes" if m["meets_tolerance"] else "NO",
        str(sum(v == "int8" for v in m["layer_precisions"].values())),
    )
    for r in rows:
        if "error" in r:  # the tool could not run here: say why
            t.add_row(r["name"], "-", "-", "-", "n/a", "-")
            continue
        su = f"{r['speedup_vs_torch_fp32']:.2f}x" if r["speedup_vs_torch_fp32"] else "-"
        t.add_row(
            r["name"],
            su,
            f"{r['worst_ecal_rel']:.4f}",
            f"{r['worst_moment_shift']:.4f}",
            "yes" if r["meets_tolerance"] else "NO",
            str(sum(v == "int8" for v in r["layer_precisions"].values())),
        )
    errors = [r for r in rows if "error" in r]
    if errors:  # the reasons, verbatim
        t.caption = "; ".join(f"{r['name']}: {r['error']}" for r in errors)
    return t
