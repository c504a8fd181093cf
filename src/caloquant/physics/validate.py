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
* separation power: with ``floor``, the value between two halves of the reference.

Single validation number (paper section 6.2; its normalisation was not published, ours is):
``projection_mse = sum over the x-y, x-z, y-z planes of mean over pixels of
((P_cand - P_ref) / max(P_ref))^2``, with P the projection of the average shower (GeV).
Dimensionless; a uniform 1 % energy scale change gives about 1e-4 times the mean squared
relative pixel intensity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from caloquant.data import open_showers
from caloquant.errors import CaloquantError
from caloquant.physics.bins import EnergyBin, parse_bins
from caloquant.physics.distances import frechet_distance, kernel_distance, separation_power
from caloquant.physics.features import (
    AXES,
    DEFAULT_CELL_THRESHOLD_GEV,
    SPECTRUM_EDGES,
    cell_spectrum,
    coarse_view,
    high_level_vector,
    projections,
    shower_features,
)

Source = Union[str, os.PathLike, tuple[np.ndarray, np.ndarray]]
SCALAR_FEATURES = ("sf", "n_hits", "mean_x", "mean_y", "mean_z", "std_x", "std_y", "std_z", "max_z")
PLANES = ("xy", "xz", "yz")


# ---------------------------------------------------------------------------------------------
# Input adapters: a file (streamed) or in-memory arrays


@dataclass
class _Sample:
    name: str
    grid: tuple[int, ...]
    energies: np.ndarray
    chunks: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]
    close: Callable[[], None] = lambda: None

    @property
    def n(self) -> int:
        return int(self.energies.shape[0])


def _as_sample(src: Source, name: str) -> _Sample:
    if isinstance(src, tuple):
        s, e = np.asarray(src[0], dtype=np.float32), np.asarray(src[1], dtype=np.float64).reshape(-1)
        if s.ndim != 4 or s.shape[0] != e.shape[0]:
            raise CaloquantError(f"{name}: showers {s.shape} and energies {e.shape} do not form a sample (N, X, Y, Z) + (N,)")
        from caloquant.data import check_chunk

        check_chunk(s, e, name)

        def chunks(c: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for i in range(0, len(e), c):
                yield s[i : i + c], e[i : i + c]

        return _Sample(name, tuple(s.shape[1:]), e, chunks)
    reader = open_showers(Path(src))
    return _Sample(str(src), reader.grid, reader.energies(), lambda c: reader.iter_chunks(c), reader.close)


# ---------------------------------------------------------------------------------------------
# Streaming accumulation


@dataclass
class _Acc:
    """Per-sample accumulators: stored per-shower features and per-bin sums."""

    bins: list[EnergyBin]
    grid: tuple[int, ...]
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

    def update(self, s: np.ndarray, e: np.ndarray, want_coarse: bool, threshold: float) -> dict[str, np.ndarray]:
        f = shower_features(s, e, threshold)
        for k, v in f.items():
            self.feats.setdefault(k, []).append(v)
        self.energies.append(e)
        if want_coarse:
            self.coarse.append(coarse_view(s))
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


def _mean_err(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _compare(r: np.ndarray, c: np.ndarray, paired: bool) -> dict[str, float]:
    """ref, cand, errors, shift = cand - ref, ratio = cand / ref, each with an error."""
    mr, er = _mean_err(r)
    mc, ec = _mean_err(c)
    if paired:
        ok = np.isfinite(r) & np.isfinite(c)
        _, shift_err = _mean_err(c[ok] - r[ok])
    else:
        shift_err = float(np.hypot(er, ec))
    ratio = mc / mr if mr != 0 else float("nan")
    ratio_err = abs(shift_err / mr) if mr != 0 else float("nan")
    return {"ref": mr, "cand": mc, "ref_err": er, "cand_err": ec, "shift": mc - mr, "shift_err": shift_err,
            "ratio": ratio, "ratio_err": ratio_err, "pull": (mc - mr) / shift_err if shift_err > 0 else 0.0}


def _profile(p: np.ndarray) -> tuple[list[float], list[float]]:
    n = p.shape[0]
    return p.mean(axis=0).tolist(), (p.std(axis=0, ddof=1) / np.sqrt(n)).tolist() if n > 1 else [float("nan")] * p.shape[1]


def _projection_mse(ar: _Acc, ac: _Acc, b: int, nr: int, nc: int) -> tuple[float, float, dict[str, dict[str, list]]]:
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
    threshold: float = DEFAULT_CELL_THRESHOLD_GEV,
    progress: Callable[[int], None] | None = None,
    detail: bool = True,
) -> ValidationReport:
    """Validate ``cand`` against ``ref``; both are files (either format) or (showers, energies) arrays.

    ``paired``: the two samples share latent vectors and order (same energies row by row);
    adds the pixel-wise comparison and uses paired errors. ``distances``: FPD, KPD and
    separation powers. ``detail``: profiles, projections and spectra for plots.
    ``progress`` is called with the number of showers processed after each chunk.
    """
    sr, sc = _as_sample(ref, "REF"), _as_sample(cand, "CAND")
    try:
        return _validate(sr, sc, bins, paired, classifier, distances, chunk, seed, threshold, progress, detail)
    finally:
        sr.close()
        sc.close()


def _validate(
    sr: _Sample, sc: _Sample, bins_spec: str, paired: bool, classifier: bool, distances: bool,
    chunk: int, seed: int, threshold: float, progress: Callable[[int], None] | None, detail: bool,
) -> ValidationReport:
    if sr.grid != sc.grid:
        raise CaloquantError(f"grids differ: REF {sr.grid} vs CAND {sc.grid}")
    if len(sr.grid) != 3:
        raise CaloquantError(f"validation needs 3-d showers, got grid {sr.grid}")
    if sr.n == 0 or sc.n == 0:
        raise CaloquantError(f"empty sample: REF has {sr.n} showers, CAND {sc.n}")
    if paired:
        if sr.n != sc.n:
            raise CaloquantError(f"paired comparison needs equal counts: REF has {sr.n} showers, CAND {sc.n}")
        if not np.allclose(sr.energies, sc.energies, rtol=1e-5):
            i = int(np.argmax(~np.isclose(sr.energies, sc.energies, rtol=1e-5)))
            raise CaloquantError(f"paired samples differ in energy at row {i}: {sr.energies[i]:g} vs {sc.energies[i]:g} GeV")
    bins = parse_bins(bins_spec, sr.energies)
    for b in bins:
        nr, nc = int(b.mask(sr.energies).sum()), int(b.mask(sc.energies).sum())
        if nr < 2 or nc < 2:
            raise CaloquantError(f"energy bin {b.label} GeV holds {nr} REF and {nc} CAND showers; need at least 2 each")

    ar, ac = _Acc(bins, sr.grid), _Acc(bins, sc.grid)
    pixel: list[np.ndarray] = []
    if paired:
        for (s1, e1), (s2, e2) in zip(sr.chunks(chunk), sc.chunks(chunk)):
            ar.update(s1, e1, classifier, threshold)
            ac.update(s2, e2, classifier, threshold)
            pixel.append(np.abs(s1.astype(np.float64) - s2).reshape(len(s1), -1).sum(axis=1))
            if progress:
                progress(2 * len(e1))
    else:
        for acc, smp in ((ar, sr), (ac, sc)):
            for s, e in smp.chunks(chunk):
                acc.update(s, e, classifier, threshold)
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
        lo, hi = (min(er.min(), ec.min()), max(er.max(), ec.max())) if b.label == "all" else (b.lo_gev, b.hi_gev)
        row: dict[str, Any] = {"label": b.label, "lo_gev": float(lo), "hi_gev": float(hi), "n_ref": nr, "n_cand": nc}
        row["sampling_fraction"] = _compare(pick_r("sf"), pick_c("sf"), paired)
        row["ecal_gev"] = _compare(pick_r("ecal"), pick_c("ecal"), paired)
        row["moments"] = {
            ax: {"mean": _compare(pick_r(f"mean_{ax}"), pick_c(f"mean_{ax}"), paired),
                 "std": _compare(pick_r(f"std_{ax}"), pick_c(f"std_{ax}"), paired)}
            for ax in AXES
        }
        row["n_hits"] = _compare(pick_r("n_hits"), pick_c("n_hits"), paired)
        row["max_position"] = {ax: _compare(pick_r(f"max_{ax}"), pick_c(f"max_{ax}"), paired) for ax in AXES}
        mse, noise, planes = _projection_mse(ar, ac, b_i, nr, nc)
        row["projection_mse"], row["projection_mse_noise"] = mse, noise
        pulls = [abs(row["sampling_fraction"]["pull"])] + [abs(row["moments"][a][k]["pull"]) for a in AXES for k in ("mean", "std")]
        row["max_abs_pull"] = float(np.nanmax(pulls))
        if paired and pix is not None:
            p = pix[mr]
            row["pixelwise"] = {"mean": float(p.mean()), "std": float(p.std(ddof=1)) if p.size > 1 else 0.0,
                                "mean_err": float(p.std(ddof=1) / np.sqrt(p.size)) if p.size > 1 else 0.0}
        if distances:
            # statistical floor: two halves of the reference, scaled from their sizes to (nr, nc)
            half = np.random.default_rng(seed).permutation(nr)
            a_idx, b_idx = half[: nr // 2], half[nr // 2 :]
            scale = (1 / nr + 1 / nc) / (1 / len(a_idx) + 1 / len(b_idx))
            row["separation_power"] = {
                k: {"value": separation_power(pick_r(k), pick_c(k)),
                    "floor": scale * separation_power(pick_r(k)[a_idx], pick_r(k)[b_idx])}
                for k in SCALAR_FEATURES
            }
        if detail:
            row["profiles"] = {}
            for ax in AXES:
                rm, re_ = _profile(pick_r(f"profile_{ax}"))
                cm, ce = _profile(pick_c(f"profile_{ax}"))
                row["profiles"][ax] = {"ref": rm, "ref_err": re_, "cand": cm, "cand_err": ce}
            row["projections"] = planes
            row["cell_spectrum"] = {"ref": ar.spectrum[b_i].tolist(), "cand": ac.spectrum[b_i].tolist()}
        out_bins.append(row)

    result: dict[str, Any] = {
        "ref": sr.name, "cand": sc.name, "grid": list(sr.grid), "n_ref": sr.n, "n_cand": sc.n,
        "paired": paired, "bins_spec": bins_spec, "cell_threshold_gev": threshold,
        "bins": out_bins, "classifier_auc": None, "classifier": None,
    }
    if detail:
        result["cell_spectrum_log10_edges"] = SPECTRUM_EDGES.tolist()
        result["histograms"] = _feature_histograms(fr, fc)
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
    return ValidationReport(result)


def _feature_histograms(fr: dict[str, np.ndarray], fc: dict[str, np.ndarray], n_bins: int = 40) -> dict[str, Any]:
    """Unit-normalised histograms of scalar features, for plots."""
    out: dict[str, Any] = {}
    for k in SCALAR_FEATURES:
        r, c = fr[k][np.isfinite(fr[k])], fc[k][np.isfinite(fc[k])]
        if r.size == 0 or c.size == 0:
            continue
        lo, hi = np.quantile(np.concatenate([r, c]), [0.002, 0.998])
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, n_bins + 1)
        out[k] = {"edges": edges.tolist(),
                  "ref": np.histogram(np.clip(r, lo, hi), edges)[0].tolist(),
                  "cand": np.histogram(np.clip(c, lo, hi), edges)[0].tolist()}
    return out
