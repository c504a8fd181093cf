"""The two metrics a training epoch is scored by: the selection metric and the authors'.

**The selection metric** (lower is better; docs/training.md "Per-epoch validation and the
selected epoch"). The validation showers are split into energy bins: 50 GeV bins with edges at
multiples of 50 GeV over the set's energies (the acceptance of the model is per 50 GeV bin),
or, for a set of at most 12 distinct energies, one bin per energy. Per bin, for reference and
candidate, with R = Ecal/Ep of each shower (cells below 1e-6 GeV zeroed in both, as the
authors do):

* energy term: the mean response <R> and the resolution sigma(R)/<R>;
* shape term: the means over the showers of the first moment (M1, the centre) and of the square
  root of the second (sqrt(M2), the width) along x, y and z, in cells, and of the hit count
  (cells at or above 1e-6 GeV: the model's acceptance asks for it within 10 %).

Each difference candidate - reference is divided by its statistical error (the pull). The error
is the one the difference would have if the candidate followed the reference (the null
hypothesis), from the reference sample: sd sqrt(1/n_ref + 1/n_cand), sd the per-shower standard
deviation (for the resolution the spread of its delta-method pseudo-values,
``physics.stats.relative_spread_pseudo``). So every epoch is measured with the same yardstick,
and an epoch cannot hide an offset behind its own larger spread. ``energy`` is the mean over
bins of (pull_response^2 + pull_resolution^2) / 2, ``shape`` the mean over bins and the seven
shape quantities of pull^2, and the metric is energy + shape. Each term is a chi2 per degree of
freedom: about 1 for a candidate the validation set cannot tell from the reference, whatever its
size, and the energy weighs as much as the seven shape quantities together. It cannot be free of
the sample size for a model that is off: a fixed offset gives a pull^2 in proportion to the
showers per bin (a larger set resolves smaller offsets). Every pull scales alike, so the ranking
of two epochs and the balance of energy against shape do not depend on the size; the size-free
numbers (response and resolution ratios per bin) are recorded beside it. A metric that is not a
number (e.g. a candidate with no energy) counts as infinitely bad.

**The authors' metric** (physics.md 2.6, ``TestingObjective.metric`` of svalleco/3Dgan:
relative errors of the first two moments along each axis, of the mean shower profiles and of
the per-shower sampling fraction, in windows Ep +- 5 GeV around 110, 150 and 190 GeV). Its
sampling-fraction term compares showers pairwise, so the ~5 % per-shower spread dominates it and
it hardly sees a scale error. Its points: the authors' when each window holds at least
``MIN_PER_POINT`` showers; a set of fixed energies uses its own energies; otherwise three points
at the 1/6, 1/2 and 5/6 quantiles of its energies; a window needs at least 2 showers.

caloquant.physics is imported only inside the functions that score an epoch: its scikit-learn
import costs every process 1.3 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError

MIN_PER_POINT = 20
# the authors' points, window and zero threshold (as caloquant.physics.DEFAULT_METRIC_POINTS_GEV,
# DEFAULT_METRIC_HALF_WIDTH_GEV and AUTHORS_ZERO_THRESHOLD_GEV; repeated, not imported: above)
AUTHORS_POINTS_GEV = (110.0, 150.0, 190.0)
HALF_WIDTH_GEV = 5.0
ZERO_THRESHOLD_GEV = 1e-6
BIN_WIDTH_GEV = 50.0
MAX_FIXED_ENERGIES = 12
SHAPE_KEYS = (*(f"{k}_{a}" for k in ("mean", "width") for a in ("x", "y", "z")), "hits")
Summary = dict[str, np.ndarray]  # per shower: "ep" (GeV), "r" (Ecal/Ep) and SHAPE_KEYS


def in_windows(energies: np.ndarray, points: list[float]) -> np.ndarray:
    """Showers inside one of the open windows p - 5 < Ep < p + 5 GeV."""
    e = np.asarray(energies)
    return np.any([(e > p - HALF_WIDTH_GEV) & (e < p + HALF_WIDTH_GEV) for p in points], axis=0)


def metric_points(energies: np.ndarray) -> list[float]:
    """The energy points of the authors' metric (see the module docstring)."""
    e = np.asarray(energies, dtype=np.float64)
    if e.size == 0:
        raise CaloquantError("the validation set is empty")
    if all(in_windows(e, [p]).sum() >= MIN_PER_POINT for p in AUTHORS_POINTS_GEV):
        return list(AUTHORS_POINTS_GEV)
    distinct = np.unique(e.round(3))
    if distinct.size <= MAX_FIXED_ENERGIES:
        points = [float(x) for x in distinct]
    else:
        points = [float(round(q)) for q in np.quantile(e, [1 / 6, 1 / 2, 5 / 6])]
    for p in points:
        k = int(in_windows(e, [p]).sum())
        if k < 2:
            raise CaloquantError(
                f"the validation set has {k} shower(s) within {HALF_WIDTH_GEV:g} GeV of {p:g} GeV, "
                "the optimisation metric needs at least 2; give a larger validation set"
            )
    return points


# -- energy bins ------------------------------------------------------------------------------
def bin_index(energies: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin of each energy, bin k being edges[k] <= Ep < edges[k + 1] (the last bin
    includes its upper edge); -1 outside."""
    e, ed = np.asarray(energies, dtype=np.float64), np.asarray(edges, dtype=np.float64)
    k = np.searchsorted(ed, e, side="right") - 1
    k[e == ed[-1]] = ed.size - 2
    k[(e < ed[0]) | (e > ed[-1])] = -1
    return k


def natural_edges(e: np.ndarray) -> tuple[list[float], bool]:
    """One bin per energy of a fixed-energy set, else 50 GeV bins; (edges, fixed energies?)."""
    distinct = np.unique(np.asarray(e, dtype=np.float64).round(3))
    if distinct.size <= MAX_FIXED_ENERGIES:
        mids = (distinct[1:] + distinct[:-1]) / 2
        return [float(distinct[0]) - 1.0, *map(float, mids), float(distinct[-1]) + 1.0], True
    lo = np.floor(distinct[0] / BIN_WIDTH_GEV) * BIN_WIDTH_GEV
    hi = max(np.ceil(distinct[-1] / BIN_WIDTH_GEV) * BIN_WIDTH_GEV, lo + BIN_WIDTH_GEV)
    return [float(x) for x in np.arange(lo, hi + BIN_WIDTH_GEV / 2, BIN_WIDTH_GEV)], False


def merge_bins(edges: list[float], counts: list[int], min_n: int) -> tuple[list[float], list[int]]:
    """Merge the bin with the fewest showers into its smaller neighbour until each has min_n
    (or one bin is left)."""
    edges, counts = list(edges), list(counts)
    while len(counts) > 1 and min(counts) < min_n:
        i = int(np.argmin(counts))
        k = i + 1 if i == 0 or (i < len(counts) - 1 and counts[i + 1] < counts[i - 1]) else i
        counts[k - 1] += counts.pop(k)  # bins k - 1 and k become one: edge k goes
        del edges[k]
    return edges, counts


def bin_labels(e: np.ndarray, edges: list[float], fixed: bool) -> list[str]:
    """'100-150 GeV', or the energies a bin of a fixed-energy set holds ('110+150 GeV')."""
    if not fixed:
        return [f"{a:g}-{b:g} GeV" for a, b in zip(edges[:-1], edges[1:])]
    k = bin_index(e, edges)
    return [
        "+".join(f"{x:g}" for x in np.unique(e[k == i].round(3))) + " GeV"
        for i in range(len(edges) - 1)
    ]


# -- the selection metric ---------------------------------------------------------------------
def summarise(showers: np.ndarray, energies: np.ndarray, chunk: int = 256) -> Summary:
    """Per-shower Ecal/Ep, the first two moments along each axis and the hit count (cells below
    1e-6 GeV zeroed first, hits above it; NaN moments for an empty shower): all the selection
    metric needs."""
    e = np.asarray(energies, dtype=np.float64)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("r", *SHAPE_KEYS)}
    for lo in range(0, len(e), chunk):
        s = np.asarray(showers[lo : lo + chunk], dtype=np.float32)
        s = np.where(s < ZERO_THRESHOLD_GEV, np.float32(0), s)
        profiles = {
            "x": s.sum(axis=(2, 3), dtype=np.float64),
            "y": s.sum(axis=(1, 3), dtype=np.float64),
            "z": s.sum(axis=(1, 2), dtype=np.float64),
        }
        ecal = profiles["z"].sum(axis=1)
        # hit cells: above the threshold, as caloquant.physics.shower_features counts them
        hits = np.count_nonzero(s.reshape(len(s), -1) > ZERO_THRESHOLD_GEV, axis=1)  # not NaN
        out["hits"].append(hits.astype(np.float64))
        out["r"].append(ecal / e[lo : lo + chunk])
        for ax, p in profiles.items():
            idx = np.arange(p.shape[1], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                m1 = p @ idx / ecal
                m2 = np.einsum("ni,ni->n", p, (idx[None, :] - m1[:, None]) ** 2) / ecal
            out[f"mean_{ax}"].append(m1)
            out[f"width_{ax}"].append(np.sqrt(np.maximum(m2, 0.0)))
    return {"ep": e, **{k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}}


def _pull(n_ref: int, n_cand: int, cand: float, ref: float, sd: float) -> float:
    """(cand - ref) / (sd sqrt(1/n_ref + 1/n_cand)): the error of the difference under the null."""
    err, diff = sd * np.sqrt(1.0 / n_ref + 1.0 / n_cand), cand - ref
    if not np.isfinite(diff):
        return float("nan")
    if not err > 0:
        return 0.0 if diff == 0 else float("inf")
    return float(diff / err)


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _one_bin(ref: Summary, cand: Summary, label: str) -> dict[str, Any]:
    from caloquant.physics.stats import relative_spread_pseudo  # only at epoch ends

    rr, rc = _finite(ref["r"]), _finite(cand["r"])
    if rr.size < 2 or rc.size < 2:
        raise CaloquantError(
            f"selection metric: the bin {label} holds {rr.size} reference and {rc.size} "
            "candidate showers; need at least 2 each"
        )
    nr, nc = rr.size, rc.size
    mr, mc = float(rr.mean()), float(rc.mean())
    with np.errstate(invalid="ignore", divide="ignore"):
        res_r, res_c = float(rr.std(ddof=1) / mr), float(rc.std(ddof=1) / mc)
        out: dict[str, Any] = {
            "bin": label,
            "n_ref": nr,
            "n_cand": nc,
            "response_ref": mr,
            "response_ratio": mc / mr,
            "resolution_ref": res_r,
            "resolution_ratio": res_c / res_r,
            "pull_response": _pull(nr, nc, mc, mr, float(rr.std(ddof=1))),
            "pull_resolution": _pull(
                nr, nc, res_c, res_r, float(np.std(relative_spread_pseudo(rr), ddof=1))
            ),
        }
    shape = {}
    for k in SHAPE_KEYS:
        a, b = _finite(ref[k]), _finite(cand[k])
        ok = a.size >= 2 and b.size >= 1
        sd = float(a.std(ddof=1)) if ok else 0.0
        shape[k] = _pull(a.size, b.size, float(b.mean()), float(a.mean()), sd) if ok else np.nan
    out["pull_shape"] = shape
    out["energy"] = (out["pull_response"] ** 2 + out["pull_resolution"] ** 2) / 2
    out["shape"] = float(np.mean([v**2 for v in shape.values()]))
    return out


def selection_metric(
    ref: Summary, cand: Summary, edges: Sequence[float], labels: Sequence[str]
) -> dict[str, Any]:
    """The selection metric of ``cand`` against ``ref`` (``summarise`` outputs) in the given
    energy bins: {"selection_metric", "energy", "shape", "bins": per-bin details}."""
    kr, kc = bin_index(ref["ep"], edges), bin_index(cand["ep"], edges)
    rows = [
        _one_bin(
            {k: v[kr == i] for k, v in ref.items()}, {k: v[kc == i] for k, v in cand.items()}, lab
        )
        for i, lab in enumerate(labels)
    ]
    energy = float(np.mean([r["energy"] for r in rows]))
    shape = float(np.mean([r["shape"] for r in rows]))
    total = energy + shape
    return {
        "selection_metric": total if np.isfinite(total) else float("inf"),
        "energy": energy,
        "shape": shape,
        "bins": rows,
    }


def authors_metric(
    ref: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray], points: list[float]
) -> dict[str, Any]:
    """The authors' optimisation metric of ``cand`` against ``ref``: {"authors_metric", parts}."""
    from caloquant.physics import optimisation_metric  # only at epoch ends

    res = optimisation_metric(
        ref, cand, points=points, half_width=HALF_WIDTH_GEV, zero_threshold=ZERO_THRESHOLD_GEV
    )
    total = float(res["total"])
    return {
        "authors_metric": total if np.isfinite(total) else float("inf"),
        **{k: res[k] for k in ("position", "profile", "sampling_fraction")},
        "authors_points_gev": list(points),
    }
