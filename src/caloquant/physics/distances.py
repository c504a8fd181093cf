"""Distribution distances: histogram separation power, Frechet and kernel physics distances.

FPD and KPD follow Kansal et al. (arXiv:2211.10295) and the CaloChallenge evaluation. They
are written here rather than taken from ``jetnet`` because that package is unmaintained since
early 2024 and pulls a large dependency tree for two short formulas; the definitions are:

* FPD: ``|mu_r - mu_c|^2 + Tr(S_r + S_c - 2 (S_r S_c)^(1/2))`` on features scaled by the
  reference's max |value|, with the uncertainty from bootstrap resampling.
* KPD: unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1)^3``, averaged over
  ``n_batches`` random subsets (at most half of each sample); uncertainty = standard error over
  batches.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def separation_power(ref: np.ndarray, cand: np.ndarray, n_bins: int = 40) -> float:
    """0.5 * sum (h_r - h_c)^2 / (h_r + h_c) on unit-normalised histograms (0 same, 1 disjoint).

    Binning spans the 0.5-99.5 % quantiles of both samples; outliers go to the edge bins.
    """
    ref = ref[np.isfinite(ref)]
    cand = cand[np.isfinite(cand)]
    if ref.size == 0 or cand.size == 0:
        return float("nan")
    both = np.concatenate([ref, cand])
    lo, hi = np.quantile(both, [0.005, 0.995])
    if hi <= lo:
        lo, hi = both.min(), both.max()
        if hi <= lo:
            return 0.0
    edges = np.linspace(lo, hi, n_bins + 1)
    hr = np.histogram(np.clip(ref, lo, hi), edges)[0] / ref.size
    hc = np.histogram(np.clip(cand, lo, hi), edges)[0] / cand.size
    s = hr + hc
    ok = s > 0
    return float(0.5 * np.sum((hr[ok] - hc[ok]) ** 2 / s[ok]))


def scale_features(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each feature by the reference's max |value| (CaloChallenge convention)."""
    scale = np.abs(ref).max(axis=0)
    scale[scale == 0] = 1.0
    return ref / scale, cand / scale


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-singular covariances are regularised below
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            eps = 1e-8 * np.eye(s1.shape[0])
            covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def frechet_distance(
    ref: np.ndarray, cand: np.ndarray, n_boot: int = 8, seed: int = 0
) -> tuple[float, float]:
    """FPD and its bootstrap standard deviation."""
    r, c = scale_features(ref, cand)
    # drop features that are constant in both samples (singular covariances)
    keep = (r.std(axis=0) > 0) | (c.std(axis=0) > 0)
    r, c = r[:, keep], c[:, keep]
    value = _frechet(r, c)
    rng = np.random.default_rng(seed)
    boots = [
        _frechet(r[rng.integers(0, len(r), len(r))], c[rng.integers(0, len(c), len(c))])
        for _ in range(n_boot)
    ]
    return value, float(np.std(boots, ddof=1)) if n_boot > 1 else float("nan")


def _mmd_poly(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** degree
    kyy = (y @ y.T / d + 1.0) ** degree
    kxy = (x @ y.T / d + 1.0) ** degree
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def kernel_distance(
    ref: np.ndarray, cand: np.ndarray, n_batches: int = 10, batch_size: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """KPD (unbiased MMD^2, cubic polynomial kernel): mean and standard error over batches."""
    r, c = scale_features(ref, cand)
    rng = np.random.default_rng(seed)
    b = max(2, min(batch_size, len(r) // 2, len(c) // 2))  # subsets, so batches differ
    vals = [
        _mmd_poly(r[rng.choice(len(r), b, replace=False)], c[rng.choice(len(c), b, replace=False)])
        for _ in range(n_batches)
    ]
    return float(np.mean(vals)), float(np.std(vals, ddof=1) / np.sqrt(n_batches))
