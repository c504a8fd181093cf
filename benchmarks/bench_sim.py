"""Speed of the simulation engines on this machine, written to benchmarks/results/bench_sim.json.

* Geant4: CPU and wall seconds per shower at 100-500 GeV on one core (`caloquant.sim.time_engine`,
  time-boxed), and the throughput of `simulate` with 1 and 2 workers on the same showers.
* GFlash: `caloquant simulate --engine gflash --n 5000 --energy-range 100:500` end to end (a fresh
  process, as a user runs it) with 1 and 2 workers, and its CPU seconds per shower.

    .venv/bin/python benchmarks/bench_sim.py [--g4-per-point 3] [--g4-budget 400]
        [--g4-throughput-n 8]

Other processes on a shared host inflate wall times: the load average before and after is
recorded; CPU seconds per shower are the robust figure, ratios inside one run the fair ones.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from caloquant.fileio import write_json
from caloquant.sim import SimConfig, flat_average, simulate, time_engine

REPO = Path(__file__).resolve().parents[1]


def gflash_cli(n: int, workers: int, tmp: Path) -> dict[str, float]:
    out = tmp / f"gflash_{workers}.h5"
    cmd = [
        sys.executable,
        "-m",
        "caloquant.cli",
        "simulate",
        "--engine",
        "gflash",
        "--n",
        str(n),
        "--energy-range",
        "100:500",
        "--workers",
        str(workers),
        "-o",
        str(out),
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    r0 = os.times()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t0
    r1 = os.times()
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    out.unlink()
    return {
        "n": n,
        "workers": workers,
        "wall_s": round(wall, 2),
        "showers_per_s_end_to_end": round(n / wall, 1),
        "cpu_s_total_incl_startup": round(cpu, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--g4-per-point", type=int, default=3)
    ap.add_argument("--g4-budget", type=float, default=400.0)
    ap.add_argument("--g4-throughput-n", type=int, default=8)
    ap.add_argument("--gflash-n", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_sim.json")
    args = ap.parse_args()
    res: dict = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        # GFlash end to end, 1 then 2 workers (warm numba cache first)
        gflash_cli(200, 1, tmp)
        res["gflash_end_to_end"] = [gflash_cli(args.gflash_n, w, tmp) for w in (1, 2)]
        g = time_engine("gflash", showers_per_point=3)
        res["gflash_per_energy"] = {
            e: {
                "cpu_s_per_shower": v["cpu_s_per_shower"]["mean"],
                "showers_per_s_one_core_cpu": 1 / v["cpu_s_per_shower"]["mean"],
            }
            for e, v in g["per_energy"].items()
        }
        # Geant4 per energy, one core
        t = time_engine("geant4", showers_per_point=args.g4_per_point, budget_s=args.g4_budget)
        t["flat_mean_s_per_shower"], t["flat_mean_s_per_shower_err"] = flat_average(t["per_energy"])
        t["flat_mean_cpu_s_per_shower"], t["flat_mean_cpu_s_per_shower_err"] = flat_average(
            t["per_energy"], key="cpu_s_per_shower"
        )
        res["geant4_per_energy"] = t
        # Geant4 throughput with 1 and 2 workers on the same showers (flat 100-500 GeV)
        e = np.random.default_rng(0).uniform(100, 500, args.g4_throughput_n)
        thr = []
        for w in (1, 2):
            r = simulate(tmp / f"g4_{w}.h5", e, SimConfig(seed=1, chunk_size=1), workers=w)
            thr.append(
                {
                    "workers": w,
                    "n": len(e),
                    "wall_s": round(r["wall_s"], 2),
                    "showers_per_s": r["showers_per_s"],
                    "cpu_s_per_shower": r["cpu_s_per_shower"],
                }
            )
        res["geant4_throughput"] = thr
    res["load_after"] = os.getloadavg()
    write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
