"""Energy resolution fit: sigma/E = a / sqrt(E) (+) b (sum in quadrature).

The per-bin relative spread sigma/mean of Ecal/Ep (see ``stats.relative_spread_pseudo``) is
fitted against the mean incident energy of the bin with ``scipy.optimize.curve_fit``,
weighted by the per-bin statistical errors (``absolute_sigma=True``, so the parameter errors
are the statistical ones, not rescaled by chi2/ndof). The start values come from the linear
least-squares solution of r^2 = a^2 / E + b^2, which is exact when the model holds.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

RESOLUTION_MODEL = "sigma/E = a/sqrt(E/GeV) (+) b"


def resolution_model(e: np.ndarray, a: float, b: float) -> np.ndarray:
    """sqrt(a^2 / E + b^2), E in GeV."""
    return np.sqrt(a * a / np.asarray(e, dtype=np.float64) + b * b)


def fit_resolution(
    energies: np.ndarray, rel_spread: np.ndarray, rel_spread_err: np.ndarray
) -> dict[str, Any]:
    """Fit a (stochastic term) and b (constant term) to relative spreads at mean energies (GeV).

    Returns a, a_err, b, b_err, their correlation, chi2, ndof and the points used; with fewer
    than two usable points, or if the fit does not converge, ``{"skipped": reason}``.
    """
    e = np.asarray(energies, dtype=np.float64)
    r = np.asarray(rel_spread, dtype=np.float64)
    w = np.asarray(rel_spread_err, dtype=np.float64)
    ok = np.isfinite(e) & np.isfinite(r) & np.isfinite(w) & (e > 0) & (w > 0)
    if ok.sum() < 2:
        return {
            "skipped": "needs at least 2 energy bins with a finite spread and error, "
            f"got {int(ok.sum())}"
        }
    e, r, w = e[ok], r[ok], w[ok]
    # start: weighted linear least squares of r^2 = A / E + B (error of r^2 is 2 r err(r))
    design = np.stack([1.0 / e, np.ones_like(e)], axis=1) / (2 * r * w)[:, None]
    (a2, b2), *_ = np.linalg.lstsq(design, r**2 / (2 * r * w), rcond=None)
    p0 = [np.sqrt(max(a2, 1e-8)), np.sqrt(max(b2, 1e-8))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", OptimizeWarning
            )  # a singular covariance shows up as inf errors
            popt, pcov = curve_fit(
                resolution_model, e, r, p0=p0, sigma=w, absolute_sigma=True, maxfev=10_000
            )
    except (RuntimeError, ValueError) as exc:
        return {"skipped": f"fit did not converge: {exc}"}
    # the model depends on a^2 and b^2 only: report the non-negative solution
    a, b = (float(abs(v)) for v in popt)
    err = np.sqrt(np.clip(np.diag(pcov), 0.0, np.inf))
    corr = float("nan")
    if np.all(np.isfinite(err)) and np.all(err > 0):
        corr = float(np.sign(popt[0]) * np.sign(popt[1]) * pcov[0, 1] / (err[0] * err[1]))
    resid = (r - resolution_model(e, a, b)) / w
    return {
        "a": a,
        "a_err": float(err[0]),
        "b": b,
        "b_err": float(err[1]),
        "corr_ab": corr,
        "chi2": float(np.sum(resid**2)),
        "ndof": int(e.size - 2),
        "energies_gev": e.tolist(),
        "rel_spread": r.tolist(),
        "rel_spread_err": w.tolist(),
    }


def fit_resolution_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The model fitted to each sample's per-bin relative spreads in ``validate``'s rows
    (``resolution`` and ``ep_mean_gev`` of every bin but "all"), with the model's formula."""
    pts = [r for r in rows if r["label"] != "all"]
    out: dict[str, Any] = {"model": RESOLUTION_MODEL}
    for who in ("ref", "cand"):
        out[who] = fit_resolution(
            np.array([r["ep_mean_gev"][who] for r in pts]),
            np.array([r["resolution"][who] for r in pts]),
            np.array([r["resolution"][f"{who}_err"] for r in pts]),
        )
    return out
