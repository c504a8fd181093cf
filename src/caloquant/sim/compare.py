"""Summary observables of a shower sample and the 3DGAN data facts they are compared with."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

# Geant4 facts of the 3DGAN data, 100-500 GeV electrons (reduced-precision paper, Table 3;
# physics.md sections 1-2): Ecal/Ep about 2 %, moments in cell units.
PAPER_G4: dict[str, float] = {
    "sf": 0.02,
    "z_mean": 13.85,
    "z_std": 4.62,
    "y_mean": 12.00,
    "y_std": 1.45,
}


def observables(showers: np.ndarray, energies: np.ndarray) -> dict[str, np.ndarray]:
    """Per-shower sampling fraction, z/y first moment and sqrt of the second moment (cells)."""
    from caloquant.physics import shower_features

    f = shower_features(showers, energies)
    return {
        "sf": f["sf"],
        "z_mean": f["mean_z"],
        "z_std": f["std_z"],
        "y_mean": f["mean_y"],
        "y_std": f["std_y"],
        "x_std": f["std_x"],
        "profile_z": f["profile_z"] / f["ecal"][:, None],
    }


def summarize(
    showers: np.ndarray,
    energies: np.ndarray,
    points: tuple[float, ...] | None = None,
    half_width: float | None = None,
) -> dict[str, Any]:
    """Mean and statistical error of each observable, over all showers and per energy point.

    ``points`` groups showers whose energy is within ``half_width`` (default: exact energy)
    of each point; the resolution is std/mean of the sampling fraction.
    """
    e = np.asarray(energies, dtype=np.float64)
    obs = observables(showers, e)

    def stats(mask: np.ndarray) -> dict[str, Any]:
        m = int(mask.sum())
        out: dict[str, Any] = {"n": m}
        for k in ("sf", "z_mean", "z_std", "y_mean", "y_std", "x_std"):
            v = obs[k][mask]
            out[k] = float(v.mean())
            out[k + "_err"] = float(v.std(ddof=1) / np.sqrt(m)) if m > 1 else float("nan")
        sf = obs["sf"][mask]
        out["resolution"] = float(sf.std(ddof=1) / sf.mean()) if m > 1 else float("nan")
        out["resolution_err"] = out["resolution"] / np.sqrt(2 * (m - 1)) if m > 1 else float("nan")
        out["profile_z"] = obs["profile_z"][mask].mean(axis=0).tolist()
        return out

    res: dict[str, Any] = {"all": stats(np.ones(len(e), bool))}
    if points:
        res["points"] = {}
        for p in points:
            mask = np.abs(e - p) <= (half_width if half_width is not None else 1e-9 * p)
            if mask.sum() > 1:
                res["points"][f"{p:g}"] = stats(mask)
    return res


def summarize_file(
    path: str | os.PathLike[str],
    points: tuple[float, ...] | None = None,
    half_width: float | None = None,
    max_n: int | None = None,
) -> dict[str, Any]:
    from caloquant.data import read_showers

    s, e = read_showers(path, max_n)
    return summarize(s, e, points, half_width)


def paper_comparison(summary_all: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (observable, paper, reached, relative difference) against the 3DGAN data facts."""
    rows = []
    for k, ref in PAPER_G4.items():
        v = summary_all[k]
        rows.append(
            {
                "observable": k,
                "paper_geant4": ref,
                "this": v,
                "err": summary_all.get(k + "_err"),
                "rel_diff": (v - ref) / ref,
            }
        )
    return rows
