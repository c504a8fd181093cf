"""What a whole study (`caloquant run`) made, typed as the report reads it: the validations
(:class:`Checked`), the quantize artifacts (:class:`Artifact`), every variant and model, the
Monte Carlo references and the :class:`StudyOutcome` that the run stage hands to
:func:`caloquant.report.study_report.study_report`, which reads the benchmark JSON through
:class:`Benchmark`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError


@dataclass(frozen=True)
class Checked:
    """One validation of the study: its physics report (``caloquant.physics`` JSON) and figures."""

    path: Path
    plots: tuple[Path, ...] = ()

    def report(self) -> dict[str, Any]:
        return dict(json.loads(self.path.read_text()))

    def png(self, name: str) -> Path | None:
        return next((p for p in self.plots if p.name == name), None)


@dataclass(frozen=True)
class Artifact:
    """What the study reads of a quantize artifact. ``from_manifest`` is the one place the
    study reads the manifest's keys; ``manifest`` itself goes only to the tuner's tables
    (``tuner_table``, ``head_to_head_table``)."""

    executed_precision: str
    meets_tolerance: bool
    layer_precisions: dict[str, str]
    worst_ecal_rel: float
    worst_moment_shift: float
    size_bytes: int
    fp32_param_bytes: int
    manifest: dict[str, Any]
    trials: list[dict[str, Any]]  # the tuning log's trials and the chosen one
    chosen: str

    @classmethod
    def from_manifest(
        cls, manifest: dict[str, Any], trials: list[dict[str, Any]], chosen: str
    ) -> Artifact:
        m, ph = manifest, manifest["physics"]
        return cls(
            m["executed_precision"],
            bool(m["meets_tolerance"]),
            m["layer_precisions"],
            ph["worst_ecal_rel"],
            ph["worst_moment_shift"],
            m["size_bytes"],
            m["fp32_param_bytes"],
            manifest,
            trials,
            chosen,
        )


@dataclass(frozen=True)
class VariantOutcome:
    """One variant of one model as the study made it."""

    name: str
    is_fp32: bool
    timed: Path  # the checkpoint or artifact the benchmark timed: its key in the benchmark JSON
    vs_reference: Mapping[str, Checked]  # per reference set: "flat", and "points" when made
    vs_fp32: Checked | None = None  # paired with fp32 on the same latents (None: fp32 itself)
    artifact: Artifact | None = None  # None: the fp32 checkpoint itself


@dataclass(frozen=True)
class ModelOutcome:
    """One model of the study: its variants (fp32 first) and the statistical floor (a second,
    independent fp32 sample against the first)."""

    slug: str
    fp32_bytes: int
    variants: tuple[VariantOutcome, ...]
    closure: Checked
    skipped: Mapping[str, str] = field(default_factory=dict)  # variant -> why it was not repeated

    def variant(self, name: str) -> VariantOutcome | None:
        return next((v for v in self.variants if v.name == name), None)


@dataclass(frozen=True)
class Reference:
    """A Monte Carlo reference set: its engine, size and the step's record (for report.json)."""

    engine: str
    n: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class StudyOutcome:
    """Everything a study made, as the report reads it."""

    config: Mapping[str, Any]  # the resolved settings: report.json's "config"
    models: tuple[str, ...]
    quick: bool
    references: Mapping[str, Reference]  # "flat", and "points" when made
    per_model: tuple[ModelOutcome, ...]
    bench_json: Path
    bench_plots: tuple[Path, ...]
    steps: list[dict[str, Any]]
    wall_s: float


class Benchmark:
    """The benchmark JSON with its models found by the file each one timed, never by position:
    a change in what the benchmark times, or in its order, cannot pair a variant with another
    variant's speed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text())
        self.by_file: dict[Path, dict[str, Any]] = {}
        for m in self.data["models"]:
            key = Path(m["path"]).resolve()
            if key in self.by_file:
                raise CaloquantError(f"{path}: {m['path']} timed twice; delete it to time again")
            self.by_file[key] = m

    def model(self, timed: Path, label: str) -> dict[str, Any]:
        m = self.by_file.get(timed.resolve())
        if m is None:
            raise CaloquantError(
                f"{self.path} has no timing of {label} ({timed}); "
                "delete it to time every variant again"
            )
        return m
