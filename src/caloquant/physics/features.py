"""Per-shower physics features, computed on a block of showers at a time (vectorised).

Axes: showers are (n, X, Y, Z) with x, y transverse and z the depth ("layer").
Moments follow the reduced-precision paper: M1 = sum_i i S_i / sum_i S_i and
M2 = sum_i (i - M1)^2 S_i / sum_i S_i, in cell units (index 0..n-1). Each shower keeps both
M2 (``var_*``, the authors' convention in GANutils.get_moments) and sqrt(M2) (``std_*``).
Per-layer centres and widths follow the CaloChallenge high-level features, in cells
relative to the grid centre (an empty layer gets centre 0 and width 0).
"""

from __future__ import annotations

import numpy as np

AXES = ("x", "y", "z")
# Hit cells: energy above this (GeV). Default: the Geant4 data cut (1 keV). The 3DGAN authors
# count hits above 2e-4 GeV (ROOTutils.get_hits).
DEFAULT_HIT_THRESHOLD_GEV = 1e-6
AUTHORS_HIT_THRESHOLD_GEV = 2e-4
# Cells below this energy (GeV) are set to zero before any metric. Default: none. The 3DGAN
# authors zero Geant4 cells below 1e-6 GeV when reading data (GANutils.GetData).
DEFAULT_ZERO_THRESHOLD_GEV = 0.0
AUTHORS_ZERO_THRESHOLD_GEV = 1e-6
# Cell-energy spectrum: log10(E / GeV) histogram edges.
SPECTRUM_EDGES = np.linspace(-6.0, 1.0, 71)
# Coarse view of each shower for the classifier: transverse cells pooled 5 x 5.
COARSE_POOL = 5


def _moments(profile: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M1 and M2 (the variance, >= 0) of each shower's profile; NaN for an empty shower."""
    idx = np.arange(profile.shape[1], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = profile @ idx / total
        m2 = np.einsum("ni,ni->n", profile, (idx[None, :] - m1[:, None]) ** 2) / total
    return m1, np.maximum(m2, 0.0)


def zero_below(showers: np.ndarray, threshold: float) -> np.ndarray:
    """Showers with cells below ``threshold`` (GeV) set to zero (a copy; the input is untouched).
    The authors' data reader does ``x[x < thresh] = 0``."""
    if threshold <= 0:
        return showers
    return np.where(showers < threshold, np.zeros((), showers.dtype), showers)


def shower_features(
    showers: np.ndarray, energies: np.ndarray, threshold: float = DEFAULT_HIT_THRESHOLD_GEV
) -> dict[str, np.ndarray]:
    """Scalar and per-layer features of each shower; float64 arrays with first axis n.
    ``threshold``: hit cells are those above it (GeV)."""
    s = np.asarray(showers, dtype=np.float32)
    n, X, Y, Z = s.shape
    e = np.asarray(energies, dtype=np.float64)
    prof = {
        "x": s.sum(axis=(2, 3), dtype=np.float64),
        "y": s.sum(axis=(1, 3), dtype=np.float64),
        "z": s.sum(axis=(1, 2), dtype=np.float64),
    }
    ecal = prof["z"].sum(axis=1)
    f: dict[str, np.ndarray] = {"ecal": ecal, "sf": ecal / e}
    for ax in AXES:
        m1, m2 = _moments(prof[ax], ecal)
        f[f"mean_{ax}"], f[f"var_{ax}"], f[f"std_{ax}"] = m1, m2, np.sqrt(m2)
        f[f"profile_{ax}"] = prof[ax]
    hit = s > threshold
    f["n_hits"] = hit.reshape(n, -1).sum(axis=1).astype(np.float64)
    flat_max = s.reshape(n, -1).argmax(axis=1)
    mx, my, mz = np.unravel_index(flat_max, (X, Y, Z))
    f["max_x"], f["max_y"], f["max_z"] = (
        mx.astype(np.float64),
        my.astype(np.float64),
        mz.astype(np.float64),
    )
    # per-layer (z) CaloChallenge-style features
    layer_e = prof["z"]  # (n, Z)
    px = s.sum(axis=2, dtype=np.float64)  # (n, X, Z)
    py = s.sum(axis=1, dtype=np.float64)  # (n, Y, Z)
    cx = np.arange(X) - (X - 1) / 2.0
    cy = np.arange(Y) - (Y - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mxl = np.einsum("nxz,x->nz", px, cx) / layer_e
        myl = np.einsum("nyz,y->nz", py, cy) / layer_e
        wxl = np.sqrt(np.maximum(np.einsum("nxz,x->nz", px, cx**2) / layer_e - mxl**2, 0.0))
        wyl = np.sqrt(np.maximum(np.einsum("nyz,y->nz", py, cy**2) / layer_e - myl**2, 0.0))
    empty = layer_e <= 0
    for name, arr in (("layer_cx", mxl), ("layer_cy", myl), ("layer_wx", wxl), ("layer_wy", wyl)):
        arr[empty] = 0.0
        f[name] = arr
    f["layer_e"] = layer_e
    f["layer_hits"] = hit.sum(axis=(1, 2), dtype=np.float64)
    return f


def high_level_vector(f: dict[str, np.ndarray], energies: np.ndarray) -> np.ndarray:
    """The CaloChallenge-style high-level feature vector (n, 1 + 6 Z + 6) per shower:
    E_total/E_inc, energy per layer / E_inc, centres and widths per layer, hits per layer,
    and the six global moments."""
    e = np.asarray(energies, dtype=np.float64)[:, None]
    parts = [
        f["sf"][:, None],
        f["layer_e"] / e,
        f["layer_cx"],
        f["layer_cy"],
        f["layer_wx"],
        f["layer_wy"],
        f["layer_hits"],
        np.stack([np.nan_to_num(f[f"{k}_{a}"]) for k in ("mean", "std") for a in AXES], axis=1),
    ]
    return np.concatenate(parts, axis=1)


def coarse_view(showers: np.ndarray) -> np.ndarray:
    """log10(1 + E/MeV) of the shower pooled COARSE_POOL x COARSE_POOL transversely, flattened."""
    n, X, Y, Z = showers.shape
    p = COARSE_POOL
    Xc, Yc = X // p * p, Y // p * p
    pooled = (
        showers[:, :Xc, :Yc]
        .reshape(n, Xc // p, p, Yc // p, p, Z)
        .sum(axis=(2, 4), dtype=np.float64)
    )
    return np.log10(1.0 + 1000.0 * pooled).reshape(n, -1).astype(np.float32)


def cell_spectrum(showers: np.ndarray, threshold: float = DEFAULT_HIT_THRESHOLD_GEV) -> np.ndarray:
    """Counts of cell energies above threshold in log10 bins of SPECTRUM_EDGES
    (first and last bins include under- and overflow)."""
    v = showers[showers > threshold]
    lv = np.log10(v.astype(np.float64))
    lo, hi = SPECTRUM_EDGES[0], SPECTRUM_EDGES[-1]
    nb = SPECTRUM_EDGES.size - 1
    idx = np.clip(((lv - lo) / (hi - lo) * nb).astype(np.int64), 0, nb - 1)
    return np.bincount(idx, minlength=nb).astype(np.int64)


def projections(showers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-shower 2D projections (x-y, x-z, y-z), float64."""
    return (
        showers.sum(axis=3, dtype=np.float64),
        showers.sum(axis=2, dtype=np.float64),
        showers.sum(axis=1, dtype=np.float64),
    )


def feature_histograms(
    fr: dict[str, np.ndarray], fc: dict[str, np.ndarray], keys: tuple[str, ...], n_bins: int = 40
) -> dict[str, dict[str, list]]:
    """Histograms of the scalar features ``keys`` of two samples on common edges (the 0.2 % to
    99.8 % quantiles of both, over- and underflow clipped into the end bins), for plots."""
    out: dict[str, dict[str, list]] = {}
    for k in keys:
        r, c = fr[k][np.isfinite(fr[k])], fc[k][np.isfinite(fc[k])]
        if r.size == 0 or c.size == 0:
            continue
        lo, hi = np.quantile(np.concatenate([r, c]), [0.002, 0.998])
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, n_bins + 1)
        out[k] = {
            "edges": edges.tolist(),
            "ref": np.histogram(np.clip(r, lo, hi), edges)[0].tolist(),
            "cand": np.histogram(np.clip(c, lo, hi), edges)[0].tolist(),
        }
    return out
