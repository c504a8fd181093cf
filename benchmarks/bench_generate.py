"""Writing must not eat the model's speed: `sample` and `generate` showers/s against the model
alone.

Three parts, all on one model (default: the physics-tuned int8 artifact of the CERN 3DGAN):

A. the `sample` loop in this process (generate_batches -> ShowerWriter), batch 64, 2 threads:
   the model alone (no writing), the old way (gzip on the inference thread), and the writer
   thread with gzip, LZ4 and Zstd. Every configuration runs once per round, rounds interleaved,
   so each ratio to the model alone is taken within one round (one host state); medians.
B. `generate` on local Dask clusters that stay up for the whole part: 1 worker x 1 thread,
   2 workers x 1 thread, 1 worker x 2 threads (LZ4). Each cluster is warmed up (workers load
   the model once and keep it), then every round times one run per cluster, interleaved with
   the model alone at 1 and 2 threads in this process. Reported: showers/s from submission to
   the last shard, per worker against the model alone at the same threads, scaling efficiency
   2 workers / (2 x 1 worker), and the overhead of sharded writes against the `sample` loop.
C. end to end from the command line, one child process each (wall time includes start-up and
   model loading; peak RSS of the child and its workers): `caloquant sample` with gzip and LZ4,
   `caloquant generate --workers 1 --threads 2`.
D. the Geant4 engine (caloquant.sim) on local clusters of 1 and 2 single-thread workers, as in B.
E. CPU time instead of wall time (less sensitive to other processes on a shared host): CPU ms
   per shower of the model (all its threads) and of writing with each codec; the share of the
   CPU that writing takes bounds the end-to-end/model ratio on a machine whose cores are all
   busy with inference.

    .venv/bin/python benchmarks/bench_generate.py [--model /work/data/int8_artifact] [--rounds 3]

Writes benchmarks/results/generate.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from caloquant.bench import machine_info  # noqa: E402
from caloquant.data import ShowerWriter  # noqa: E402
from caloquant.distributed import GenerateConfig, generate  # noqa: E402
from caloquant.fileio import write_json  # noqa: E402
from caloquant.models import energies_for, generate_batches  # noqa: E402
from caloquant.precision import is_artifact, load_artifact  # noqa: E402

WRITERS = {  # name -> (compression, background writer thread)
    "inline_gzip": ("gzip", False),
    "thread_gzip": ("gzip", True),
    "inline_lz4": ("lz4", False),
    "thread_lz4": ("lz4", True),
    "thread_zstd": ("zstd", True),
}
CLUSTERS = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (1, 2)}  # name -> (workers, engine threads each)


def load(model: Path, threads: int) -> Any:
    if is_artifact(model):
        return load_artifact(model, threads)
    from caloquant.models import TorchGenerator, load_checkpoint

    ck = load_checkpoint(model)
    return TorchGenerator(ck.spec, ck.generator.eval(), threads)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(max_load: float, timeout_s: float) -> list[float]:
    """Wait (up to timeout_s) until the 1-minute load average is below max_load: on a shared
    2-core host other processes' load dominates every timing."""
    end = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < end:
        time.sleep(10)
    return loadavg()


def time_sample_loop(gen: Any, n: int, seed: int, writer: str | None, path: Path) -> float:
    """showers/s of the `sample` command's loop (model + writer), or of the model alone."""
    e = energies_for(n, seed, energy_range=(100.0, 500.0))
    t = time.perf_counter()
    if writer is None:
        for _ in generate_batches(gen, e, seed, batch=64):
            pass
    else:
        comp, bg = WRITERS[writer]
        with ShowerWriter(
            path, gen.spec.grid, "3dgan", {}, expected_n=n, compression=comp, background=bg
        ) as w:
            for s, eb in generate_batches(gen, e, seed, batch=64):
                w.append(s, eb)
    return n / (time.perf_counter() - t)


def part_a(model: Path, n: int, rounds: int, work: Path) -> dict[str, Any]:
    gen = load(model, 2)
    time_sample_loop(gen, 256, 99, None, work / "warm.h5")  # warm-up
    names = [None, *WRITERS]
    per: dict[str, list[float]] = {str(k): [] for k in names}
    ratios: dict[str, list[float]] = {k: [] for k in WRITERS}
    sizes: dict[str, int] = {}
    for r in range(rounds):
        order = (
            names[r % len(names) :] + names[: r % len(names)]
        )  # rotate: no configuration always first
        got = {}
        for name in order:
            path = work / f"a_{name}.h5"
            got[str(name)] = time_sample_loop(gen, n, r, name, path)
            if name is not None:
                sizes[name] = path.stat().st_size
                path.unlink()
        for k, v in got.items():
            per[k].append(round(v, 1))
        for k in WRITERS:
            ratios[k].append(round(got[k] / got["None"], 3))
        print(
            f"A round {r + 1}: "
            + ", ".join(f"{k} {v:.0f}/s" for k, v in got.items())
            + f"; load {loadavg()}",
            flush=True,
        )
    return {
        "n_per_run": n,
        "batch": 64,
        "threads": 2,
        "showers_per_s": {
            ("model_only" if k == "None" else k): {"median": statistics.median(v), "rounds": v}
            for k, v in per.items()
        },
        "ratio_to_model_only": {
            k: {"median": statistics.median(v), "rounds": v} for k, v in ratios.items()
        },
        "file_mb_per_1000_showers": {k: round(v / n * 1000 / 1e6, 2) for k, v in sizes.items()},
    }


def time_clusters(
    configs: dict[str, tuple[int, int]],
    source: dict[str, Any],
    n: int,
    shard: int,
    rounds: int,
    work: Path,
    energy_range: tuple[float, float],
    between: Any = None,
    tag: str = "b",
) -> dict[str, list[float]]:
    """showers/s of `generate` on local clusters kept up for the whole measurement (workers
    load the model or engine at the warm-up and keep it), one run per cluster per round;
    ``between(round)`` runs before each round's cluster runs (the model alone, for ratios)."""
    from distributed import LocalCluster

    clusters = {}
    rates: dict[str, list[float]] = {k: [] for k in configs}
    try:
        for name, (w, _) in configs.items():
            clusters[name] = LocalCluster(
                n_workers=w,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
        for name, (
            w,
            t,
        ) in configs.items():  # warm-up: every worker loads (and self-checks) the model
            cfg = GenerateConfig(
                2 * w,
                energy_range=energy_range,
                shard_size=1,
                threads=t,
                scheduler=clusters[name].scheduler_address,
                **source,
            )
            generate(work / f"{tag}_warm_{name}", cfg, log=lambda m: None)
        for r in range(rounds):
            if between is not None:
                between(r)
            for name, (w, t) in configs.items():
                out = work / f"{tag}_{name}_{r}"
                cfg = GenerateConfig(
                    n,
                    energy_range=energy_range,
                    shard_size=shard,
                    threads=t,
                    seed=r,
                    scheduler=clusters[name].scheduler_address,
                    **source,
                )
                res = generate(out, cfg, log=lambda m: None)
                rates[name].append(round(res.showers_per_s, 2))
                shutil.rmtree(out)
            print(
                f"  round {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates.items())
                + f"; load {loadavg()}",
                flush=True,
            )
    finally:
        for c in clusters.values():
            c.close()
    return rates


def scaling(rates: dict[str, list[float]]) -> dict[str, Any]:
    per_round = [round(b / (2 * a), 3) for a, b in zip(rates["1x1"], rates["2x1"])]
    return {
        "median": statistics.median(per_round),
        "rounds": per_round,
        "definition": "showers/s with 2 workers / (2 x showers/s with 1 worker), 1 thread each, "
        "same round",
    }


def part_b(
    model: Path, n: int, shard: int, rounds: int, work: Path, sample_lz4: float
) -> dict[str, Any]:
    gens = {t: load(model, t) for t in (1, 2)}
    for g in gens.values():
        time_sample_loop(g, 128, 99, None, work / "warm.h5")
    alone: dict[int, list[float]] = {1: [], 2: []}

    def model_alone(r: int) -> None:
        for t in (1, 2):
            alone[t].append(
                round(time_sample_loop(gens[t], n // 2, 100 + r, None, work / "x.h5"), 1)
            )
        print(
            f"B round {r + 1}: model alone 1 thread {alone[1][-1]:.0f}/s, "
            f"2 threads {alone[2][-1]:.0f}/s",
            flush=True,
        )

    rates = time_clusters(
        CLUSTERS, {"model": model}, n, shard, rounds, work, (100.0, 500.0), model_alone
    )
    med = {k: statistics.median(v) for k, v in rates.items()}
    a1, a2 = statistics.median(alone[1]), statistics.median(alone[2])
    return {
        "n_per_run": n,
        "shard_size": shard,
        "compression": "lz4",
        "batch": 64,
        "clusters": {k: {"workers": w, "threads_per_worker": t} for k, (w, t) in CLUSTERS.items()},
        "showers_per_s": {k: {"median": med[k], "rounds": v} for k, v in rates.items()},
        "model_only_showers_per_s": {
            "1_thread": {"median": a1, "rounds": alone[1]},
            "2_threads": {"median": a2, "rounds": alone[2]},
        },
        "per_worker_vs_model_only": {
            "1x1": round(med["1x1"] / a1, 3),
            "2x1": round(med["2x1"] / 2 / a1, 3),
            "1x2": round(med["1x2"] / a2, 3),
        },
        "scaling_efficiency_2_workers": scaling(rates),
        "sharded_vs_sample_loop_lz4": round(med["1x2"] / sample_lz4, 3),
        "note": "showers/s from task submission to the last shard (workers already hold the model)",
    }


def part_d(n: int, shard: int, rounds: int, work: Path) -> dict[str, Any]:
    """The Geant4 engine (one thread per worker) on 1 and 2 workers."""
    configs = {"1x1": (1, 1), "2x1": (2, 1)}
    print("D: Geant4 engine", flush=True)
    rates = time_clusters(
        configs, {"engine": "geant4"}, n, shard, rounds, work, (100.0, 500.0), tag="d"
    )
    return {
        "n_per_run": n,
        "shard_size": shard,
        "energy_range_gev": [100, 500],
        "showers_per_s": {
            k: {"median": statistics.median(v), "rounds": v} for k, v in rates.items()
        },
        "scaling_efficiency_2_workers": scaling(rates),
        "note": "showers/s from task submission to the last shard "
        "(workers already hold a Geant4 session)",
    }


def part_e(model: Path, n: int, work: Path) -> dict[str, Any]:
    gen = load(model, 2)
    e = energies_for(n, 5, energy_range=(100.0, 500.0))
    time_sample_loop(gen, 128, 99, None, work / "warm.h5")
    c = time.process_time()
    blocks = [s for s, _ in generate_batches(gen, e, 5, batch=64)]
    model_ms = (time.process_time() - c) / n * 1e3
    out: dict[str, Any] = {
        "n": n,
        "model_cpu_ms_per_shower_2_threads": round(model_ms, 3),
        "writers": {},
    }
    for name, comp in (("gzip", "gzip"), ("lz4", "lz4"), ("zstd", "zstd"), ("none", "none")):
        c = time.process_time()
        with ShowerWriter(
            work / "e.h5",
            gen.spec.grid,
            "3dgan",
            {},
            expected_n=n,
            compression=comp,
            background=False,
        ) as w:
            for s, i in zip(blocks, range(0, n, 64)):
                w.append(s, e[i : i + 64])
        ms = (time.process_time() - c) / n * 1e3
        out["writers"][name] = {
            "cpu_ms_per_shower": round(ms, 3),
            "share_of_cpu": round(ms / (ms + model_ms), 3),
            "bound_on_ratio": round(model_ms / (model_ms + ms), 3),
        }
        (work / "e.h5").unlink()
    print(
        f"E: model {model_ms:.2f} CPU ms/shower; "
        + ", ".join(f"{k} {v['cpu_ms_per_shower']:.3f}" for k, v in out["writers"].items()),
        flush=True,
    )
    return out


# Runs a command and prints its peak RSS (KiB): from a small wrapper process, because a child
# forked from this (large) process would report this process's memory as its own peak.
RUN_AND_REPORT_RSS = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_child(cmd: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS (MB: the largest of the command's processes, workers included)."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT_RSS, *cmd], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return wall, float(proc.stdout.strip().splitlines()[-1]) / 1024


def part_c(model: Path, n: int, work: Path) -> dict[str, Any]:
    exe = [sys.executable, "-m", "caloquant.cli"]
    out: dict[str, Any] = {"n": n}
    for comp in ("gzip", "lz4"):
        wall, rss = run_child(
            [
                *exe,
                "sample",
                "--model",
                str(model),
                "--n",
                str(n),
                "--energy-range",
                "100:500",
                "--threads",
                "2",
                "--compression",
                comp,
                "-o",
                str(work / f"c_{comp}.h5"),
            ]
        )
        out[f"sample_{comp}"] = {
            "wall_s": round(wall, 1),
            "showers_per_s": round(n / wall, 1),
            "peak_rss_mb": round(rss),
        }
        (work / f"c_{comp}.h5").unlink()
        print(
            f"C sample {comp}: {wall:.1f} s, {n / wall:.0f} showers/s end to end, "
            f"peak RSS {rss:.0f} MB; load {loadavg()}",
            flush=True,
        )
    wall, rss = run_child(
        [
            *exe,
            "generate",
            "--model",
            str(model),
            "--n",
            str(n),
            "--energy-range",
            "100:500",
            "--workers",
            "1",
            "--threads",
            "2",
            "--shard-size",
            "1000",
            "-o",
            str(work / "c_gen"),
        ]
    )
    m = json.loads((work / "c_gen" / "manifest.json").read_text())
    assert m["complete"] and sum(s["n"] for s in m["shards"]) == n
    shutil.rmtree(work / "c_gen")
    out["generate_1x2_lz4"] = {
        "wall_s": round(wall, 1),
        "showers_per_s": round(n / wall, 1),
        "peak_rss_mb": round(rss),
    }
    print(
        f"C generate: {wall:.1f} s, {n / wall:.0f} showers/s end to end, "
        f"peak RSS {rss:.0f} MB; load {loadavg()}",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=Path("/work/data/int8_artifact"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-sample", type=int, default=2000, help="showers per run in part A")
    ap.add_argument("--n-generate", type=int, default=3000, help="showers per run in part B")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument(
        "--n-cli", type=int, default=20000, help="showers per command in part C (0: skip)"
    )
    ap.add_argument("--n-geant4", type=int, default=12, help="showers per run in part D")
    ap.add_argument("--parts", default="abcde")
    ap.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="wait until the 1-min load average is below this (0: no wait)",
    )
    ap.add_argument("--quiet-timeout", type=float, default=900.0)
    ap.add_argument("--workdir", type=Path, default=REPO / "out" / "bench_generate")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "generate.json")
    ap.add_argument(
        "--merge", action="store_true", help="update the parts run now in an existing --out file"
    )
    args = ap.parse_args()
    if not args.model.exists():
        sys.exit(
            f"{args.model}: model not found "
            "(make one: caloquant quantize --model 3dgan.pt --precision int8 -o DIR)"
        )
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    if args.quiet_load > 0:
        print(
            f"waiting for load < {args.quiet_load}: "
            f"{wait_for_quiet(args.quiet_load, args.quiet_timeout)}",
            flush=True,
        )
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "generate",
        "model": str(args.model),
        "machine": machine_info(),
        "loadavg_start": loadavg(),
        "command": " ".join(sys.argv),
    }
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        result = old | {"merged_command": " ".join(sys.argv), "merged_loadavg_start": loadavg()}
    if is_artifact(args.model):
        m = json.loads((args.model / "manifest.json").read_text())
        result["model_precision"] = f"{m['backend']} {m['precision']} ({m['recipe']} recipe)"
    if "a" in args.parts:
        result["sample_loop"] = part_a(args.model, args.n_sample, args.rounds, args.workdir)
    if "b" in args.parts:
        lz4 = (
            result.get("sample_loop", {})
            .get("showers_per_s", {})
            .get("thread_lz4", {})
            .get("median", float("nan"))
        )
        result["generate"] = part_b(
            args.model, args.n_generate, args.shard_size, args.rounds, args.workdir, lz4
        )
    if "c" in args.parts and args.n_cli > 0:
        result["end_to_end"] = part_c(args.model, args.n_cli, args.workdir)
    if "d" in args.parts and args.n_geant4 > 0:
        if importlib.util.find_spec("caloquant.sim") is None:
            result["geant4"] = {
                "measured": False,
                "reason": "caloquant.sim (the Geant4 engine) is not installed",
            }
        else:
            result["geant4"] = part_d(args.n_geant4, 2, args.rounds, args.workdir)
    if "e" in args.parts:
        result["cpu_cost"] = part_e(args.model, args.n_sample, args.workdir)
    result["loadavg_end"] = loadavg()
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
