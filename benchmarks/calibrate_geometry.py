"""Compare the default geometry's Geant4 showers with the 3DGAN data facts and record the result.

Reads the 'package' reference set (100 electrons at each of 100-500 GeV, made by
benchmarks/make_reference_sets.py), computes Ecal/Ep, the z and y moments over the five points
(equal weights: a flat 100-500 GeV spectrum), writes the [calibration] table of
src/caloquant/sim/data/default_geometry.toml, benchmarks/results/geometry_calibration.json and
docs/img/sim_calibration.png.

    .venv/bin/python benchmarks/calibrate_geometry.py --ref /work/data/g4/package
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from pathlib import Path

import numpy as np

from caloquant.fileio import atomic_path, write_json
from caloquant.sim import load_geometry
from caloquant.sim.compare import PAPER_G4, paper_comparison, summarize

REPO = Path(__file__).resolve().parents[1]
TOML = REPO / "src" / "caloquant" / "sim" / "data" / "default_geometry.toml"
LABELS = {
    "sf": "Ecal / Ep",
    "z_mean": "z mean (layer)",
    "z_std": "z std (layers)",
    "y_mean": "y mean (cell)",
    "y_std": "y std (cells)",
}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    plt.style.use(hep.style.ROOT)
    pts = summary["points"]
    e = np.array([float(p) for p in pts])
    fig, axs = plt.subplots(1, 4, figsize=(20, 5))
    for ax, k in zip(axs, ("sf", "z_mean", "z_std", "y_std"), strict=True):
        v = np.array([pts[p][k] for p in pts])
        err = np.array([pts[p][k + "_err"] for p in pts])
        ax.errorbar(e, v, err, fmt="o", color="black", label="Geant4 engine (default geometry)")
        ax.axhspan(
            PAPER_G4[k] * 0.9,
            PAPER_G4[k] * 1.1,
            color="tab:blue",
            alpha=0.15,
            label="3DGAN data +-10 %",
        )
        ax.axhline(PAPER_G4[k], color="tab:blue", label="3DGAN data (100-500 GeV)")
        ax.axhline(summary["all"][k], color="black", ls="--", label="this, 100-500 GeV")
        ax.set_xlabel("Ep (GeV)")
        ax.set_ylabel(LABELS[k])
    axs[0].legend(fontsize=10, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_calibration(rows: list[dict], n: int) -> None:
    text = TOML.read_text()
    text = re.split(r"\n\[calibration\]", text)[0].rstrip() + "\n"
    lines = [
        "",
        "[calibration]",
        f'reached_utc = "{dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}"',
        f'sample = "Geant4 engine, em-analytic, cut 0.7 mm: {n} electrons, '
        '100 at each of 100-500 GeV"',
        'target = "3DGAN data, 100-500 GeV (paper Table 3; physics.md)"',
    ]
    for r in rows:
        lines.append(
            f"{r['observable']} = {{ target = {r['paper_geant4']:.4g}, reached = {r['this']:.4g}, "
            f"stat_err = {r['err']:.2g}, rel_diff = {r['rel_diff']:+.3f} }}"
        )
    TOML.write_text(text + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ref", type=Path, default=Path("/work/data/g4/package"))
    args = ap.parse_args()
    from caloquant.sim import read_reference_set

    s, e, _ = read_reference_set(args.ref)
    points = tuple(sorted(set(np.round(e, 6).tolist())))
    summary = summarize(s, e, points)
    rows = paper_comparison(summary["all"])
    geom = load_geometry()
    write_json(
        REPO / "benchmarks" / "results" / "geometry_calibration.json",
        {
            "geometry": geom.to_dict(),
            "n": int(len(e)),
            "points_gev": points,
            "comparison": rows,
            "per_point": {
                p: {k: v for k, v in row.items() if k != "profile_z"}
                for p, row in summary["points"].items()
            },
        },
    )
    write_calibration(rows, len(e))
    plot(summary, REPO / "docs" / "img" / "sim_calibration.png")
    print(f"{'observable':10s} {'3DGAN':>8s} {'this':>8s} {'+-':>7s} {'diff':>7s}")
    for r in rows:
        print(
            f"{r['observable']:10s} {r['paper_geant4']:8.4g} {r['this']:8.4g} {r['err']:7.2g} "
            f"{100 * r['rel_diff']:+6.1f}%"
        )


if __name__ == "__main__":
    main()
