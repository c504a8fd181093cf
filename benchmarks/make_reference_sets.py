"""Produce the Geant4 reference sets used by tests, tuning, training and the study.

Resumable: finished shards are kept and skipped, and inside a shard finished chunks are
reused. Each set directory gets a manifest.json with per-shard seeds and sha256 checksums;
the manifests (not the data) are copied to benchmarks/results/reference_sets/.

    # the compact reference shipped in the package (500 showers, ~15 CPU min)
    .venv/bin/python benchmarks/make_reference_sets.py package --out /work/data/g4 --pack
    # training and held-out sets for the training stage (~2.5 and ~0.5 CPU hours), low priority
    nohup nice -n 19 .venv/bin/python benchmarks/make_reference_sets.py train heldout
        --out /work/data/g4 &
    # the GFlash top-up of the training data (fitted to Geant4; 5,000 showers in ~10 s)
    .venv/bin/python benchmarks/make_reference_sets.py train-gflash --out /work/data/g4
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from caloquant.sim.reference import PACKAGED, SETS, pack_reference, produce_set, set_files

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sets", nargs="+", choices=sorted(SETS))
    ap.add_argument("--out", type=Path, default=Path("/work/data/g4"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--pack", action="store_true", help="pack the 'package' set into the caloquant package"
    )
    args = ap.parse_args()
    results = REPO / "benchmarks" / "results" / "reference_sets"
    results.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        t0 = time.time()
        man = produce_set(name, args.out, workers=args.workers, log=lambda m: print(m, flush=True))
        shutil.copy(args.out / name / "manifest.json", results / f"{name}.json")
        print(
            f"{name}: {man['shards_done']}/{man['shards_total']} shards, {man['showers']} showers, "
            f"{time.time() - t0:.0f} s",
            flush=True,
        )
        if name == "package" and args.pack:
            if not man["complete"]:
                sys.exit("package set incomplete: cannot pack")
            info = pack_reference(
                set_files("package", args.out), REPO / "src" / "caloquant" / "sim" / PACKAGED
            )
            print(
                f"packed {info['showers']} showers into {PACKAGED}: {info['bytes'] / 1e6:.2f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
