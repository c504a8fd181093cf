"""Compare a candidate shower sample with a reference: the paper's metrics and modern ones.

One streaming pass over each sample (chunked, vectorised) collects per-shower features and
per-bin sums; everything else is computed from those. Every number carries its statistical
uncertainty where one is defined:

* means of per-shower quantities: standard error std / sqrt(n);
* ratios and shifts between independent samples: errors added in quadrature;
* ``paired`` samples (same latent vectors, same order): shifts and ratios from per-shower
  differences, whose errors are much smaller because the sample noise cancels;
* projection MSE: with ``projection_mse_noise``, the value expected from statistical
  fluctuations alone for two independent samples of one source;
* separation power: with ``floor``, the value between two halves of the reference;
* non-linear estimators (sqrt of a mean, moments of the summed profile, relative spreads):
  delta-method pseudo-values (``stats``), compared like plain means.

Cell thresholds: ``zero_threshold`` sets cells below it to 0 before any metric (default none;
the authors zero Geant4 cells below 1e-6 GeV); ``hit_threshold`` defines hit cells (default
1e-6 GeV; the authors count hits above 2e-4 GeV). Both are recorded in the output.

Single validation number (paper section 6.2; its normalisation was not published, ours is):
``projection_mse = sum over the x-y, x-z, y-z planes of mean over pixels of
((P_cand - P_ref) / max(P_ref))^2``, with P the projection of the average shower (GeV).
Dimensionless; a uniform 1 % energy scale change gives about 1e-4 times the mean squared
relative pixel intensity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.physics.bins import EnergyBin, parse_bins
from caloquant.physics.distances import frechet_distance, kernel_distance, separation_power
from caloquant.physics.features import (
    AXES,
    DEFAULT_HIT_THRESHOLD_GEV,
    DEFAULT_ZERO_THRESHOLD_GEV,
    SPECTRUM_EDGES,
    cell_spectrum,
    coarse_view,
    feature_histograms,
    high_level_vector,
    projections,
    shower_features,
    zero_below,
)
from caloquant.physics.optimisation import (
    DEFAULT_METRIC_HALF_WIDTH_GEV,
    DEFAULT_METRIC_POINTS_GEV,
    metric_from_features,
)
from caloquant.physics.resolution import fit_resolution_rows
from caloquant.physics.samples import Sample, Source, as_sample, check_options
from caloquant.physics.stats import (
    compare as _compare,
    profile_moment_pseudo,
    relative_spread_pseudo,
    sqrt_of_mean_pseudo,
)

if TYPE_CHECKING:
    from caloquant.physics.calochallenge import CaloChallengeConfig, RowSubset

SCALAR_FEATURES = ("sf", "n_hits", "mean_x", "mean_y", "mean_z", "std_x", "std_y", "std_z", "max_z")
PLANES = ("xy", "xz", "yz")


# ---------------------------------------------------------------------------------------------
# Streaming accumulation


@dataclass
class _Acc:
    """Per-sample accumulators: stored per-shower features and per-bin sums."""

    bins: list[EnergyBin]
    grid: tuple[int, ...]
    cells: RowSubset | None = None  # the showers kept for the CaloChallenge classifier
    feats: dict[str, list[np.ndarray]] = field(default_factory=dict)
    coarse: list[np.ndarray] = field(default_factory=list)
    proj_sum: list[list[np.ndarray]] = field(default_factory=list)
    proj_sq: list[list[np.ndarray]] = field(default_factory=list)
    spectrum: list[np.ndarray] = field(default_factory=list)
    energies: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        X, Y, Z = self.grid
        shapes = [(X, Y), (X, Z), (Y, Z)]
        self.proj_sum = [[np.zeros(s) for s in shapes] for _ in self.bins]
        self.proj_sq = [[np.zeros(s) for s in shapes] for _ in self.bins]
        self.spectrum = [np.zeros(SPECTRUM_EDGES.size - 1, np.int64) for _ in self.bins]

    def update(
        self, s: np.ndarray, e: np.ndarray, want_coarse: bool, threshold: float
    ) -> dict[str, np.ndarray]:
        f = shower_features(s, e, threshold)
        for k, v in f.items():
            self.feats.setdefault(k, []).append(v)
        self.energies.append(e)
        if want_coarse:
            self.coarse.append(coarse_view(s))
        if self.cells is not None:
            self.cells.add(s, e)
        projs = projections(s)
        for b, binfo in enumerate(self.bins):
            m = binfo.mask(e)
            if not m.any():
                continue
            sel = slice(None) if m.all() else m
            for i, p in enumerate(projs):
                ps = p[sel]
                self.proj_sum[b][i] += ps.sum(axis=0)
                self.proj_sq[b][i] += (ps**2).sum(axis=0)
            self.spectrum[b] += cell_spectrum(s[sel], threshold)
        return f

    def finish(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.feats.items()}


# ---------------------------------------------------------------------------------------------
# Statistics helpers


def _profile(p: np.ndarray) -> tuple[list[float], list[float]]:
    n = p.shape[0]
    return p.mean(axis=0).tolist(), (p.std(axis=0, ddof=1) / np.sqrt(n)).tolist() if n > 1 else [
        float("nan")
    ] * p.shape[1]


def _projection_mse(
    ar: _Acc, ac: _Acc, b: int, nr: int, nc: int
) -> tuple[float, float, dict[str, dict[str, list]]]:
    mse = noise = 0.0
    planes: dict[str, dict[str, list]] = {}
    for i, plane in enumerate(PLANES):
        pr, pc = ar.proj_sum[b][i] / nr, ac.proj_sum[b][i] / nc
        vr = np.maximum(ar.proj_sq[b][i] / nr - pr**2, 0.0) / max(nr - 1, 1)
        vc = np.maximum(ac.proj_sq[b][i] / nc - pc**2, 0.0) / max(nc - 1, 1)
        norm = pr.max() if pr.max() > 0 else 1.0
        mse += float(np.mean(((pc - pr) / norm) ** 2))
        noise += float(np.mean((vr + vc) / norm**2))
        planes[plane] = {"ref": pr.tolist(), "cand": pc.tolist()}
    return mse, noise, planes


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass
class ValidationReport:
    """JSON-ready results. ``to_dict()`` is the stable interface (see docs/validation.md)."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def bin(self, label: str) -> dict[str, Any]:
        for b in self.data["bins"]:
            if b["label"] == label:
                return b
        raise KeyError(label)


def validate(
    ref: Source,
    cand: Source,
    bins: str = "auto",
    paired: bool = False,
    classifier: bool = False,
    distances: bool = True,
    chunk: int = 1024,
    seed: int = 0,
    hit_threshold: float = DEFAULT_HIT_THRESHOLD_GEV,
    zero_threshold: float = DEFAULT_ZERO_THRESHOLD_GEV,
    metric_points: Sequence[float] = DEFAULT_METRIC_POINTS_GEV,
    metric_half_width: float = DEFAULT_METRIC_HALF_WIDTH_GEV,
    progress: Callable[[int], None] | None = None,
    detail: bool = True,
    calochallenge: CaloChallengeConfig | None = None,
) -> ValidationReport:
    """Validate ``cand`` against ``ref``: files (either format) or (showers, energies) arrays.

    ``paired``: the two samples share latent vectors and order (same energies row by row);
    adds the pixel-wise comparison and uses paired errors. ``distances``: FPD, KPD and
    separation powers. ``detail``: profiles, projections and spectra for plots.
    ``hit_threshold``: hit cells are those above it (GeV); ``zero_threshold``: cells below it
    are set to 0 before any metric (GeV; 0 = none). ``metric_points`` and ``metric_half_width``:
    energy windows (GeV) of the authors' optimisation metric (``optimisation_metric``).
    ``progress`` is called with the number of showers processed after each chunk.
    ``classifier``: also the CaloChallenge protocol, with the settings ``calochallenge``
    (its ``max_showers`` per sample, a seeded random subset, are kept in memory for it).
    """
    hit_threshold, zero_threshold, seed, windows = check_options(
        hit_threshold, zero_threshold, seed, metric_points, metric_half_width, bins
    )
    sr, sc = as_sample(ref, "REF"), as_sample(cand, "CAND")
    try:
        return _validate(
            sr,
            sc,
            bins,
            paired,
            classifier,
            distances,
            chunk,
            seed,
            hit_threshold,
            zero_threshold,
            windows,
            progress,
            detail,
            calochallenge,
        )
    finally:
        sr.close()
        sc.close()


def _validate(
    sr: Sample,
    sc: Sample,
    bins_spec: str,
    paired: bool,
    classifier: bool,
    distances: bool,
    chunk: int,
    seed: int,
    hit_threshold: float,
    zero_threshold: float,
    metric_windows: tuple[tuple[float, ...], float],
    progress: Callable[[int], None] | None,
    detail: bool,
    cc_config: CaloChallengeConfig | None,
) -> ValidationReport:
    if sr.grid != sc.grid:
        raise CaloquantError(f"grids differ: REF {sr.grid} vs CAND {sc.grid}")
    if len(sr.grid) != 3:
        raise CaloquantError(f"validation needs 3-d showers, got grid {sr.grid}")
    if sr.n == 0 or sc.n == 0:
        raise CaloquantError(f"empty sample: REF has {sr.n} showers, CAND {sc.n}")
    if paired:
        if sr.n != sc.n:
            raise CaloquantError(
                f"paired comparison needs equal counts: REF has {sr.n} showers, CAND {sc.n}"
            )
        if not np.allclose(sr.energies, sc.energies, rtol=1e-5):
            i = int(np.argmax(~np.isclose(sr.energies, sc.energies, rtol=1e-5)))
            raise CaloquantError(
                f"paired samples differ in energy at row {i}: "
                f"{sr.energies[i]:g} vs {sc.energies[i]:g} GeV"
            )
    bins = parse_bins(bins_spec, sr.energies)
    for b in bins:
        nr, nc = int(b.mask(sr.energies).sum()), int(b.mask(sc.energies).sum())
        if nr < 2 or nc < 2:
            raise CaloquantError(
                f"energy bin {b.label} GeV holds {nr} REF and {nc} CAND showers; "
                "need at least 2 each"
            )

    keep: tuple[RowSubset | None, RowSubset | None] = (None, None)
    if classifier:
        from caloquant.physics.calochallenge import CaloChallengeConfig, RowSubset

        cc_config = CaloChallengeConfig() if cc_config is None else cc_config
        if not isinstance(cc_config, CaloChallengeConfig):
            raise CaloquantError(
                f"calochallenge must be a CaloChallengeConfig, got {type(cc_config).__name__}"
            )
        keep = (
            RowSubset(sr.n, cc_config.max_showers, seed),
            RowSubset(sc.n, cc_config.max_showers, seed),
        )
    ar, ac = _Acc(bins, sr.grid, keep[0]), _Acc(bins, sc.grid, keep[1])
    pixel: list[np.ndarray] = []
    if paired:
        for (s1, e1), (s2, e2) in zip(sr.chunks(chunk), sc.chunks(chunk)):
            s1, s2 = zero_below(s1, zero_threshold), zero_below(s2, zero_threshold)
            ar.update(s1, e1, classifier, hit_threshold)
            ac.update(s2, e2, classifier, hit_threshold)
            pixel.append(np.abs(s1.astype(np.float64) - s2).reshape(len(s1), -1).sum(axis=1))
            if progress:
                progress(2 * len(e1))
    else:
        for acc, smp in ((ar, sr), (ac, sc)):
            for s, e in smp.chunks(chunk):
                acc.update(zero_below(s, zero_threshold), e, classifier, hit_threshold)
                if progress:
                    progress(len(e))
    fr, fc = ar.finish(), ac.finish()
    er, ec = np.concatenate(ar.energies), np.concatenate(ac.energies)
    pix = np.concatenate(pixel) if paired else None

    out_bins = []
    for b_i, b in enumerate(bins):
        mr, mc = b.mask(er), b.mask(ec)
        nr, nc = int(mr.sum()), int(mc.sum())
        pick_r = lambda k: fr[k][mr]  # noqa: E731
        pick_c = lambda k: fc[k][mc]  # noqa: E731
        lo, hi = (
            (min(er.min(), ec.min()), max(er.max(), ec.max()))
            if b.label == "all"
            else (b.lo_gev, b.hi_gev)
        )
        row: dict[str, Any] = {
            "label": b.label,
            "lo_gev": float(lo),
            "hi_gev": float(hi),
            "n_ref": nr,
            "n_cand": nc,
        }
        row["sampling_fraction"] = _compare(pick_r("sf"), pick_c("sf"), paired)
        row["ecal_gev"] = _compare(pick_r("ecal"), pick_c("ecal"), paired)
        row["ep_mean_gev"] = {"ref": float(er[mr].mean()), "cand": float(ec[mc].mean())}
        # energy resolution: relative spread sigma/mean of Ecal/Ep in the bin
        row["resolution"] = _compare(
            relative_spread_pseudo(pick_r("sf")), relative_spread_pseudo(pick_c("sf")), paired
        )
        row["moments"] = {ax: _moments_row(pick_r, pick_c, ax, paired) for ax in AXES}
        row["n_hits"] = _compare(pick_r("n_hits"), pick_c("n_hits"), paired)
        row["max_position"] = {
            ax: _compare(pick_r(f"max_{ax}"), pick_c(f"max_{ax}"), paired) for ax in AXES
        }
        mse, noise, planes = _projection_mse(ar, ac, b_i, nr, nc)
        row["projection_mse"], row["projection_mse_noise"] = mse, noise
        pulls = [abs(row["sampling_fraction"]["pull"])] + [
            abs(row["moments"][a][k]["pull"]) for a in AXES for k in ("mean", "std")
        ]
        row["max_abs_pull"] = float(np.nanmax(pulls))
        if paired and pix is not None:
            p = pix[mr]
            row["pixelwise"] = {
                "mean": float(p.mean()),
                "std": float(p.std(ddof=1)) if p.size > 1 else 0.0,
                "mean_err": float(p.std(ddof=1) / np.sqrt(p.size)) if p.size > 1 else 0.0,
            }
        if distances:
            # statistical floor: two halves of the reference, scaled from their sizes to (nr, nc)
            half = np.random.default_rng(seed).permutation(nr)
            a_idx, b_idx = half[: nr // 2], half[nr // 2 :]
            scale = (1 / nr + 1 / nc) / (1 / len(a_idx) + 1 / len(b_idx))
            row["separation_power"] = {
                k: {
                    "value": separation_power(pick_r(k), pick_c(k)),
                    "floor": scale * separation_power(pick_r(k)[a_idx], pick_r(k)[b_idx]),
                }
                for k in SCALAR_FEATURES
            }
        if detail:
            row["profiles"] = {}
            for ax in AXES:
                rm, re_ = _profile(pick_r(f"profile_{ax}"))
                cm, ce = _profile(pick_c(f"profile_{ax}"))
                row["profiles"][ax] = {"ref": rm, "ref_err": re_, "cand": cm, "cand_err": ce}
            row["projections"] = planes
            row["cell_spectrum"] = {
                "ref": ar.spectrum[b_i].tolist(),
                "cand": ac.spectrum[b_i].tolist(),
            }
        out_bins.append(row)

    result: dict[str, Any] = {
        "ref": sr.name,
        "cand": sc.name,
        "grid": list(sr.grid),
        "n_ref": sr.n,
        "n_cand": sc.n,
        "paired": paired,
        "bins_spec": bins_spec,
        "thresholds": {"zero_below_gev": zero_threshold, "hit_above_gev": hit_threshold},
        "cell_threshold_gev": hit_threshold,  # legacy name of thresholds.hit_above_gev
        "bins": out_bins,
        "classifier_auc": None,
        "classifier": None,
        "classifier_calochallenge": None,
        "resolution_fit": fit_resolution_rows(out_bins),
    }
    try:
        result["optimisation_metric"] = metric_from_features(fr, er, fc, ec, *metric_windows)
    except CaloquantError as exc:  # e.g. the sample has no shower near 110, 150 or 190 GeV
        result["optimisation_metric"] = {
            "skipped": str(exc),
            "points_gev": list(metric_windows[0]),
            "half_width_gev": metric_windows[1],
        }
    if detail:
        result["cell_spectrum_log10_edges"] = SPECTRUM_EDGES.tolist()
        result["histograms"] = feature_histograms(fr, fc, SCALAR_FEATURES)
    if distances:
        hr, hc = high_level_vector(fr, er), high_level_vector(fc, ec)
        fpd, fpd_err = frechet_distance(hr, hc, seed=seed)
        kpd, kpd_err = kernel_distance(hr, hc, seed=seed)
        result["fpd"] = {"value": fpd, "err": fpd_err}
        result["kpd"] = {"value": kpd, "err": kpd_err}
    if classifier:
        from caloquant.physics.classifier import classifier_test

        xr = np.concatenate([high_level_vector(fr, er), np.concatenate(ar.coarse)], axis=1)
        xc = np.concatenate([high_level_vector(fc, ec), np.concatenate(ac.coarse)], axis=1)
        res = classifier_test(xr, xc, seed=seed)
        result["classifier"] = res.to_dict()
        result["classifier_auc"] = res.auc
        from caloquant.physics.calochallenge import calochallenge_test

        assert ar.cells is not None and ac.cells is not None
        cc = calochallenge_test(ar.cells.arrays(), ac.cells.arrays(), cc_config, seed)
        result["classifier_calochallenge"] = cc.to_dict()
    return ValidationReport(result)


def _moments_row(
    pick_r: Callable[[str], np.ndarray], pick_c: Callable[[str], np.ndarray], ax: str, paired: bool
) -> dict[str, Any]:
    """Shower position and width along ``ax`` in every convention in use (docs/validation.md).

    ``std`` (= ``mean_sqrt_m2``): mean over showers of sqrt(M2), caloquant's original key;
    ``sqrt_mean_m2``: sqrt of the mean over showers of M2 (the authors keep M2 per shower);
    ``mean_m2``: mean over showers of M2; ``profile_mean``, ``profile_std``: mean and standard
    deviation of the summed (average) profile, i.e. energy-weighted over all showers, as the
    statistics box of the authors' ROOT shower-shape plots.
    """
    std = _compare(pick_r(f"std_{ax}"), pick_c(f"std_{ax}"), paired)
    pmr, psr = profile_moment_pseudo(pick_r(f"profile_{ax}"))
    pmc, psc = profile_moment_pseudo(pick_c(f"profile_{ax}"))
    return {
        "mean": _compare(pick_r(f"mean_{ax}"), pick_c(f"mean_{ax}"), paired),
        "std": std,
        "mean_sqrt_m2": std,
        "sqrt_mean_m2": _compare(
            sqrt_of_mean_pseudo(pick_r(f"var_{ax}")),
            sqrt_of_mean_pseudo(pick_c(f"var_{ax}")),
            paired,
        ),
        "mean_m2": _compare(pick_r(f"var_{ax}"), pick_c(f"var_{ax}"), paired),
        "profile_mean": _compare(pmr, pmc, paired),
        "profile_std": _compare(psr, psc, paired),
    }
