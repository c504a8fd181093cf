"""Trained models against a held-out Geant4 set, side by side (issue 11's report).

For each model: one shower per held-out Geant4 shower (same energy; the same latents for every
model), then caloquant's validation against the Geant4 showers: the sampling fraction ratio
model/Geant4 per 50 GeV bin, shifts of the z and y moments (mean and width, cells), the
projection MSE, the classifier AUC (a gradient-boosted classifier on shower features; 0.5 =
indistinguishable) and FPD. Writes benchmarks/results/<out>.json and prints a markdown table.

The held-out set: the flat 1,000-shower Geant4 reference of ``caloquant run`` (seed 1,
em-analytic, caloquant geometry; independent of the training seeds 10,000-10,049), e.g.
``~/.cache/caloquant/reference/run/flat-*.h5``, or made with
``caloquant simulate --engine geant4 --n 1000 --energy-range 100 500 --seed 1 -o heldout.h5``.

    .venv/bin/python benchmarks/validate_trained.py --ref heldout.h5 --models conv2d-g4 cern-3dgan
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def summarize(rep: dict[str, Any]) -> dict[str, Any]:
    allb, bins = rep["bins"][0], rep["bins"][1:]
    mom = allb["moments"]
    out = {
        "sampling_fraction_ratio_all": allb["sampling_fraction"]["ratio"],
        "sampling_fraction_ratio_per_bin": {
            f"{b['lo_gev']:.0f}-{b['hi_gev']:.0f}": b["sampling_fraction"]["ratio"] for b in bins
        },
        "sampling_fraction_ratio_err_per_bin": {
            f"{b['lo_gev']:.0f}-{b['hi_gev']:.0f}": b["sampling_fraction"]["ratio_err"]
            for b in bins
        },
        "projection_mse": allb.get("projection_mse"),
    }
    for ax in ("z", "y", "x"):
        for k in ("mean", "std"):
            m = mom[ax][k]
            out[f"{ax}_{k}_shift_cells"] = m["shift"]
            out[f"{ax}_{k}_ref_cells"] = m.get("ref")
            if k == "std" and m.get("ref"):
                out[f"{ax}_std_rel"] = m["shift"] / m["ref"]
    out["classifier_auc"] = rep.get("classifier_auc")
    out["fpd"] = (rep.get("fpd") or {}).get("value")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ref", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=["conv2d-g4", "cern-3dgan"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="validate_trained")
    args = ap.parse_args()

    import caloquant as cq
    from caloquant.data import read_showers
    from caloquant.fileio import write_json
    from caloquant.physics import validate

    g4, e = read_showers(args.ref)
    results: dict[str, Any] = {
        "reference": {
            "file": args.ref.name,
            "n": int(len(e)),
            "energy_range_gev": [float(e.min()), float(e.max())],
        },
        "models": {},
    }
    for name in args.models:
        m = cq.load(name, threads=args.threads)
        showers, _ = m.sample(energies=e, seed=12345)
        rep = validate(
            (g4, e), (showers, e), bins="width:50", classifier=True, distances=True, detail=False
        ).to_dict()
        results["models"][name] = summarize(rep)
        print(f"{name}: done", flush=True)
    write_json(REPO / "benchmarks" / "results" / f"{args.out}.json", results)
    names = list(results["models"])
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print(
        "| sampling fraction ratio, all | "
        + " | ".join(f"{results['models'][n]['sampling_fraction_ratio_all']:.3f}" for n in names)
        + " |"
    )
    for b in results["models"][names[0]]["sampling_fraction_ratio_per_bin"]:
        print(
            f"| SF ratio {b} GeV | "
            + " | ".join(
                f"{results['models'][n]['sampling_fraction_ratio_per_bin'][b]:.3f}" for n in names
            )
            + " |"
        )
    for key in (
        "z_mean_shift_cells",
        "z_std_rel",
        "y_mean_shift_cells",
        "y_std_rel",
        "x_std_rel",
        "projection_mse",
        "classifier_auc",
        "fpd",
    ):
        vals = [results["models"][n].get(key) for n in names]
        print(f"| {key} | " + " | ".join("n/a" if v is None else f"{v:.3g}" for v in vals) + " |")


if __name__ == "__main__":
    main()
