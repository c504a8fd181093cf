"""The report of a whole study (`caloquant run`): from what the study made (validation reports,
the artifacts' manifests, one benchmark JSON) to report.json's rows, the recommendation and the
HTML sections. The run stage gathers what it made into a :class:`StudyOutcome`
(``caloquant.report.study_inputs``) and calls :func:`study_report`; every sentence the report
says is written here, next to its tables (``caloquant.report.study``), so the orchestrator
stays an orchestrator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from caloquant.report.bench import (
    bench_machine_line,
    bench_mc_table,
    bench_profile_table,
    bench_results_table,
    cores_used,
)
from caloquant.report.html import report_dict, section
from caloquant.report.study import (
    classifier_aucs,
    metric_table,
    modern_table,
    moments_summary_table,
    pixelwise_table,
    sampling_fraction_table,
    sizes_table,
    speed_table,
    steps_table,
    summary_table,
    tuner_table,
)
from caloquant.report.study_inputs import Artifact, Benchmark, Checked, StudyOutcome
from caloquant.report.tables import head_to_head_table, moments_table, resolution_table


@dataclass(frozen=True)
class StudyReport:
    """report.json (``data``, also what report.html renders) and what the terminal shows."""

    data: dict[str, Any]
    rows: list[dict[str, Any]]
    tolerance: dict[str, float]
    mc_label: str
    recommendation: str

    def summary_table(self) -> Table:
        return summary_table(self.rows, self.tolerance, self.mc_label)


@dataclass
class _Collected:
    """The study's results gathered for the tables: rows of report.json and the comparisons."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    timed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # label, bench entry
    vs_ref: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    vs_fp32: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    vs_points: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tuner: list[Table | None] = field(default_factory=list)
    head_to_head: list[Table | None] = field(default_factory=list)


def _within(
    rep_fp32: dict[str, Any] | None, art: Artifact | None, ecal_rel: float
) -> tuple[bool | None, float | None]:
    """A variant is within tolerance when the tuner found it so and this run's paired
    validation against fp32 agrees in every energy bin (|ratio - 1| <= tolerance + 2 sigma)."""
    if art is None:
        return True, None
    bins = [b["sampling_fraction"] for b in (rep_fp32 or {}).get("bins", [])]
    worst = max((abs(s["ratio"] - 1) for s in bins), default=None)
    ok = art.meets_tolerance and all(
        abs(s["ratio"] - 1) <= ecal_rel + 2 * s["ratio_err"] for s in bins
    )
    return ok, worst


def _collect(study: StudyOutcome, bench: Benchmark, ecal_rel: float) -> _Collected:
    eng = bench.data["monte_carlo"].get("engine")
    mc_cores = (eng or {}).get("cores", 1)
    refs = study.references
    c = _Collected()
    for model in study.per_model:
        fp32 = next(v for v in model.variants if v.is_fp32)
        base_speed = bench.model(fp32.timed, f"{model.slug} {fp32.name}")["best"]["showers_per_s"]
        c.vs_ref.append(
            (f"{model.slug} fp32 vs fp32 (second seed: statistical floor)", model.closure.report())
        )
        for v in model.variants:
            label = f"{model.slug} {v.name}"
            m = bench.model(v.timed, label)
            c.timed.append((label, m))
            art = v.artifact
            rep_ref = v.vs_reference["flat"].report()
            c.vs_ref.append((f"{label} vs {refs['flat'].engine}", rep_ref))
            if "points" in v.vs_reference:
                c.vs_points.append(
                    (
                        f"{label} vs {refs['points'].engine} points",
                        v.vs_reference["points"].report(),
                    )
                )
            rep_fp = v.vs_fp32.report() if v.vs_fp32 is not None else None
            if rep_fp is not None:
                c.vs_fp32.append((label, rep_fp))
            ok, worst = _within(rep_fp, art, ecal_rel)
            if art is not None:
                c.tuner.append(tuner_table(label, art.manifest, art.trials, art.chosen))
                c.head_to_head.append(head_to_head_table(art.manifest))
            b = m["best"]
            # the cores of the best point (threads x streams, at most the usable cores); per
            # core: showers/s per core used against the Monte Carlo's per core (it uses one)
            cores = cores_used(bench.data, b)
            c.rows.append(
                {
                    "model": model.slug,
                    "variant": v.name,
                    "executed": m.get("executed_precision") or m["precision"],
                    "backend": m["backend"],
                    "showers_per_s": b["showers_per_s"],
                    "best_point": (
                        f"{b['threads']} threads, {b['streams']} streams, batch {b['batch']}"
                    ),
                    "speedup_vs_fp32": b["showers_per_s"] / base_speed,
                    "speedup_vs_mc": (
                        eng["flat_mean_s_per_shower"] * b["showers_per_s"] if eng else None
                    ),
                    "speedup_vs_mc_err": (
                        eng["flat_mean_s_per_shower_err"] * b["showers_per_s"] if eng else None
                    ),
                    "cores_used": cores,
                    "speedup_vs_mc_per_core": (
                        eng["flat_mean_s_per_shower"] * b["showers_per_s"] * mc_cores / cores
                        if eng
                        else None
                    ),
                    "speedup_vs_mc_per_core_err": (
                        eng["flat_mean_s_per_shower_err"] * b["showers_per_s"] * mc_cores / cores
                        if eng
                        else None
                    ),
                    "bytes": art.size_bytes if art else model.fp32_bytes,
                    "size_ratio": art.size_bytes / art.fp32_param_bytes if art else 1.0,
                    "layer_precisions": dict(art.layer_precisions) if art else None,
                    "worst_ecal_dev": worst,
                    "within_tolerance": ok,
                    **classifier_aucs(rep_ref),
                    "metric_vs_reference": (rep_ref.get("optimisation_metric") or {}).get("total"),
                    # the tuner's final race against the exact engine model (decision, why)
                    "race": (art.manifest.get("race") or None) if art else None,
                }
            )
    return c


def _recommend(rows: list[dict[str, Any]], bench: dict[str, Any], mc_label: str) -> str:
    """One paragraph: the fastest variant within tolerance on this CPU, and what it beats."""
    cpu = bench["machine"]["cpu_model"]
    good = [r for r in rows if r["within_tolerance"]]
    if not good:
        return f"No variant is within tolerance on this CPU ({cpu}); deploy nothing reduced."
    best = max(good, key=lambda r: r["showers_per_s"])
    faster_bad = [
        r for r in rows if not r["within_tolerance"] and r["showers_per_s"] > best["showers_per_s"]
    ]
    mc = (
        f", {best['speedup_vs_mc_per_core']:,.0f}±{best['speedup_vs_mc_per_core_err']:,.0f}x "
        f"the {mc_label} Monte Carlo per core ({best['speedup_vs_mc']:,.0f}x with "
        f"{best['cores_used']} cores against one)"
        if best["speedup_vs_mc"]
        else ""
    )
    txt = (
        f"On this CPU ({cpu}), deploy {best['model']} {best['variant']} ({best['backend']}, "
        f"runs {best['executed']}): {best['showers_per_s']:.0f} showers/s at "
        f"{best['best_point']}, {best['speedup_vs_fp32']:.2f}x PyTorch fp32{mc}, "
        f"{best['size_ratio']:.2f}x the fp32 size. It is the fastest variant within tolerance"
    )
    if best["worst_ecal_dev"] is not None:
        txt += (
            f" (worst |Ecal/Ecal_fp32 - 1| {best['worst_ecal_dev']:.4f} over the energy bins, "
            "same latents)"
        )
    if best["auc_vs_reference"] is not None:
        txt += f"; against the reference its classifier AUC is {best['auc_vs_reference']:.3f}"
    txt += "."
    exact = [r for r in rows if (r.get("race") or {}).get("decision") == "exact model"]
    for r in exact:  # the physics int8 search returned the exact engine model: say why
        txt += (
            f" The tuner of {r['model']} {r['variant']} returned the exact fp32 engine model: "
            f"{r['race']['why']}."
        )
    if faster_bad:
        txt += (
            " Faster but outside tolerance (the tuner's paired check of energy and moments, or "
            "this run's paired validation): "
            + ", ".join(
                f"{r['variant']} ({r['showers_per_s']:.0f}/s, worst |Ecal ratio - 1| "
                + ("-" if r["worst_ecal_dev"] is None else f"{r['worst_ecal_dev']:.3f}")
                + ")"
                for r in faster_bad
            )
            + "."
        )
    return txt


MC_NOTE = (
    " The Monte Carlo time is {engine} ({physics}) on caloquant's calorimeter, timed in this"
    " run on one core at {n} energies and averaged over a flat {lo:g}-{hi:g} GeV spectrum"
    " (the time per shower grows about linearly with the energy, so the speed-up of one"
    " energy differs from this mean: see the per-energy table). The data-free analytic EM"
    " physics list and this geometry are not the full Geant4 set-up the CERN 3DGAN was"
    " trained on, which costs more per shower: the literature bar (17 s/shower, derived)"
    " is that set-up's scale. 'x {engine}' is the model at its best point's threads x streams"
    " (up to {cores} cores) against the Monte Carlo on one core; 'per core' divides by the"
    " cores the model used: showers/s per core against showers/s per core."
)


def _bench_note(bench: dict[str, Any], skipped: Mapping[str, str]) -> str:
    """How to read the speed-ups: one run, this machine's load, the Monte Carlo timed here."""
    load = (bench["machine"].get("load_before") or {}).get("loadavg_1_5_15", ["?"])[0]
    note = (
        f"One benchmark run with every variant; load average before the run {load} on "
        f"{bench['machine']['usable_cores']} usable cores (other processes share this "
        "machine: compare within the run)."
    )
    if skipped:
        note += " Not repeated: " + "; ".join(f"{k} ({why})" for k, why in skipped.items()) + "."
    if eng := bench["monte_carlo"].get("engine"):
        lo, hi = eng["flat_range_gev"]
        note += MC_NOTE.format(
            engine=eng["engine"],
            physics=eng.get("physics"),
            n=len(eng["per_energy"]),
            lo=lo,
            hi=hi,
            cores=bench["machine"]["usable_cores"],
        )
    return note


def _png(c: Checked | None, name: str) -> Path | None:
    return c.png(name) if c is not None else None


def _sections(
    study: StudyOutcome,
    c: _Collected,
    bench: dict[str, Any],
    recommendation: str,
    tol: dict[str, float],
    mc_label: str,
    skipped: Mapping[str, str],
) -> list[dict[str, Any]]:
    """The report's sections in the paper's order, the first model's figures."""
    ref_engine = study.references["flat"].engine
    first = study.per_model[0]
    fp32 = next(v for v in first.variants if v.is_fp32)
    phys, naive = first.variant("int8_physics"), first.variant("int8_naive")
    fp32_ref = fp32.vs_reference["flat"]
    phys_ref = phys.vs_reference["flat"] if phys else None
    phys_fp = phys.vs_fp32 if phys else None
    naive_fp = naive.vs_fp32 if naive else None
    bplots = {p.name: p for p in study.bench_plots}
    shapes = [
        (f"{who}: shower shape along {ax} ({scale})", _png(ch, f"shape_{ax}_{scale}.png"))
        for who, ch in (
            (f"fp32 vs {ref_engine}", fp32_ref),
            (f"physics int8 vs {ref_engine}", phys_ref),
            ("physics int8 vs fp32 (same latents)", phys_fp),
        )
        for ax in ("z", "y")
        for scale in ("linear", "log")
    ]
    machine = bench_machine_line(bench).replace("[yellow]", "").replace("[/]", "")
    return [
        section("Recommendation", recommendation, [summary_table(c.rows, tol, mc_label)]),
        section(
            "Speed-up",
            _bench_note(bench, skipped),
            [speed_table(bench, c.timed), bench_mc_table(bench)],
            [
                (
                    "Speed-up against Monte Carlo (best grid point)",
                    bplots.get("speedup_vs_monte_carlo.png"),
                )
            ],
        ),
        section(
            "Per-op breakdown",
            "Where the inference time goes, from each engine's own profiler (paper Table 2).",
            [bench_profile_table(bench)],
            [
                ("Per-op time profile", bplots.get("profile_pies.png")),
                (
                    "Achieved fraction of the matmul ceiling of each engine and precision",
                    bplots.get("roofline_fraction.png"),
                ),
            ],
        ),
        section(
            "Throughput over threads and streams",
            "Paper Fig. 4.",
            [],
            [
                (
                    "Throughput against threads x streams",
                    bplots.get("throughput_threads_streams.png"),
                )
            ],
            [bench_results_table(bench)],
        ),
        section(
            "Shower shapes",
            "Paper Figs. 5-6: mean energy per slice, linear and log, with "
            f"ratio panels; reference: {ref_engine}.",
            [],
            shapes,
        ),
        section(
            "Moments",
            "Paper Table 3: shower position and width against the reference and, "
            "paired, against fp32.",
            [
                moments_summary_table(
                    c.vs_ref, f"Moment shifts against the {ref_engine} reference, all energies"
                ),
                moments_summary_table(c.vs_fp32, "Moment shifts against fp32 (same latents)")
                if c.vs_fp32
                else None,
            ],
            [],
            [
                moments_table(fp32_ref.report()),
                moments_table(phys_fp.report()) if phys_fp else None,
            ],
        ),
        section(
            "Validation number",
            "Paper Table 4: the 3DGAN authors' single number.",
            [metric_table(c.vs_ref)],
        ),
        section(
            "Pixel-wise",
            "Paper Table 5: cell-by-cell difference from fp32 on the same latent vectors.",
            [pixelwise_table(c.vs_fp32)] if c.vs_fp32 else [],
            [
                (
                    "physics int8 vs fp32: average-shower projections",
                    _png(phys_fp, "projections.png"),
                ),
                (
                    "naive int8 vs fp32: average-shower projections",
                    _png(naive_fp, "projections.png"),
                ),
            ],
        ),
        section(
            "Sampling fraction",
            "Ecal/Ep against Ep, and the energy resolution.",
            [
                sampling_fraction_table(c.vs_ref),
                sampling_fraction_table(c.vs_points) if c.vs_points else None,
                sampling_fraction_table(c.vs_fp32) if c.vs_fp32 else None,
            ],
            [
                (
                    f"fp32 vs {ref_engine}: sampling fraction",
                    _png(fp32_ref, "sampling_fraction.png"),
                ),
                (
                    f"physics int8 vs {ref_engine}: sampling fraction",
                    _png(phys_ref, "sampling_fraction.png"),
                ),
                (
                    f"fp32 vs {ref_engine}: energy resolution",
                    _png(fp32_ref, "energy_resolution.png"),
                ),
            ],
            [resolution_table(fp32_ref.report())],
        ),
        section(
            "Modern metrics",
            "Classifier test, Fréchet and kernel physics distances, separation power.",
            [modern_table(c.vs_ref)],
            [
                (
                    f"physics int8 vs {ref_engine}: classifier ROC",
                    _png(phys_ref, "classifier_roc.png"),
                ),
                (
                    f"physics int8 vs {ref_engine}: high-level features",
                    _png(phys_ref, "features.png"),
                ),
            ],
        ),
        section(
            "Tuner",
            "The tuner's trials (speed against physics: its frontier) and per-layer decisions.",
            c.tuner + c.head_to_head,
        ),
        section("Model sizes", "", [sizes_table(c.rows)]),
        section("Machine", machine, [steps_table(study.steps)]),
    ]


def study_report(study: StudyOutcome) -> StudyReport:
    """The study's report: report.json's content (sections included) and its summary."""
    from caloquant.precision import Tolerance

    tol = Tolerance().to_dict()
    bench = Benchmark(study.bench_json)
    eng = bench.data["monte_carlo"].get("engine")
    mc_label = f"{eng['engine']} (measured)" if eng else "Monte Carlo"
    c = _collect(study, bench, tol["ecal_rel"])
    recommendation = _recommend(c.rows, bench.data, mc_label)
    skipped = {f"{m.slug} {n}": why for m in study.per_model for n, why in m.skipped.items()}
    sections = _sections(study, c, bench.data, recommendation, tol, mc_label, skipped)
    refs = study.references
    subtitle = (
        f"{', '.join(study.models)}; reference: {refs['flat'].engine}, {refs['flat'].n} "
        "showers flat"
        + (f" and {refs['points'].n} at fixed energies" if "points" in refs else "")
        + f"; {'quick' if study.quick else 'full'} study; this invocation "
        f"{study.wall_s:.0f} s (finished steps reused)"
    )
    meta = {
        "subtitle": subtitle,
        "config": dict(study.config),
        "tolerance": tol,
        "mc_label": mc_label,
        "recommendation": recommendation,
        "variants": c.rows,
        "skipped_variants": skipped,
        "references": {w: dict(r.record) for w, r in refs.items()},
        "steps": study.steps,
        "wall_s": round(study.wall_s, 1),
        "machine": bench.data["machine"],
        "bench_json": str(study.bench_json),
    }
    data = report_dict("caloquant study report", sections, meta)
    return StudyReport(data, c.rows, tol, mc_label, recommendation)
