"""The 3DGAN authors' epoch-selection ("optimisation") metric, reference physics.md section 2.6.

Written from the definition in the authors' ``keras/analysis/TestingObjective.py`` ``metric``
(repository svalleco/3Dgan, branch Energy-gan). Per energy point p (110, 150, 190 GeV, showers
with p - 5 < Ep < p + 5 GeV), reference ("act") against candidate ("gan"):

* position term: for each axis and each moment k in (M1, M2), the relative error of the
  sample means, (<Mk>_ref - <Mk>_cand) / <Mk>_ref; M2 is the per-shower variance (not its
  square root). The term is the mean of the six absolute relative errors
  (the authors: sum over axes / 3, then sum over moments / 2).
* profile term: for each axis, the mean shower profile of each sample (GeV per slice), the
  relative error per slice (P_ref - P_cand) / P_ref, its absolute value averaged over the
  slices; then the mean over the three axes.
* sampling-fraction term: mean over showers of |SF_ref - SF_cand| / SF_ref, SF = Ecal / Ep,
  with the showers of the two samples paired row by row (the authors generate one candidate
  shower per reference shower, at its energy). Here: the i-th reference shower of the window
  with the i-th candidate shower, over the first min(n_ref, n_cand) of each. For samples with
  the same energies in the same order (``caloquant sample --energies``) this is exactly the
  authors' term; for independent samples it includes the per-shower spread of SF, so it does
  not vanish even for two samples of one source.

Each term is averaged over the energy points; the metric is their sum.

Departures from the authors' code, each on purpose:

1. A profile slice whose reference mean is exactly 0 makes the authors' relative error 0/0
   (NaN, if the candidate is 0 too) or x/0 (inf), and the whole metric NaN or inf. Here such
   slices are left out of that axis's average; how many were left out and how much candidate
   energy they hold are reported (``empty_slices``, ``cand_gev_in_empty_slices``).
2. ``GANutils.metric`` contains the position block twice, so the position term is counted
   twice. Every other version counts it once: ``analysis/TestingObjective.metric``, whose plots
   label the parts "moment", "energy profile" and "sampling fraction" error, and
   ``paramScan/TestingObjective.py`` (which has no ``metric``; its ``metric4`` and ``metric3``);
   that documented intent is what is implemented.
3. Sample means skip showers whose moments are undefined (zero total energy), and the
   sampling-fraction term skips pairs whose reference shower is empty; the authors drop empty
   reference showers on reading and would get NaN from an empty generated one.
4. The authors cap the reference at 2,000 showers per point; here every shower in the window
   is used (the caller chooses the sample size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.physics.features import AXES, DEFAULT_ZERO_THRESHOLD_GEV, shower_features, zero_below
from caloquant.physics.samples import Source, as_sample, check_threshold

DEFAULT_METRIC_POINTS_GEV = (110.0, 150.0, 190.0)
DEFAULT_METRIC_HALF_WIDTH_GEV = 5.0
METRIC_FEATURES = ("sf", *(f"{k}_{a}" for k in ("mean", "var", "profile") for a in AXES))


def point_mask(energies: np.ndarray, point: float, half_width: float) -> np.ndarray:
    """Showers in the authors' open window p - h < Ep < p + h (GANutils.get_sorted)."""
    return (energies > point - half_width) & (energies < point + half_width)


def _profile_term(ref: np.ndarray, cand: np.ndarray) -> tuple[float, int, float]:
    """Mean |relative error| of the mean profiles over slices where the reference is not 0."""
    pr, pc = ref.mean(axis=0), cand.mean(axis=0)
    defined = pr != 0
    rel = np.abs(pr[defined] - pc[defined]) / pr[defined]
    value = float(rel.mean()) if rel.size else float("nan")
    return value, int((~defined).sum()), float(pc[~defined].sum())


def _one_point(
    fr: dict[str, np.ndarray], fc: dict[str, np.ndarray], point: float, n_ref: int, n_cand: int
) -> dict[str, Any]:
    rel_moments = {}
    for ax in AXES:
        rel = []
        for k in ("mean", "var"):  # M1 and M2
            a, g = np.nanmean(fr[f"{k}_{ax}"]), np.nanmean(fc[f"{k}_{ax}"])
            with np.errstate(divide="ignore", invalid="ignore"):
                rel.append(float((a - g) / a))
        rel_moments[ax] = rel
    position = float(np.mean([abs(v) for ax in AXES for v in rel_moments[ax]]))

    profile_rel, empty, cand_in_empty = {}, {}, {}
    for ax in AXES:
        profile_rel[ax], empty[ax], cand_in_empty[ax] = _profile_term(
            fr[f"profile_{ax}"], fc[f"profile_{ax}"]
        )
    profile = float(np.mean(list(profile_rel.values())))

    k = min(n_ref, n_cand)
    sr, sc = fr["sf"][:k], fc["sf"][:k]
    ok = np.isfinite(sr) & np.isfinite(sc) & (sr > 0)
    sf = float(np.mean(np.abs(sr[ok] - sc[ok]) / sr[ok])) if ok.any() else float("nan")
    return {
        "energy_gev": point,
        "n_ref": n_ref,
        "n_cand": n_cand,
        "n_pairs": int(ok.sum()),
        "position": position,
        "profile": profile,
        "sampling_fraction": sf,
        "moment_rel_err": {ax: {"m1": v[0], "m2": v[1]} for ax, v in rel_moments.items()},
        "profile_rel_err": profile_rel,
        "empty_slices": empty,
        "cand_gev_in_empty_slices": cand_in_empty,
    }


def metric_from_features(
    fr: dict[str, np.ndarray],
    er: np.ndarray,
    fc: dict[str, np.ndarray],
    ec: np.ndarray,
    points: Sequence[float] = DEFAULT_METRIC_POINTS_GEV,
    half_width: float = DEFAULT_METRIC_HALF_WIDTH_GEV,
) -> dict[str, Any]:
    """The metric from per-shower features (``shower_features`` output) and energies (GeV)."""
    if not points:
        raise CaloquantError("optimisation metric: no energy points given")
    if not half_width > 0:
        raise CaloquantError(
            f"optimisation metric: window half-width must be > 0 GeV, got {half_width}"
        )
    rows = []
    for p in points:
        mr, mc = point_mask(er, p, half_width), point_mask(ec, p, half_width)
        nr, nc = int(mr.sum()), int(mc.sum())
        if nr < 2 or nc < 2:
            raise CaloquantError(
                f"optimisation metric: the window {p:g}+-{half_width:g} GeV holds {nr} reference "
                f"and {nc} candidate showers; need at least 2 each"
            )
        rows.append(
            _one_point(
                {k: fr[k][mr] for k in METRIC_FEATURES},
                {k: fc[k][mc] for k in METRIC_FEATURES},
                float(p),
                nr,
                nc,
            )
        )
    parts = {
        t: float(np.mean([r[t] for r in rows]))
        for t in ("position", "profile", "sampling_fraction")
    }
    return {
        "total": float(sum(parts.values())),
        **parts,
        "points_gev": [float(p) for p in points],
        "half_width_gev": float(half_width),
        "per_point": rows,
    }


def optimisation_metric(
    ref: Source,
    cand: Source,
    points: Sequence[float] = DEFAULT_METRIC_POINTS_GEV,
    half_width: float = DEFAULT_METRIC_HALF_WIDTH_GEV,
    zero_threshold: float = DEFAULT_ZERO_THRESHOLD_GEV,
    chunk: int = 1024,
) -> dict[str, Any]:
    """The authors' epoch-selection metric of ``cand`` against ``ref`` (lower is better).

    ``ref`` and ``cand``: files or ``(showers, energies)`` arrays in GeV. ``zero_threshold``:
    cells below it are set to 0 first (the authors zero their Geant4 data below 1e-6 GeV).
    Returns ``total`` = ``position`` + ``profile`` + ``sampling_fraction`` (each averaged over
    the points) and ``per_point`` details; see the module docstring for the definition.
    """
    zero_threshold = check_threshold(zero_threshold, "zero_threshold")
    feats, energies, grids = [], [], []
    for src, name in ((ref, "REF"), (cand, "CAND")):
        smp = as_sample(src, name)
        try:
            if len(smp.grid) != 3:
                raise CaloquantError(
                    f"{name}: the optimisation metric needs 3-d showers, got grid {smp.grid}"
                )
            grids.append(smp.grid)
            parts: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_FEATURES}
            kept: list[np.ndarray] = []
            for s, e in smp.chunks(chunk):
                m = np.zeros(e.shape, bool)
                for p in points:
                    m |= point_mask(e, p, half_width)
                if not m.any():  # only showers inside a window enter the metric
                    continue
                f = shower_features(zero_below(s[m], zero_threshold), e[m])
                for k in METRIC_FEATURES:
                    parts[k].append(f[k])
                kept.append(e[m])
            # an empty window is reported by metric_from_features before any feature is used
            feats.append({k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()})
            energies.append(np.concatenate(kept) if kept else np.empty(0))
        finally:
            smp.close()
    if grids[0] != grids[1]:
        raise CaloquantError(f"grids differ: REF {grids[0]} vs CAND {grids[1]}")
    out = metric_from_features(feats[0], energies[0], feats[1], energies[1], points, half_width)
    out["zero_threshold_gev"] = zero_threshold
    return out
