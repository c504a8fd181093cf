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
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from caloquant.data import ShowerWriter  # noqa: E402
from caloquant.fileio import write_json  # noqa: E402
from tests.helpers import toy_showers  # noqa: E402


def make_file(path: Path, n: int, seed: int) -> None:
    if path.exists():
        return
    with ShowerWriter(path, (25, 25, 25), expected_n=n) as w:
        for i, start in enumerate(range(0, n, 1000)):
            w.append(*toy_showers(min(1000, n - start), seed=seed * 1000 + i))


# Runs a command and prints its own peak RSS (KiB), so each measurement is of one child only.
RUN_AND_REPORT_RSS = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


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

    def run(extra: list[str], label: str) -> tuple[float, float]:
        cmd = [
            str(exe),
            "validate",
            str(ref),
            str(cand),
            "--json",
            str(args.workdir / "v.json"),
            "--threads",
            "2",
            *extra,
        ]
        t = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/env", "python3", "-c", RUN_AND_REPORT_RSS, *cmd],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t
        rss_mb = float(proc.stdout.strip().splitlines()[-1]) / 1024
        print(f"{label}: {wall:.1f} s, peak RSS {rss_mb:.0f} MB")
        return wall, rss_mb

    runs = [run([], f"metrics run {i + 1}") for i in range(args.repeat)]
    times = [w for w, _ in runs]
    clf_wall, clf_rss = run(["--classifier"], "metrics + classifier (10k + 10k)")
    result = {
        "benchmark": "validate",
        "n_ref": args.n,
        "n_cand": args.n,
        "wall_s_median": statistics.median(times),
        "wall_s_all": times,
        "peak_rss_mb": max(r for _, r in runs),
        "classifier_extra_s": clf_wall - statistics.median(times),
        "classifier_peak_rss_mb": clf_rss,
        "budget": {"wall_s": 60, "rss_mb": 2048, "classifier_s": 120},
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "cores_used": 2},
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
