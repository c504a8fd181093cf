"""The CaloChallenge classifier protocol (caloquant.physics.calochallenge) on real showers.

(a) The Geant4 floor: the 2,000 held-out Geant4 showers (seeds 20000-20019) against 2,000
    independent Geant4 showers of the training production (train shards 0000-0019, seeds
    10000-10019): what the protocol gives for two samples of one source, with several
    classifier seeds (``--floor-seeds``).
(b) Sensitivity: the same two sets with every cell of the second scaled by 1 + s
    (``--scales``: 2, 5 and 10 %): how large an energy-scale error the protocol sees at this
    sample size.
(c) The built-in models, one shower per held-out shower at its energy, against the held-out
    set.

Writes benchmarks/results/classifier/calochallenge.json (atomically) with both classifiers'
AUC and JSD with errors, the epochs and the wall time of every run, the threads and the other
load on the machine while it ran (``other_load_pct``: the share of the machine's CPU used by
other processes). Nothing else is needed: about 15 minutes on 2 busy cores.

    .venv/bin/python benchmarks/calochallenge_classifier.py \\
        --heldout /work/data/g4/heldout --train /work/data/g4/train --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "classifier" / "calochallenge.json"


def run_one(label: str, ref: tuple, cand: tuple, cfg: Any, seed: int) -> dict[str, Any]:
    from caloquant.physics.calochallenge import calochallenge_test
    from caloquant.timing import OtherLoad

    t0 = time.perf_counter()
    with OtherLoad() as load:
        res = calochallenge_test(ref, cand, cfg, seed=seed).to_dict()
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["other_load_pct"] = load.pct
    lo, hi = res["low_level"], res["high_level"]
    print(
        f"{label}: low AUC {lo['auc']:.4f} ± {lo['auc_err']:.4f} JSD {lo['jsd']:.4f} "
        f"({lo['epochs']} ep, {lo['seconds']:.0f} s) | high AUC {hi['auc']:.4f} ± "
        f"{hi['auc_err']:.4f} JSD {hi['jsd']:.4f} ({hi['epochs']} ep, {hi['seconds']:.0f} s) | "
        f"wall {res['wall_s']:.0f} s, other load {load.pct} %",
        flush=True,
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--heldout", type=Path, default=Path("/work/data/g4/heldout"))
    ap.add_argument("--train", type=Path, default=Path("/work/data/g4/train"))
    ap.add_argument("--models", nargs="*", default=["cern-3dgan", "conv2d-g4"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the classifier runs")
    ap.add_argument("--floor-seeds", type=int, default=3, help="classifier seeds of the floor")
    ap.add_argument("--scales", type=float, nargs="*", default=[0.02, 0.05, 0.1])
    ap.add_argument("--sample-seed", type=int, default=12345, help="seed of the model samples")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    import caloquant as cq
    from caloquant.fileio import write_json
    from caloquant.physics.calochallenge import CaloChallengeConfig
    from caloquant.runtime import cpu_identity
    from caloquant.sim import read_reference_set

    torch.set_num_threads(args.threads)
    cfg = CaloChallengeConfig(threads=args.threads)
    g4, e, seeds_h = read_reference_set(args.heldout, 2000)
    g4_train, e_train, seeds_t = read_reference_set(args.train, 2000)
    if set(seeds_h) & set(seeds_t):
        raise SystemExit(f"the two Geant4 sets share seeds: {sorted(set(seeds_h) & set(seeds_t))}")
    results: dict[str, Any] = {
        "protocol": "caloquant.physics.calochallenge (docs/validation.md)",
        "host": {
            "cpu": cpu_identity()["cpu_model"],
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "reference": {
            "path": str(args.heldout),
            "n": int(len(e)),
            "seeds": [min(seeds_h), max(seeds_h)],
            "energy_range_gev": [float(e.min()), float(e.max())],
        },
        "floor": {},
        "models": {},
    }
    runs = [
        run_one(f"Geant4 floor, seed {s}", (g4, e), (g4_train, e_train), cfg, s)
        for s in range(args.seed, args.seed + args.floor_seeds)
    ]
    results["floor"] = {
        "cand": {
            "path": str(args.train),
            "shards": "shard_0000.h5 ... shard_0019.h5",
            "n": int(len(e_train)),
            "seeds": [min(seeds_t), max(seeds_t)],
        },
        "runs": runs,
        "summary": {
            level: {
                "auc_mean": float(np.mean([r[level]["auc"] for r in runs])),
                "auc_std_over_seeds": float(np.std([r[level]["auc"] for r in runs], ddof=1))
                if len(runs) > 1
                else None,
                "jsd_mean": float(np.mean([r[level]["jsd"] for r in runs])),
            }
            for level in ("low_level", "high_level")
        },
    }
    results["sensitivity"] = {
        f"scale_{1 + s:g}": run_one(
            f"Geant4 x {1 + s:g}", (g4, e), (g4_train * np.float32(1 + s), e_train), cfg, args.seed
        )
        for s in args.scales
    }
    del g4_train
    for name in args.models:
        t0 = time.perf_counter()
        model = cq.load(name, threads=args.threads)
        showers, _ = model.sample(energies=e, seed=args.sample_seed)
        sample_s = round(time.perf_counter() - t0, 1)
        res = run_one(name, (g4, e), (showers, e), cfg, args.seed)
        results["models"][name] = {"sample_seed": args.sample_seed, "sample_s": sample_s, **res}
        del showers, model
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
