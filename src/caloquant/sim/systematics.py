"""Systematics of the data-free physics list: spread of sampling fraction, depth and widths
between the model choices available without Geant4 data sets.

``measure_systematics`` simulates the same electrons with each variant (same seeds) and
reports every observable's shift from the default list; ``systematic_band`` gives the band
other stages use (relative for the sampling fraction and resolution, absolute in cells for
moments). The bremsstrahlung model, the main systematic, cannot be varied without data: the
only data-free bremsstrahlung model in the wheel is the relativistic one, so its effect is
carried from the measurement quoted in shared/geant4/README.md (sampling fraction 2.46 % with
the relativistic model against 2.74 % with the parametrized model below 1 GeV, at 100 GeV).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.sim.geant4 import Physics

VARIANTS: dict[str, Physics] = {
    "default": Physics(),
    "msc-wentzelvi": Physics(msc="wentzelvi"),
    "conversion-pairrel": Physics(conversion="pairrel"),
    "compton-klein-nishina-model": Physics(compton="klein-nishina-model"),
    "no-lpm": Physics(lpm=False),
    "cut-0.35mm": Physics(cut_mm=0.35),
    "cut-1.4mm": Physics(cut_mm=1.4),
}
OBSERVABLES = ("sf", "z_mean", "z_std", "y_std", "resolution")
# quoted, not measured here: shared/geant4/README.md (relativistic vs parametrized
# bremsstrahlung below 1 GeV, 100 GeV electrons, 25 x (2.8 mm W + 0.5 mm Si))
BREMSSTRAHLUNG_QUOTED = {
    "sf_relativistic": 0.0246,
    "sf_parametrized": 0.0274,
    "energy_gev": 100.0,
    "sf_rel_shift": 0.0274 / 0.0246 - 1.0,
    "measured_here": False,
    "source": "shared/geant4/README.md (facts established on this machine class)",
}


def measure_systematics(
    out_dir: str | Path,
    energies: tuple[float, ...] = (50.0,),
    n: int = 40,
    seed: int = 77,
    workers: int = 1,
    variants: dict[str, Physics] | None = None,
) -> dict[str, Any]:
    """Simulate ``n`` electrons per energy with each physics variant and compare to the default."""
    from caloquant.sim.compare import summarize_file
    from caloquant.sim.run import SimConfig, simulate

    out = Path(out_dir)
    e = np.repeat(np.asarray(energies, dtype=np.float64), n)
    res: dict[str, Any] = {}
    for name, phys in (variants or VARIANTS).items():
        path = out / f"syst_{name}.h5"
        if not path.exists():
            simulate(path, e, SimConfig(physics=phys, seed=seed), workers=workers)
        res[name] = summarize_file(path, points=energies)["points"]
    base = res["default"]
    shifts: dict[str, Any] = {}
    for name, pts in res.items():
        if name == "default":
            continue
        shifts[name] = {}
        for p, row in pts.items():
            b = base[p]
            shifts[name][p] = {
                "sf_rel": row["sf"] / b["sf"] - 1.0,
                "sf_rel_err": float(np.hypot(row["sf_err"] / b["sf"], b["sf_err"] / b["sf"])),
                "z_mean": row["z_mean"] - b["z_mean"],
                "z_mean_err": float(np.hypot(row["z_mean_err"], b["z_mean_err"])),
                "z_std": row["z_std"] - b["z_std"],
                "z_std_err": float(np.hypot(row["z_std_err"], b["z_std_err"])),
                "y_std": row["y_std"] - b["y_std"],
                "y_std_err": float(np.hypot(row["y_std_err"], b["y_std_err"])),
                "resolution_rel": row["resolution"] / b["resolution"] - 1.0,
            }
    return {
        "energies_gev": list(energies),
        "showers_per_variant_and_energy": n,
        "seed": seed,
        "variants": {k: v.to_dict() for k, v in (variants or VARIANTS).items()},
        "summaries": res,
        "shifts": shifts,
        "note": "same seeds for every variant: the shifts are correlated-sample differences, "
        "their errors are conservative (uncorrelated sum)",
    }


def band_from(measurement: dict[str, Any]) -> dict[str, Any]:
    """Systematic band: per observable, the largest |shift| over variants and energies (after
    removing what statistics explain: max(|shift| - err, 0)), combined with the quoted
    bremsstrahlung shift of the sampling fraction in quadrature."""
    worst: dict[str, float] = {"sf_rel": 0.0, "z_mean": 0.0, "z_std": 0.0, "y_std": 0.0}
    which: dict[str, str] = {}
    for name, pts in measurement["shifts"].items():
        for row in pts.values():
            for k in worst:
                v = max(abs(row[k]) - row[k + "_err"], 0.0)
                if v > worst[k]:
                    worst[k], which[k] = v, name
    brem = BREMSSTRAHLUNG_QUOTED["sf_rel_shift"]
    return {
        "sf_rel": float(np.hypot(worst["sf_rel"], brem)),
        "sf_rel_measured_variants": worst["sf_rel"],
        "sf_rel_bremsstrahlung_quoted": brem,
        "z_mean_layers": worst["z_mean"],
        "z_std_layers": worst["z_std"],
        "y_std_cells": worst["y_std"],
        "largest_from": which,
        "bremsstrahlung": BREMSSTRAHLUNG_QUOTED,
    }


def systematic_band() -> dict[str, Any]:
    """The shipped systematic band of the data-free physics (see docs/simulation.md)."""
    p = resources.files("caloquant.sim").joinpath("data/systematics.json")
    try:
        return json.loads(p.read_text())["band"]
    except FileNotFoundError:
        return {
            "sf_rel": BREMSSTRAHLUNG_QUOTED["sf_rel_shift"],
            "bremsstrahlung": BREMSSTRAHLUNG_QUOTED,
            "measured_variants": False,
        }
