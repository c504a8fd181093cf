"""Validation throughput: all metrics except the classifier on 20,000 vs 20,000 showers.

Budget (issue "Physics validation"): at most 60 s and 2 GB on 2 cores. Makes two toy
shower files (25^3, gzip, 3DGAN format) once, then runs `caloquant validate` in a child
process `--repeat` times and records wall time (median) and the child's peak RSS.

    .venv/bin/python benchmarks/bench_validate.py [--n 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import toy_showers  # noqa: E402

from caloquant.data import ShowerWriter  # noqa: E402
from caloquant.fileio import write_json  # noqa: E402


def make_file(path: Path, n: int, seed: int) -> None:
    if path.exists():
        return
    with ShowerWriter(path, (25, 25, 25), expected_n=n) as w:
        for i, start in enumerate(range(0, n, 1000)):
            w.append(*toy_showers(min(1000, n - start), seed=seed * 1000 + i))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "out" / "bench_validate")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "validate.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ref, cand = args.workdir / f"ref_{args.n}.h5", args.workdir / f"cand_{args.n}.h5"
    t0 = time.perf_counter()
    make_file(ref, args.n, 1)
    make_file(cand, args.n, 2)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s")
    exe = Path(sys.executable).with_name("caloquant")
    times, rss = [], []
    for i in range(args.repeat):
        cmd = [str(exe), "validate", str(ref), str(cand), "--json", str(args.workdir / "v.json"), "--threads", "2"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
        rss.append(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
        print(f"run {i + 1}: {times[-1]:.1f} s, peak RSS {rss[-1]:.0f} MB")
    result = {
        "benchmark": "validate", "n_ref": args.n, "n_cand": args.n, "classifier": False,
        "wall_s_median": statistics.median(times), "wall_s_all": times, "peak_rss_mb": max(rss),
        "budget": {"wall_s": 60, "rss_mb": 2048},
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(), "cores_used": 2},
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
