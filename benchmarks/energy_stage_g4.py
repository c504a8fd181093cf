"""The two-stage model's energy stage on real Geant4 showers: fitted to the training shards,
compared with the held-out set per 50 GeV bin (mean Ecal/Ep and sigma/mean, with errors).

This is what the energy of a two-stage model is, whatever its shape network learns (the shower
deposits exactly the energy stage's Ecal): issue 23's targets are a mean response within 2 %
and a resolution within 20 % of Geant4's in every bin.

    .venv/bin/python benchmarks/energy_stage_g4.py --train /work/data/g4/train \\
        --heldout /work/data/g4/heldout
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant.fileio import write_json
from caloquant.models import EnergyStage
from caloquant.train.data import FileRows, ecal_and_energy as train_ecal_and_energy, scan_files
from caloquant.train.energy import fit_energy_stage

REPO = Path(__file__).resolve().parents[1]
THRESHOLD_GEV = 1e-6  # cells below are dropped, as training does


def ecal_and_energy(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every shower's ECAL sum and incident energy, read as training reads them."""
    files = sorted(str(f) for f in folder.glob("shard_*.h5"))
    counts = scan_files(files, (25, 25, 25))
    ecal, ep = train_ecal_and_energy(
        [FileRows(f, n, 0, n) for f, n in zip(files, counts)], THRESHOLD_GEV
    )
    return ecal, ep.astype(np.float64), [Path(f).name for f in files]


def _core(x: np.ndarray) -> float:
    q16, q84 = np.quantile(x, [0.16, 0.84])
    return float((q84 - q16) / 2 / x.mean())


STATS = {
    "mean": lambda x: float(x.mean()),
    "resolution": lambda x: float(x.std(ddof=1) / x.mean()),
    "core_resolution": _core,
}


def ratio_with_error(f: Any, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple:
    """f(a) / f(b) and its bootstrap standard deviation (both samples resampled)."""
    boot = [
        f(a[rng.integers(0, len(a), len(a))]) / f(b[rng.integers(0, len(b), len(b))])
        for _ in range(200)
    ]
    return f(a) / f(b), float(np.std(boot))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=Path, default=Path("/work/data/g4/train"))
    ap.add_argument("--heldout", type=Path, default=Path("/work/data/g4/heldout"))
    ap.add_argument("--draws", type=int, default=50, help="model draws per held-out shower")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/energy_stage/g4_heldout.json"
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    ecal_t, ep_t, files_t = ecal_and_energy(args.train)
    ecal_h, ep_h, files_h = ecal_and_energy(args.heldout)
    t0 = time.perf_counter()
    stage = EnergyStage()
    fit = fit_energy_stage(stage, ep_t, ecal_t)
    fit_s = time.perf_counter() - t0
    # the model drawn at the held-out energies (args.draws per shower, a fixed generator)
    e_m = np.repeat(ep_h, args.draws)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        u_m = stage(
            torch.tensor(e_m / 100.0, dtype=torch.float32).unsqueeze(1),
            torch.randn(len(e_m), 1, generator=gen),
        )
    u_m = u_m.squeeze(1).double().numpy()
    u_h, u_t = ecal_h / ep_h, ecal_t / ep_t
    rng = np.random.default_rng(0)
    rows = []
    for lo in range(100, 500, 50):
        hi = lo + 50
        h = (ep_h >= lo) & ((ep_h < hi) if hi < 500 else (ep_h <= hi))
        t = (ep_t >= lo) & ((ep_t < hi) if hi < 500 else (ep_t <= hi))
        m = np.repeat(h, args.draws)
        row: dict[str, object] = {"bin_gev": [lo, hi], "n_heldout": int(h.sum())}
        # the model and, as the floor, Geant4's own training showers against the held-out ones
        for who, x in (("model", u_m[m]), ("geant4_train", u_t[t])):
            for stat, f in STATS.items():
                ratio, err = ratio_with_error(f, x, u_h[h], rng)
                row[f"{stat}_ratio_{who}"] = round(ratio, 4)
                row[f"{stat}_ratio_{who}_err"] = round(err, 4)
        rows.append(row)
    out = {
        "what": "energy stage fitted to Geant4 training shards, against the held-out set",
        "train_files": files_t,
        "n_train": len(ep_t),
        "heldout_files": files_h,
        "n_heldout": len(ep_h),
        "fit": fit.to_dict(),
        "fit_seconds": round(fit_s, 2),
        "threads": 2,
        "bins": rows,
        "statistics": {
            "mean": "mean Ecal/Ep",
            "resolution": "standard deviation / mean of Ecal/Ep (sensitive to the leakage tail)",
            "core_resolution": "half the 16-84 % quantile range / mean (the core's width)",
            "errors": "bootstrap (200 resamples of both samples), one standard deviation",
        },
        "max_abs_mean_deviation_model": round(
            max(abs(float(r["mean_ratio_model"]) - 1) for r in rows),
            4,  # type: ignore[arg-type]
        ),
    }
    write_json(args.out, out)
    for r in rows:
        print(
            f"{r['bin_gev']}: n {r['n_heldout']}; model/G4 mean {r['mean_ratio_model']:.4f}"
            f"+-{r['mean_ratio_model_err']:.4f}, resolution {r['resolution_ratio_model']:.3f}"
            f"+-{r['resolution_ratio_model_err']:.3f}, core {r['core_resolution_ratio_model']:.3f}"
            f"+-{r['core_resolution_ratio_model_err']:.3f} | G4 train/held-out: resolution "
            f"{r['resolution_ratio_geant4_train']:.3f}, core "
            f"{r['core_resolution_ratio_geant4_train']:.3f}"
        )
    print(fit.note(), f"({fit_s:.1f} s); wrote {args.out}")


if __name__ == "__main__":
    main()
