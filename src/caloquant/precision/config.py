"""Configuration objects for reduced precision: what to build and what "physically right" means.

In the spirit of torchao's config-object API: a :class:`QuantizeConfig` says *what* to do,
:func:`caloquant.precision.quantize` does it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    as_float,
    check_float,
    check_int,
    check_seconds,
    check_seed,
)
from caloquant.precision.registry import check_supported
from caloquant.timing import RaceConfig, TimingConfig

Backend = Literal["openvino", "onnxruntime", "torch"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
Recipe = Literal["physics", "naive"]
# a range estimator; "-asym": with asymmetric activation ranges (where the engine's int8 scheme
# has them)
Calibration = Literal[
    "minmax", "percentile", "histogram", "minmax-asym", "percentile-asym", "histogram-asym"
]

CALIBRATIONS: tuple[str, ...] = (
    "minmax",
    "percentile",
    "histogram",
    "minmax-asym",
    "percentile-asym",
    "histogram-asym",
)


def per_unit_calibration(default: str, overrides: dict[str, str]) -> str:
    """One calibration string for a default range estimator plus per-unit ones (units by their
    short label): ``"minmax;conv2.conv=percentile"``. Plain ``"minmax"`` when there are none."""
    return ";".join([default, *(f"{u}={e}" for u, e in sorted(overrides.items()) if e != default)])


def parse_calibration(spec: str) -> tuple[str, dict[str, str]]:
    """``"minmax;conv2.conv=percentile"`` -> ("minmax", {"conv2.conv": "percentile"})."""
    default, *rest = spec.split(";")
    overrides = dict(r.split("=", 1) for r in rest)
    bad = [e for e in (default, *overrides.values()) if e not in CALIBRATIONS]
    if bad:
        raise CaloquantError(
            f"unknown calibration '{bad[0]}' in '{spec}' (choose from {', '.join(CALIBRATIONS)})"
        )
    return default, overrides


@dataclass(frozen=True)
class Tolerance:
    """How far a reduced-precision model may move the physics, on paired latents vs fp32.

    * ``ecal_rel``: max |Ecal_q / Ecal_fp32 - 1| in every energy point;
    * ``moment_shift``: max |shift| of the mean and sqrt(M2) moments along x, y, z (cells);
    * ``mse_factor``: projection MSE against a reference sample no worse than this factor
      times the fp32 model's (checked only when a reference sample is given);
    * ``margin_sigma``: a deviation counts with this many standard errors added
      (|Ecal ratio - 1| + k * error <= ecal_rel, the same for each moment shift), so that a
      candidate cannot pass by a fluctuation of the evaluation sample.
    """

    ecal_rel: float = 0.005
    moment_shift: float = 0.05
    mse_factor: float = 1.1
    margin_sigma: float = 2.0

    @classmethod
    def load(cls, spec: str | Path) -> Tolerance:
        """A preset name (default, strict, loose) or a JSON file with any of the fields."""
        if str(spec) in TOLERANCE_PRESETS:
            return TOLERANCE_PRESETS[str(spec)]
        p = Path(spec)
        if not p.exists():
            raise CaloquantError(
                f"--tolerance '{spec}' is neither a preset ({', '.join(TOLERANCE_PRESETS)}) "
                "nor a file"
            )
        if not p.is_file():
            raise CaloquantError(f"--tolerance {p}: is a folder, expected a JSON file or a preset")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
            raise CaloquantError(f"--tolerance {p}: malformed tolerance file ({first})") from None
        names = tuple(cls.__dataclass_fields__)
        if not isinstance(d, dict):
            raise CaloquantError(
                f"--tolerance {p}: must hold a JSON object with any of {', '.join(names)} "
                f'(like {{"ecal_rel": 0.005}}), got a JSON {type(d).__name__}'
            )
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise CaloquantError(
                f"--tolerance {p}: unknown field(s) {', '.join(unknown)} "
                f"(known: {', '.join(names)})"
            )
        return cls(**{k: as_float(v, f"--tolerance {p}: {k}") for k, v in d.items()})

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            object.__setattr__(self, k, check_float(v, f"tolerance {k}", minimum=0.0))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


TOLERANCE_PRESETS: dict[str, Tolerance] = {
    "default": Tolerance(),
    "strict": Tolerance(ecal_rel=0.002, moment_shift=0.02),
    "loose": Tolerance(ecal_rel=0.02, moment_shift=0.1, mse_factor=1.5),
}


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tuning (:mod:`caloquant.precision.qat`), tried by the physics
    int8 recipe on the units post-training int8 could not take.

    ``minutes``: wall-time box (0 = no QAT unless ``max_steps`` is given), always capped by what
    is left of the tuning budget; ``max_steps``: a step limit (deterministic runs);
    ``refresh_every``: steps between re-reading the engine's activation ranges;
    ``diverge_factor``: a loss (mean of the last ten steps) above this many times the starting
    level (the mean of the first ten steps; before those, the square of the factor times the
    first step's loss) ends the run as diverged (the post-training result stands);
    ``bias_groups``: the batch is split into this many groups of similar energy, and each
    group's *mean* deviation (what the tolerance measures) enters the loss weighted by the
    group's size (0: per-shower terms only); ``state_dir``: where interrupted runs are
    resumed from (None: the user cache)."""

    minutes: float = 0.0  # off until it pays on the built-in models (docs/findings.md)
    max_steps: int | None = None
    batch: int = 32
    lr: float = 1e-4
    refresh_every: int = 50
    checkpoint_every: int = 20
    diverge_factor: float = 4.0
    bias_groups: int = 0  # off until measured to pay (docs/findings.md 8c)
    seed: int = 0
    state_dir: str | None = None

    def __post_init__(self) -> None:
        check_float(self.minutes, "--qat-minutes", minimum=0.0, finite=False)
        checks = [
            (
                self.max_steps is None or self.max_steps >= 1,
                f"qat max_steps must be >= 1, got {self.max_steps}",
            ),
            (self.batch >= 2, f"qat batch must be >= 2, got {self.batch}"),
            (self.lr > 0, f"qat lr must be > 0, got {self.lr}"),
            (self.refresh_every >= 1, f"qat refresh_every must be >= 1, got {self.refresh_every}"),
            (
                self.checkpoint_every >= 1,
                f"qat checkpoint_every must be >= 1, got {self.checkpoint_every}",
            ),
            (self.diverge_factor > 1, f"qat diverge_factor must be > 1, got {self.diverge_factor}"),
            (
                0 <= self.bias_groups <= self.batch // 2,
                f"qat bias_groups must be between 0 and batch/2 ({self.batch // 2}), "
                f"got {self.bias_groups}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise CaloquantError(msg)

    @property
    def enabled(self) -> bool:
        return self.minutes > 0 or self.max_steps is not None


@dataclass(frozen=True)
class QuantizeConfig:
    """What `caloquant quantize` builds."""

    backend: Backend = "openvino"
    precision: Precision = "int8"
    recipe: Recipe = "physics"
    tolerance: Tolerance = field(default_factory=Tolerance)
    calibration: Calibration = "minmax"
    calib_n: int = 512
    eval_n_per_point: int = 200
    eval_energies_gev: tuple[float, ...] | None = None  # default: 5 points over the model's range
    seed: int = 0
    threads: int | None = None  # None: the caller's torch thread setting
    batch: int = 32
    time_budget_s: float = 540.0
    head_to_head: bool = (
        False  # also run other tools (engine's accuracy control, INC, LiteRT) at the same tolerance
    )
    rewrite: bool = True  # exact sub-pixel rewrite of upsample + conv chains (physics recipe only)
    # exact equalization of convolution inputs tried on rejected units (physics int8), one graph
    # per alpha
    equalize_alphas: tuple[float, ...] = (0.5, 1.0)
    # a candidate within the tolerance but not within it plus the error margin is evaluated again
    # with this many times eval_n_per_point more showers at the points that decide (0: never)
    extend_factor: int = 3
    # quantization-aware fine-tuning of the units post-training int8 could not take (physics int8)
    qat: QATConfig = field(default_factory=QATConfig)
    # speed measurements: interleaved rounds for the reported speeds, windows of the final race
    timing: TimingConfig = field(default_factory=TimingConfig)
    # the final race of the candidates against the exact engine model (paired rounds, tie band)
    race: RaceConfig = field(default_factory=RaceConfig)

    def __post_init__(self) -> None:
        check_supported(self.backend, self.precision)
        if self.recipe not in ("physics", "naive"):
            raise CaloquantError(f"unknown recipe '{self.recipe}' (physics or naive)")
        if self.calibration not in CALIBRATIONS:
            raise CaloquantError(
                f"unknown calibration '{self.calibration}' (choose from {', '.join(CALIBRATIONS)})"
            )
        if self.extend_factor < 0:
            raise CaloquantError(f"extend_factor must be >= 0, got {self.extend_factor}")
        if any(not 0.0 <= a <= 1.0 for a in self.equalize_alphas):
            raise CaloquantError(f"equalize_alphas must lie in [0, 1], got {self.equalize_alphas}")
        check_int(self.calib_n, "--calib-n", 8, MAX_SHOWERS_PER_CALL)
        check_int(self.eval_n_per_point, "--eval-n", 2, MAX_SHOWERS_PER_CALL)
        check_int(self.batch, "--batch", 1, MAX_BATCH)
        if self.threads is not None:
            check_int(self.threads, "--threads", 1, MAX_THREADS)
        check_seed(self.seed)
        check_seconds(self.time_budget_s, "tuning time budget (--tune-budget, time_budget_s)")

    @property
    def searches_int8(self) -> bool:
        """The physics recipe's int8 search: units, equalized and fine-tuned graphs, the
        frontier, the head to head."""
        return self.recipe == "physics" and self.precision == "int8"

    @property
    def confirms(self) -> bool:
        """The choice must pass again on a second, independent latent set (physics recipe)."""
        return self.recipe == "physics"

    @property
    def rewrites(self) -> bool:
        """The exact sub-pixel rewrite of upsample + conv chains (physics recipe)."""
        return self.rewrite and self.recipe == "physics"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tolerance"] = self.tolerance.to_dict()
        d["timing"] = self.timing.to_dict()
        d["race"] = self.race.to_dict()
        d["qat"] = asdict(self.qat)
        return d
