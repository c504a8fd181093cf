"""Statistical helpers: means with standard errors, sample comparisons, delta-method pseudo-values.

Quantities that are not plain means of a per-shower number (sqrt of a mean, a ratio of sums,
a relative spread) get their uncertainty from the delta method. To reuse one comparison
routine for all of them, each such estimator T is turned into per-shower *pseudo-values*

    p_s = T + psi_s,   psi_s = grad g(mean v) . (v_s - mean v),

where T = g(mean of per-shower vectors v_s) and psi_s is the shower's first-order influence.
The psi_s average to exactly zero, so mean(p) = T, and std(p) / sqrt(n) is the delta-method
standard error of T. Differences of pseudo-values of paired samples (same latent vectors, same
order) give the paired error of a shift, exactly as for plain means. Non-finite per-shower
inputs give NaN pseudo-values and are dropped the way ``mean_err`` drops them.
"""

from __future__ import annotations

import numpy as np


def mean_err(x: np.ndarray) -> tuple[float, float]:
    """Mean of the finite entries and its standard error std / sqrt(n)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def compare(r: np.ndarray, c: np.ndarray, paired: bool) -> dict[str, float]:
    """ref, cand, errors, shift = cand - ref, ratio = cand / ref, each with an error, and pull."""
    mr, er = mean_err(r)
    mc, ec = mean_err(c)
    if paired:
        ok = np.isfinite(r) & np.isfinite(c)
        _, shift_err = mean_err(c[ok] - r[ok])
    else:
        shift_err = float(np.hypot(er, ec))
    ratio = mc / mr if mr != 0 else float("nan")
    ratio_err = abs(shift_err / mr) if mr != 0 else float("nan")
    return {
        "ref": mr,
        "cand": mc,
        "ref_err": er,
        "cand_err": ec,
        "shift": mc - mr,
        "shift_err": shift_err,
        "ratio": ratio,
        "ratio_err": ratio_err,
        "pull": (mc - mr) / shift_err if shift_err > 0 else 0.0,
    }


def sqrt_of_mean_pseudo(x: np.ndarray) -> np.ndarray:
    """Pseudo-values of sqrt(mean x) for x >= 0 (e.g. the square root of the mean variance).

    g(m) = sqrt(m), g'(m) = 1 / (2 sqrt(m)), so psi_s = (x_s - m) / (2 sqrt(m)).
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.any():
        return np.full_like(x, np.nan)
    m = float(x[ok].mean())
    root = np.sqrt(max(m, 0.0))
    if root == 0.0:  # every x is 0: the estimate is 0 and has no spread
        return np.where(ok, 0.0, np.nan)
    return root + (x - m) / (2.0 * root)


def profile_moment_pseudo(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-values of the mean and standard deviation of the *summed* profile of a sample.

    ``profiles`` (n, k): energy per slice i = 0..k-1 of each shower. For E_s = sum_i S_si,
    A_s = sum_i i S_si and C_s = sum_i (i - mu)^2 S_si, the summed profile has
    mu = sum A / sum E and variance v = sum C / sum E (energy-weighted over all showers).
    Both are ratios of means, whose influences are psi_mu = (A_s - mu E_s) / mean E and
    psi_v = (C_s - v E_s) / mean E (the derivative of v with respect to mu vanishes);
    psi_sd = psi_v / (2 sqrt(v)).
    """
    p = np.asarray(profiles, dtype=np.float64)
    idx = np.arange(p.shape[1], dtype=np.float64)
    e = p.sum(axis=1)
    e_mean = e.mean()
    if e_mean <= 0:
        nan = np.full(p.shape[0], np.nan)
        return nan, nan.copy()
    a = p @ idx
    mu = a.sum() / e.sum()
    c = p @ (idx - mu) ** 2
    v = c.sum() / e.sum()
    sd = np.sqrt(v)
    mean_pv = mu + (a - mu * e) / e_mean
    sd_pv = np.full_like(e, sd) if sd == 0 else sd + (c - v * e) / (2.0 * sd * e_mean)
    return mean_pv, sd_pv


def relative_spread_pseudo(x: np.ndarray) -> np.ndarray:
    """Pseudo-values of the relative spread r = s / m of x (s: std with ddof=1, m: mean).

    With psi_m = x_s - m and psi_s = ((x_s - m)^2 - v0) / (2 s) (v0 the ddof=0 variance),
    psi_r = psi_s / m - s psi_m / m^2. For Gaussian x this gives the familiar
    err(s) = s / sqrt(2 n) together with the error of the mean and their covariance.
    """
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    out = np.full_like(x, np.nan)
    xs = x[ok]
    if xs.size < 2:
        return out
    m = xs.mean()
    d = xs - m
    v0 = float(np.mean(d**2))
    s = float(xs.std(ddof=1))
    if m == 0 or s == 0:
        out[ok] = s / m if m != 0 else np.nan
        return out
    psi_s = (d**2 - v0) / (2.0 * s)
    out[ok] = s / m + psi_s / m - s * d / m**2
    return out
