"""Training speed of `caloquant train`: real showers per second of the authors' update rule.

What is timed: `Trainer.step` on one global batch (the discriminator update: on the real
batch and on a generated batch, or for the Conv2D recipe on both in one mixed batch; then two
generator updates; forward, backward and optimizer), for the Conv2D
model at widths 0.5 and 1.0 (plus the Conv3D 3DGAN), fp32 and bf16 autocast, with and without
channels-last, in 1 process (1 thread; the Conv2D also with 2 threads) and in 2 processes
under torchrun (1 thread each, gloo all-reduce), the latter interleaved with the same
configuration in one process and one thread, for the data-parallel speed-up. Showers/s = global
batch / median step time over all timed steps. Separately, the streaming HDF5 reader's showers/s
(gzip file, shuffled windows), to show that loading is not the bottleneck.

Host noise: every configuration is measured in several short windows, visited round after
round (one job per process count), so slow phases of the shared host land on every
configuration; the spread of the window medians is reported, and a fixed one-thread matmul
(host probe) is timed before every window to show how fast the host itself was. Compare
configurations within one process count; across process counts the two jobs ran at different
times.

    .venv/bin/python benchmarks/bench_train.py [--window 12] [--rounds 2] [--batch 16]
        [--suite full|channels-last] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

# one process: every model, precision and layout at 1 thread, and the Conv2D at 2 threads
ONE_PROCESS = [
    {"model": m, "width": w, "precision": p, "channels_last": cl, "threads": 1}
    for m, w in (("conv2d", 0.5), ("conv2d", 1.0), ("gan3d", 1.0))
    for p in ("fp32", "bf16")
    for cl in (False, True)
]
ONE_PROCESS += [
    {"model": "conv2d", "width": w, "precision": p, "channels_last": False, "threads": 2}
    for w in (0.5, 1.0)
    for p in ("fp32", "bf16")
]
# two processes x 1 thread (DDP), each next to its one-process, one-thread reference measured
# in the same job ("solo": rank 0 alone, rank 1 idle), so the data-parallel speed-up sees one
# host state
TWO_PROCESSES = [
    {
        "model": "conv2d",
        "width": w,
        "precision": p,
        "channels_last": False,
        "threads": 1,
        "solo": solo,
    }
    for w in (0.5, 1.0)
    for p in ("fp32", "bf16")
    for solo in (False, True)
]
# --suite channels-last: the layout A/B alone, more rounds (it decides the default layout)
CHANNELS_LAST_AB = [
    {"model": "conv2d", "width": w, "precision": p, "channels_last": cl, "threads": 1}
    for w in (1.0, 0.5)
    for p in ("fp32", "bf16")
    for cl in (False, True)
]


def fake_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse positive cells (about 10 % occupied) and energies; the values do not change the
    cost."""
    rng = np.random.default_rng(seed)
    s = rng.exponential(1.0, (n, 25, 25, 25)) * (rng.random((n, 25, 25, 25)) < 0.1)
    return s.astype(np.float32), rng.uniform(100, 400, n)


def host_probe(seconds: float = 0.3) -> float:
    """GFLOP/s of a fixed one-thread fp32 matmul: how fast the shared host is right now."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        n += 1
    torch.set_num_threads(before)
    return 2 * 256**3 * n / (time.perf_counter() - t0) / 1e9


def worker(configs: list[dict], window: float, rounds: int, batch: int) -> None:
    """Time every configuration (one process, or each rank under torchrun); rank 0 prints JSON."""
    from caloquant.train import Dist, TrainConfig, Trainer, ddp

    d = ddp.init()
    full = fake_batch(batch, 0)
    mine = (
        full[0][d.rank :: d.world],
        full[1][d.rank :: d.world],
    )  # this rank's share of the batch
    trainers: list[Trainer | None] = []
    for c in configs:
        torch.set_num_threads(c["threads"])
        model = {k: v for k, v in c.items() if k not in ("threads", "solo")}
        cfg = TrainConfig(
            data=["unused.h5"], out="unused", batch=batch, threads=c["threads"], **model
        )
        tr = None if c.get("solo") and not d.main else Trainer(cfg, Dist() if c.get("solo") else d)
        if tr is not None:
            x, e = full if c.get("solo") else mine
            tr.step(x * tr.recipe.cell_scale, e)  # warm-up: oneDNN primitive creation, allocator
        trainers.append(tr)
    times: list[list[list[float]]] = [[] for _ in configs]
    probes: list[float] = []
    for _ in range(rounds):
        for i, (c, tr) in enumerate(zip(configs, trainers)):
            ddp.barrier(d)
            if d.main:
                probes.append(host_probe())
            torch.set_num_threads(c["threads"])
            ddp.barrier(d)
            if tr is None:  # an idle rank during a solo measurement
                continue
            x, e = full if c.get("solo") else mine
            x = x * tr.recipe.cell_scale
            window_times: list[float] = []
            end = time.perf_counter() + window
            go = True
            while go:
                t0 = time.perf_counter()
                tr.step(x, e)
                window_times.append(time.perf_counter() - t0)
                go = time.perf_counter() < end
                if not c.get("solo"):  # rank 0's clock decides (all ranks must take the same steps)
                    go = bool(ddp.broadcast(go, d))
            times[i].append(window_times)
    if d.main:
        out = []
        for c, ws in zip(configs, times):
            flat = [t for w in ws for t in w]
            med = float(np.median(flat))
            procs = 1 if c.get("solo") else d.world
            out.append(
                {
                    **{k: v for k, v in c.items() if k not in ("threads", "solo")},
                    "processes": procs,
                    "threads_per_process": c["threads"],
                    "global_batch": batch,
                    "measured_in_job": d.world,
                    "showers_per_s": batch / med,
                    "step_s_median": med,
                    "steps": len(flat),
                    "window_showers_per_s": [batch / float(np.median(w)) for w in ws],
                }
            )
        print("RESULT " + json.dumps({"results": out, "host_probe_gflops": probes}), flush=True)
    ddp.shutdown(d)


def run_job(procs: int, configs: list[dict], args: argparse.Namespace) -> dict:
    spec = [json.dumps(configs), str(args.window), str(args.rounds), str(args.batch)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if procs == 1:
        cmd = [sys.executable, __file__, "--worker", *spec]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(procs),
            __file__,
            "--worker",
            *spec,
        ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"benchmark job failed ({procs} processes):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def stream_speed(n: int = 1024, seconds: float = 10.0) -> dict:
    """Streaming reader throughput: gzip HDF5, shuffled windows, the Conv2D recipe's scaling."""
    from caloquant.data import write_showers
    from caloquant.train.data import ShowerStream, split_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.h5"
        s, e = fake_batch(n, 0)
        write_showers(path, s, e)
        parts, _ = split_rows([str(path)], [n], None)
        stream = ShowerStream(
            parts, batch=64, seed=0, shuffle_buffer=512, cell_scale=100.0, cell_threshold=1e-6
        )
        done, t0, epoch = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            for sb, _ in stream.epoch(epoch):
                done += len(sb)
            epoch += 1
        return {
            "showers_per_s": done / (time.perf_counter() - t0),
            "file_showers": n,
            "batch": 64,
            "shuffle_buffer": 512,
        }


def machine() -> dict:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--window", type=float, default=12.0, help="seconds per configuration and round"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--suite", choices=("full", "channels-last"), default="full")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/train.json (train_channels_last.json)",
    )
    args = ap.parse_args()
    if args.out is None:
        args.out = (
            REPO
            / "benchmarks"
            / "results"
            / ("train.json" if args.suite == "full" else "train_channels_last.json")
        )
    t0 = time.time()
    plan = (
        ((1, ONE_PROCESS), (2, TWO_PROCESSES)) if args.suite == "full" else ((1, CHANNELS_LAST_AB),)
    )
    jobs = {procs: run_job(procs, configs, args) for procs, configs in plan}
    results = [r for j in jobs.values() for r in j["results"]]
    probes = {
        f"{procs}_process_job": {
            "gflops_min": min(j["host_probe_gflops"]),
            "gflops_median": float(np.median(j["host_probe_gflops"])),
            "gflops_max": max(j["host_probe_gflops"]),
        }
        for procs, j in jobs.items()
    }
    report = {
        "machine": machine(),
        "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
        "window_s": args.window,
        "rounds": args.rounds,
        "global_batch": args.batch,
        "results": results,
        "host_probe": probes,
        "data_stream": stream_speed() if args.suite == "full" else None,
        "wall_s": time.time() - t0,
        "notes": "showers/s = real showers per second "
        "(each step also generates 3 batches of showers); "
        "shared 2-core host: absolute numbers move between runs, compare within one process count",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        spread = r["window_showers_per_s"]
        print(
            f"{r['model']:6s} w={r['width']:<4} {r['precision']} "
            f"cl={int(r['channels_last'])} procs={r['processes']} "
            f"threads={r['threads_per_process']} (job {r['measured_in_job']}): "
            f"{r['showers_per_s']:6.2f} showers/s "
            f"(windows {min(spread):.2f}-{max(spread):.2f}, {r['steps']} steps)"
        )
    print(
        "host probe (1-thread matmul GFLOP/s, min/median/max per window): "
        + "; ".join(
            f"{k} {v['gflops_min']:.0f}/{v['gflops_median']:.0f}/{v['gflops_max']:.0f}"
            for k, v in probes.items()
        )
    )
    if report["data_stream"] is not None:
        print(f"data stream: {report['data_stream']['showers_per_s']:.0f} showers/s")
    print(f"wrote {args.out} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
