"""Measure the systematic spread of the data-free Geant4 physics list between model choices and
ship it as caloquant's systematic band (src/caloquant/sim/data/systematics.json).

    .venv/bin/python benchmarks/sim_systematics.py --out /work/data/g4/systematics --n 40
        --energies 20,100

Resumable: finished variant files are reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caloquant.fileio import write_json
from caloquant.sim.systematics import band_from, measure_systematics

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("/work/data/g4/systematics"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--energies", default="20,100")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    energies = tuple(float(x) for x in args.energies.split(","))
    m = measure_systematics(args.out, energies, args.n, workers=args.workers)
    band = band_from(m)
    doc = {
        "command": f"benchmarks/sim_systematics.py --n {args.n} --energies {args.energies}",
        "band": band,
        "measurement": m,
    }
    write_json(REPO / "src" / "caloquant" / "sim" / "data" / "systematics.json", doc)
    write_json(REPO / "benchmarks" / "results" / "sim_systematics.json", doc)
    for name, pts in m["shifts"].items():
        for p, r in pts.items():
            print(
                f"{name:30s} {p:>5s} GeV  "
                f"SF {100 * r['sf_rel']:+.2f}+-{100 * r['sf_rel_err']:.2f} %  "
                f"z {r['z_mean']:+.3f}+-{r['z_mean_err']:.3f}  zstd {r['z_std']:+.3f}  "
                f"ystd {r['y_std']:+.3f}+-{r['y_std_err']:.3f}"
            )
    print("band:", band)
