"""Fit the GFlash engine's free constants to Geant4 showers and ship them as its defaults.

Reads a Geant4 set at fixed energy points (default: the 'package' reference set, 100 electrons
at each of 100-500 GeV), fits (caloquant.sim.fit.fit_gflash), writes
src/caloquant/sim/data/gflash_constants.json, then simulates the fitted engine with its cell
fluctuations at the same points and writes the residuals to benchmarks/results/gflash_fit.json
and docs/img/sim_gflash_vs_geant4.png.

    .venv/bin/python benchmarks/fit_gflash.py --ref /work/data/g4/package
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from caloquant.fileio import atomic_path, write_json
from caloquant.sim import load_geometry
from caloquant.sim.fit import compare_engines, fit_gflash
from caloquant.sim.gflash import GFlash

REPO = Path(__file__).resolve().parents[1]


def plot(
    geom, g4: np.ndarray, e: np.ndarray, points: tuple[float, ...], constants: dict, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    plt.style.use(hep.style.ROOT)
    gf = GFlash(geom, constants)
    fig, axs = plt.subplots(2, len(points), figsize=(4.5 * len(points), 8), squeeze=False)
    for j, p in enumerate(points):
        m = np.isclose(e, p)
        ref = g4[m]
        cells, _ = gf.simulate(np.full(2000, p), np.random.default_rng([5, j]))
        for row, (axis, name) in enumerate((((1, 2), "z (layer)"), ((1, 3), "y (cell)"))):
            ax = axs[row, j]
            for arr, style in (
                (ref, {"color": "black", "label": f"Geant4 ({len(ref)})"}),
                (cells, {"color": "tab:red", "label": "GFlash fitted (2000)"}),
            ):
                prof = arr.sum(axis=axis) / arr.sum(axis=(1, 2, 3))[:, None]
                mean, err = prof.mean(axis=0), prof.std(axis=0) / np.sqrt(len(arr))
                ax.errorbar(
                    np.arange(len(mean)),
                    mean,
                    err,
                    fmt="o" if style["color"] == "black" else "-",
                    ms=3,
                    **style,
                )
            ax.set_yscale("log")
            ax.set_xlabel(name)
            ax.set_title(f"{p:g} GeV", fontsize=12)
            if j == 0:
                ax.set_ylabel("energy fraction")
                ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ref", type=Path, default=Path("/work/data/g4/package"))
    ap.add_argument("--n-model", type=int, default=200)
    args = ap.parse_args()
    geom = load_geometry()
    from caloquant.sim import read_reference_set

    s, e, _ = read_reference_set(args.ref)
    points = tuple(sorted(set(np.round(e, 6).tolist())))
    fit = fit_gflash(geom, s, e, points, n_model=args.n_model)
    fit["reference"] = {"path": str(args.ref), "showers": int(len(e)), "points_gev": points}
    write_json(REPO / "src" / "caloquant" / "sim" / "data" / "gflash_constants.json", fit)
    cmp = compare_engines(geom, s, e, points, fit["constants"])
    write_json(REPO / "benchmarks" / "results" / "gflash_fit.json", {"fit": fit, "comparison": cmp})
    plot(geom, s, e, points, fit["constants"], REPO / "docs" / "img" / "sim_gflash_vs_geant4.png")
    print({k: round(v, 4) for k, v in fit["constants"].items()})
    print(
        f"{'E':>5s} {'SF rel':>7s} {'dz mean':>8s} {'dz std':>7s} {'dy std':>7s} "
        f"{'res g4':>7s} {'res gf':>7s} {'occ g4':>7s} {'occ gf':>7s}"
    )
    for r in cmp["rows"]:
        print(
            f"{r['energy_gev']:5g} {100 * r['sf_rel']:+6.2f}% {r['dz_mean']:+8.3f} "
            f"{r['dz_std']:+7.3f} {r['dy_std']:+7.3f} "
            f"{r['res_g4']:7.4f} {r['res_gflash']:7.4f} "
            f"{r['occupancy_g4']:7.4f} {r['occupancy_gflash']:7.4f}"
        )
    print("within requirements (SF 5 %, z 0.5 layer, y std 0.15 cell):", cmp["ok"])


if __name__ == "__main__":
    main()
