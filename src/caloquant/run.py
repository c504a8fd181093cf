"""`caloquant run`: the whole study in one command, as one HTML report (and its JSON).

A thin orchestrator over the stages' public APIs: reference showers from the Monte Carlo
(``caloquant.sim``: Geant4, or GFlash with ``--quick`` or when Geant4 cannot run here, cached
per user by content); then, through ``caloquant.api``, every model's fp32 and reduced-precision
variants, their showers on the reference energies with the same latents as fp32, validation
against the reference and, paired, against fp32, and one benchmark of every variant with the
Monte Carlo timed in the same run; last, the report stage (``caloquant.report.study_report``)
turns what the steps made into ``report.html`` (self-contained) and ``report.json``. Every step
is cached by content (``Steps``, with the steps themselves in ``caloquant.study_steps``): a
re-run, or a run resumed after an interruption, reuses finished steps; files are written
atomically, so an interrupted run never leaves a half-written report or step.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from rich.console import Console

from caloquant.errors import CaloquantError
from caloquant.fileio import check_output
from caloquant.options import (
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    check_int,
    check_seconds,
    check_seed,
    check_showers,
)
from caloquant.study_steps import (  # StudyVariant, StudySettings, Steps: also run's names
    Record,
    Steps,
    StudySettings,
    StudyVariant,
    bench_step,
    model_step,
    quantize_step,
    reference_step,
    sample_step,
    validate_step,
)

if TYPE_CHECKING:  # the report stage loads matplotlib: imported when the report is made
    from caloquant.report.study_inputs import ModelOutcome

RUN_FORMAT = 1
POINTS_GEV = (100.0, 200.0, 300.0, 400.0, 500.0)

FULL_VARIANTS = (
    StudyVariant("fp32"),
    StudyVariant("bf16", "bf16", "openvino"),
    StudyVariant("fp16", "fp16", "openvino"),
    StudyVariant("int8_naive", "int8", "openvino", "naive"),
    StudyVariant("int8_physics", "int8", "openvino", "physics", head_to_head=True),
)
QUICK_VARIANTS = (
    StudyVariant("fp32"),
    StudyVariant("bf16", "bf16", "openvino"),
    StudyVariant("int8_naive", "int8", "openvino", "naive"),
    StudyVariant("int8_physics", "int8", "openvino", "physics"),
)
FLOATS = ("tune_budget_s", "bench_duration_s", "mc_budget_s")  # 20 and 20.0: the same step keys
FLAGS = {"tune_budget_s": "--tune-budget", "bench_duration_s": "--bench-duration"}
FLAGS |= {"mc_budget_s": "--mc-budget", "n_flat": "--showers", "n_per_point": "--per-point"}
ENGINES = ("geant4", "gflash")
MIN_FLAT = 20  # reference showers flat over the model's range: fewer make no validation


@dataclass(frozen=True)
class RunConfig:
    """What `caloquant run` is asked; a setting left None takes its default in ``FULL`` or, with
    ``quick``, in ``QUICK``: the one place the defaults are written (the CLI's help reads them;
    their empty ``models``: every built-in model, or the default one)."""

    FULL: ClassVar[StudySettings] = StudySettings(
        (), False, 2, 1, 1000, 100, "geant4", 540.0, 2.0, 300.0, True, FULL_VARIANTS
    )
    QUICK: ClassVar[StudySettings] = StudySettings(
        (), True, 2, 1, 400, 0, "gflash", 60.0, 0.6, 40.0, True, QUICK_VARIANTS
    )

    models: tuple[str, ...] = ()
    quick: bool = False
    threads: int = 2
    seed: int = 1
    n_flat: int | None = None
    n_per_point: int | None = None
    engine: str | None = None
    tune_budget_s: float | None = None
    bench_duration_s: float | None = None
    mc_budget_s: float | None = None
    classifier: bool = True
    variants: tuple[StudyVariant, ...] = field(default=())

    def __post_init__(self) -> None:
        """Every value given is checked here, before a run folder is made (one-line errors
        naming the flag); the defaults are checked once, by the tests."""
        if isinstance(self.models, (str, bytes)) or not all(
            isinstance(m, str) and m.strip() for m in self.models
        ):
            raise CaloquantError(f"--model must name models, got {self.models!r}")
        checked: dict[str, Any] = {
            "threads": check_int(self.threads, "--threads", 1, MAX_THREADS),
            "seed": check_seed(self.seed),
        }
        if self.n_flat is not None:
            checked["n_flat"] = check_showers(self.n_flat, "--showers", MIN_FLAT)
        if self.n_per_point is not None:
            n = check_int(self.n_per_point, "--per-point", 0)
            if n * len(POINTS_GEV) > MAX_SHOWERS_PER_CALL:
                raise CaloquantError(
                    f"--per-point must be at most {MAX_SHOWERS_PER_CALL // len(POINTS_GEV):,} "
                    f"({len(POINTS_GEV)} energy points), got {n}"
                )
            checked["n_per_point"] = n
        if self.engine is not None and self.engine not in ENGINES:
            raise CaloquantError(
                f"--engine must be {' or '.join(ENGINES)} (the reference engine), "
                f"got '{self.engine}'"
            )
        for k in FLOATS:
            if getattr(self, k) is not None:
                checked[k] = check_seconds(getattr(self, k), FLAGS[k] + " (s)")
        for k, v in checked.items():
            object.__setattr__(self, k, v)

    def resolve(self) -> StudySettings:
        """Every setting with its default filled in; a bad one is a one-line error."""
        given = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) not in (None, (), "")
        }
        s = replace(self.QUICK if self.quick else self.FULL, **given)
        # fp32 comes first: every variant is compared with it (paired) and timed against it
        fp = [v for v in s.variants if v.is_fp32] or [StudyVariant("fp32")]
        s = replace(
            s,
            models=tuple(s.models) or _default_models(s.quick),
            variants=(fp[0], *(v for v in s.variants if not v.is_fp32)),
            **{k: float(getattr(s, k)) for k in FLOATS},
        )
        if s.n_flat < MIN_FLAT:
            raise CaloquantError(f"--showers must be at least {MIN_FLAT}, got {s.n_flat}")
        if s.engine not in ENGINES:
            raise CaloquantError(f"--engine must be geant4 or gflash, got '{s.engine}'")
        return s

    @classmethod
    def describe_defaults(cls) -> str:
        """The defaults of the full study and of the quick one, in one paragraph (CLI help)."""

        def one(d: StudySettings) -> str:
            vs = ", ".join(
                v.name + (" with head to head" if v.head_to_head else "") for v in d.variants
            )
            return (
                f"{'the default model' if d.quick else 'every built-in model'}; variants {vs};"
                f" {d.engine} reference: {d.n_flat} showers flat over the model's energy range"
                f" and {d.n_per_point} at each of {', '.join(f'{p:g}' for p in POINTS_GEV)} "
                f"GeV; tuning {d.tune_budget_s:g} s per variant; benchmark "
                f"{d.bench_duration_s:g} s per grid point; Monte Carlo timing "
                f"{d.mc_budget_s:g} s"
            )

        return f"Defaults of the full study: {one(cls.FULL)}. With --quick: {one(cls.QUICK)}."


def _default_models(quick: bool) -> tuple[str, ...]:
    """The default model; for the full study, every built-in model whose weights are installed
    (the default first): the CERN 3DGAN, and the Conv2D model trained here once it ships."""
    from caloquant.models import DEFAULT_MODEL
    from caloquant.models.registry import builtin_models

    more = () if quick else tuple(m.name for m in builtin_models() if m.name != DEFAULT_MODEL)
    return (str(DEFAULT_MODEL), *more)


def _study_model(
    model: Record,
    variants: tuple[StudyVariant, ...],
    refs: dict[str, Record],
    s: StudySettings,
    steps: Steps,
) -> tuple[ModelOutcome, list[Record]]:
    """Every variant of one model: built, sampled on each reference and validated against it
    and against fp32; returns what the report reads and the benchmark's entries."""
    from caloquant.report.study_inputs import Artifact, ModelOutcome, VariantOutcome

    slug = model["slug"]
    made: list[tuple[StudyVariant, Record, Artifact | None, dict[str, Record]]] = []
    skipped: dict[str, str] = {}
    same: dict[tuple[Any, ...], str] = {}  # what a float variant runs as -> the first to run so
    for v in variants:
        src = model if v.is_fp32 else quantize_step(model, v, s, steps)
        art = (
            None
            if v.is_fp32
            else Artifact.from_manifest(src["manifest"], src["trials"], src["chosen"])
        )
        if art is not None and v.precision != "int8":
            # fp16 on a CPU without fp16 arithmetic runs as bf16: the same computation (same engine,
            # executed precision and paired physics) is not sampled, validated or timed twice
            key = (v.backend, art.executed_precision, art.worst_ecal_rel, art.worst_moment_shift)
            if key in same:
                skipped[v.name] = (
                    f"runs as {art.executed_precision} on this CPU, the same "
                    f"computation as {same[key]} (identical paired physics)"
                )
                steps.say(
                    f"[dim]{slug} {v.name}: {skipped[v.name]}; not sampled, validated or "
                    "timed again[/]"
                )
                continue
            same[key] = v.name
        made.append(
            (
                v,
                src,
                art,
                {w: sample_step(model, v, src, r, w, s.seed, s, steps) for w, r in refs.items()},
            )
        )
    # the statistical floor: a second, independent fp32 sample against the first
    fp32, base = made[0][0], made[0][3]["flat"]
    second = sample_step(model, fp32, model, refs["flat"], "flat", s.seed + 1, s, steps, "_seed2")
    closure = validate_step(f"{slug} fp32 closure", base, second, False, False, s, steps)
    outcomes, entries = [], []
    for v, src, art, samples in made:
        plots_ref = v.name in (fp32.name, "int8_physics")
        vs_ref = {
            w: validate_step(
                f"{slug} {v.name} vs {refs[w]['engine']} {w}",
                refs[w],
                smp,
                False,
                plots_ref and w == "flat",
                s,
                steps,
            )
            for w, smp in samples.items()
        }
        vs_fp32 = (
            None
            if v.is_fp32
            else validate_step(
                f"{slug} {v.name} vs fp32",
                base,
                samples["flat"],
                True,
                v.name in ("int8_physics", "int8_naive"),
                s,
                steps,
            )
        )
        timed = src.get("artifact") or src["checkpoint"]
        outcomes.append(VariantOutcome(v.name, v.is_fp32, Path(timed), vs_ref, vs_fp32, art))
        entries.append({"bench_name": timed, "_key": src["_key"], "label": f"{slug} {v.name}"})
    return ModelOutcome(slug, model["fp32_bytes"], tuple(outcomes), closure, skipped), entries


def run(config: RunConfig, run_dir: str | Path, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the study into ``run_dir``; returns the report dictionary (report.json).
    Every setting and model is checked first: a bad one leaves no run folder behind."""
    from caloquant.models import model_ref

    out = check_output(run_dir, folder=True)
    con = console or Console()
    s = config.resolve()
    for m in s.models:  # the study starts from float32 models: each named before any work
        model_ref(m).require_float()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(s, out, con)
    except BaseException:
        if created and not any((out / "steps").glob("*.json")):
            shutil.rmtree(out, ignore_errors=True)  # no finished step: nothing to resume
        raise


def _run(s: StudySettings, out: Path, con: Console) -> dict[str, Any]:
    from caloquant.report.html import write_report
    from caloquant.report.study_inputs import Reference, StudyOutcome
    from caloquant.report.study_report import study_report
    from caloquant.sim import draw_energies

    t_start = time.perf_counter()
    steps = Steps(out, con)
    models = [model_step(m, steps) for m in s.models]
    lo, hi = models[0]["energy_range_gev"]
    flat = draw_energies(s.n_flat, s.seed, energy_range=(lo, hi))
    refs = {"flat": reference_step(s, "flat", flat, steps)}
    if s.n_per_point:
        pts = np.repeat(np.asarray([p for p in POINTS_GEV if lo <= p <= hi]), s.n_per_point)
        refs["points"] = reference_step(s, "points", pts, steps)

    per_model: list[ModelOutcome] = []
    bench_entries: list[Record] = []
    for i, model in enumerate(models):
        # the head to head (other tools at the same tolerance, ~5 minutes a model) runs on the
        # first model only: with the Conv2D model trained here the study would pass 30 minutes
        vs = s.variants if i == 0 else tuple(replace(v, head_to_head=False) for v in s.variants)
        outcome, entries = _study_model(model, vs, refs, s, steps)
        per_model.append(outcome)
        bench_entries += entries
    bench = bench_step(bench_entries, s, steps)

    con.rule("[bold]report")
    references = {
        w: Reference(r["engine"], r["n"], {k: v for k, v in r.items() if k[0] != "_"})
        for w, r in refs.items()
    }
    report = study_report(
        StudyOutcome(
            s.to_dict(),
            s.models,
            s.quick,
            references,
            tuple(per_model),
            Path(bench["json"]),
            tuple(Path(p) for p in bench["plots"]),
            steps.log,
            time.perf_counter() - t_start,
        )
    )
    write_report(report.data, out)
    con.print(report.summary_table())
    con.print(report.recommendation, highlight=False)
    reused = sum(st["reused"] for st in steps.log)
    con.print(
        f"report: {out / 'report.html'} and {out / 'report.json'} ({len(steps.log) - reused} "
        f"steps run, {reused} reused, {time.perf_counter() - t_start:.0f} s)"
    )
    return report.data
