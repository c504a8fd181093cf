"""The physics objective of the precision tuner, and measured speed.

A candidate is judged on paired latents against the fp32 model: the same raw noise at a few
fixed energy points (default 5 over the model's range), so that sample noise cancels and a
0.1 % energy change is resolved with a few hundred showers per point. Definitions are those
of :func:`caloquant.physics.validate` (paired mode), so the tuner and `caloquant validate`
always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caloquant.models import ModelSpec, condition_latent
from caloquant.physics import validate
from caloquant.precision.config import Tolerance

AXES = ("x", "y", "z")


def energy_points(spec: ModelSpec, n_points: int = 5) -> tuple[float, ...]:
    lo, hi = spec.energy_range_gev
    return tuple(float(x) for x in np.linspace(lo, hi, n_points))


@dataclass
class EvalSet:
    """Fixed latents at energy points, with the fp32 model's showers for them."""

    spec: ModelSpec
    energies: np.ndarray
    latents: np.ndarray
    reference: np.ndarray
    points: tuple[float, ...]
    fp32: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    seed: int = 0
    stream: int = 0
    _more: dict[tuple[tuple[float, ...], int], EvalSet] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        spec: ModelSpec,
        fp32: Callable[[np.ndarray], np.ndarray],
        n_per_point: int,
        seed: int,
        points: tuple[float, ...] | None = None,
        batch: int = 100,
        stream: int = 0,
    ) -> EvalSet:
        """``stream``: independent latent sets for the same seed (0: tuning, 1: confirmation)."""
        pts = points or energy_points(spec)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([seed, 0xE7A1] + ([stream] if stream else [])))
        )
        e = np.repeat(np.asarray(pts, dtype=np.float64), n_per_point)
        lat = condition_latent(
            rng.standard_normal((e.size, spec.noise_dim), dtype=np.float32), e, spec
        )
        ref = run_batched(fp32, lat, batch)
        return cls(spec, e, lat, ref, tuple(pts), fp32, seed, stream)

    def extended(self, points: tuple[float, ...], n_per_point: int) -> EvalSet:
        """This set plus ``n_per_point`` more paired showers at each of ``points``, from another
        independent latent stream (built once per request): where a deviation is within the
        tolerance but its error is not, more showers decide. The first ``len(self.latents)``
        latents are this set's own, so a candidate's showers for them can be reused."""
        if self.fp32 is None:
            raise ValueError("this evaluation set cannot grow: it was not built with an fp32 model")
        key = (tuple(points), n_per_point)
        if key not in self._more:
            extra = EvalSet.build(
                self.spec,
                self.fp32,
                n_per_point,
                self.seed,
                points=tuple(points),
                stream=self.stream + 2,
            )
            self._more[key] = EvalSet(
                self.spec,
                np.concatenate([self.energies, extra.energies]),
                np.concatenate([self.latents, extra.latents]),
                np.concatenate([self.reference, extra.reference]),
                self.points,
                self.fp32,
                self.seed,
                self.stream,
            )
        return self._more[key]

    def score(self, out: np.ndarray) -> dict[str, Any]:
        """Physics of candidate showers ``out`` (for ``self.latents``) against the fp32 showers."""
        if not np.all(np.isfinite(out)):
            return {
                "finite": False,
                "worst_ecal_rel": float("inf"),
                "worst_moment_shift": float("inf"),
                "points": [],
            }
        out = np.maximum(
            out, 0.0
        )  # a backend may return -0.0 or tiny negatives after ReLU in low precision
        bins = "points:" + ",".join(f"{p:g}" for p in self.points) + "/0.5"
        rep = validate(
            (self.reference, self.energies),
            (out, self.energies),
            bins=bins,
            paired=True,
            distances=False,
            detail=False,
        ).to_dict()
        pts = []
        for row in rep["bins"][1:]:
            pts.append(
                {
                    "energy_gev": (row["lo_gev"] + row["hi_gev"]) / 2,
                    "ecal_ratio": row["sampling_fraction"]["ratio"],
                    "ecal_ratio_err": row["sampling_fraction"]["ratio_err"],
                    "moment_shifts": {
                        f"{k}_{ax}": row["moments"][ax][k]["shift"]
                        for ax in AXES
                        for k in ("mean", "std")
                    },
                    "moment_shift_errs": {
                        f"{k}_{ax}": row["moments"][ax][k]["shift_err"]
                        for ax in AXES
                        for k in ("mean", "std")
                    },
                    "pixelwise_gev": row["pixelwise"]["mean"],
                    "hit_ratio": row["n_hits"]["ratio"],
                }
            )
        allb = rep["bins"][0]
        return {
            "finite": True,
            "worst_ecal_rel": float(max(abs(p["ecal_ratio"] - 1.0) for p in pts)),
            "worst_moment_shift": float(
                max(abs(v) for p in pts for v in p["moment_shifts"].values())
            ),
            "pixelwise_gev": allb["pixelwise"]["mean"],
            "pixelwise_std_gev": allb["pixelwise"]["std"],
            "projection_mse_vs_fp32": allb["projection_mse"],
            "hit_ratio": allb["n_hits"]["ratio"],
            "points": pts,
        }


def passes(score: dict[str, Any], tol: Tolerance) -> bool:
    return bool(score["finite"] and badness(score, tol) <= 1.0)


def _err(v: float) -> float:
    return (
        float(v) if np.isfinite(v) else float("inf")
    )  # an undefined error cannot vouch for anything


def badness(score: dict[str, Any], tol: Tolerance) -> float:
    """One number for ranking: the largest violation relative to its tolerance (<= 1 passes),
    each deviation counted with ``tol.margin_sigma`` standard errors added (paired errors,
    per energy point)."""
    if not score["finite"]:
        return float("inf")
    return max((point_badness(p, tol) for p in score["points"]), default=0.0)


def point_badness(p: dict[str, Any], tol: Tolerance) -> float:
    """:func:`badness` of one energy point."""
    tiny = 1e-12  # a zero tolerance is allowed (it is just unreachable)
    k = tol.margin_sigma
    e = abs(p["ecal_ratio"] - 1.0) + k * _err(p["ecal_ratio_err"])
    errs = p.get("moment_shift_errs", {})
    m = max(abs(v) + k * _err(errs.get(name, 0.0)) for name, v in p["moment_shifts"].items())
    return max(e / max(tol.ecal_rel, tiny), m / max(tol.moment_shift, tiny))


def within_without_margin(score: dict[str, Any], tol: Tolerance) -> bool:
    """Every deviation itself is within the tolerance (only the error margin may be missing)."""
    return bool(
        score["finite"]
        and score["worst_ecal_rel"] <= tol.ecal_rel
        and score["worst_moment_shift"] <= tol.moment_shift
    )


def run_batched(
    fn: Callable[[np.ndarray], np.ndarray], latents: np.ndarray, batch: int
) -> np.ndarray:
    return np.concatenate(
        [
            np.asarray(fn(latents[i : i + batch]), dtype=np.float32)
            for i in range(0, len(latents), batch)
        ]
    )
