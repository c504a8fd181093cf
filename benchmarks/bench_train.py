"""Training speed of `caloquant train`: real showers per second of the authors' update rule.

What is timed: `Trainer.step` on one global batch (discriminator on the real batch and on a
generated batch, two generator updates; forward, backward and optimizer), for the Conv2D
model at widths 0.5 and 1.0 (plus the Conv3D 3DGAN), fp32 and bf16 autocast, with and without
channels-last, in 1 process (2 threads, and 1 thread as the reference for the data-parallel
speed-up) and in 2 processes under torchrun (1 thread each, gloo all-reduce). Showers/s = global batch / median step time over all timed steps. Separately,
the streaming HDF5 reader's showers/s (gzip file, shuffled windows), to show that loading is
not the bottleneck.

Host noise: every configuration is measured in several short windows, visited round after
round (one job per process count), so slow phases of the shared host land on every
configuration; the spread of the window medians is reported, and a fixed one-thread matmul
(host probe) is timed before every window to show how fast the host itself was. Compare configurations within
one process count; across process counts the two jobs ran at different times.

    .venv/bin/python benchmarks/bench_train.py [--window 12] [--rounds 2] [--batch 16]
        [--out benchmarks/results/train.json]
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
CORES = 2  # the reference machine; threads per process = CORES / processes

ONE_PROCESS = [{"model": m, "width": w, "precision": p, "channels_last": cl}
               for m, w in (("conv2d", 0.5), ("conv2d", 1.0), ("gan3d", 1.0))
               for p in ("fp32", "bf16") for cl in (False, True)]
# one process with one thread: the reference for the data-parallel speed-up of 2 processes x 1 thread
ONE_PROCESS += [{"model": "conv2d", "width": w, "precision": p, "channels_last": False, "threads": 1}
                for w in (0.5, 1.0) for p in ("fp32", "bf16")]
TWO_PROCESSES = [{"model": "conv2d", "width": w, "precision": p, "channels_last": False}
                 for w in (0.5, 1.0) for p in ("fp32", "bf16")]


def fake_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse positive cells (about 10 % occupied) and energies; the values do not change the cost."""
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
    from caloquant.train import TrainConfig, Trainer, ddp

    d = ddp.init()
    threads = [c.get("threads", max(1, CORES // d.world)) for c in configs]
    share = batch // d.world
    s, e = fake_batch(share, d.rank)
    trainers = []
    for c, th in zip(configs, threads):
        torch.set_num_threads(th)
        model = {k: v for k, v in c.items() if k != "threads"}
        tr = Trainer(TrainConfig(data=["unused.h5"], out="unused", batch=batch, threads=th, **model), d)
        tr.step(s * tr.recipe.cell_scale, e)  # warm-up: oneDNN primitive creation, allocator
        trainers.append(tr)
    times: list[list[list[float]]] = [[] for _ in configs]
    probes: list[float] = []
    for _ in range(rounds):
        for i, tr in enumerate(trainers):
            if d.main:
                probes.append(host_probe())
            torch.set_num_threads(threads[i])
            ddp.barrier(d)
            window_times: list[float] = []
            end = time.perf_counter() + window
            go = True
            while go:
                t0 = time.perf_counter()
                tr.step(s * tr.recipe.cell_scale, e)
                window_times.append(time.perf_counter() - t0)
                # rank 0's clock decides for all ranks (they must take the same number of steps)
                go = bool(ddp.broadcast(time.perf_counter() < end, d))
            times[i].append(window_times)
    if d.main:
        out = []
        for c, th, ws in zip(configs, threads, times):
            flat = [t for w in ws for t in w]
            med = float(np.median(flat))
            out.append({**c, "processes": d.world, "threads_per_process": th, "global_batch": batch,
                        "showers_per_s": batch / med, "step_s_median": med, "steps": len(flat),
                        "window_showers_per_s": [batch / float(np.median(w)) for w in ws]})
        print("RESULT " + json.dumps({"results": out, "host_probe_gflops": probes}), flush=True)
    ddp.shutdown(d)


def run_job(procs: int, configs: list[dict], args: argparse.Namespace) -> dict:
    spec = [json.dumps(configs), str(args.window), str(args.rounds), str(args.batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(CORES // procs), "PYTHONPATH": str(REPO / "src")}
    if procs == 1:
        cmd = [sys.executable, __file__, "--worker", *spec]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), __file__, "--worker", *spec]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"benchmark job failed ({procs} processes):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def stream_speed(n: int = 1024, seconds: float = 10.0) -> dict:
    """Streaming reader throughput: gzip HDF5, shuffled windows, the Conv2D recipe's scaling."""
    from caloquant.data import write_showers
    from caloquant.train.data import ShowerStream, split_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.h5"
        s, e = fake_batch(n, 0)
        write_showers(path, s, e)
        parts, _ = split_rows([str(path)], [n], None)
        stream = ShowerStream(parts, batch=64, seed=0, shuffle_buffer=512, cell_scale=100.0, cell_threshold=1e-6)
        done, t0, epoch = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            for sb, _ in stream.epoch(epoch):
                done += len(sb)
            epoch += 1
        return {"showers_per_s": done / (time.perf_counter() - t0), "file_showers": n, "batch": 64, "shuffle_buffer": 512}


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    flags = Path("/proc/cpuinfo").read_text()
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=12.0, help="seconds per configuration and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train.json")
    args = ap.parse_args()
    t0 = time.time()
    jobs = {procs: run_job(procs, configs, args) for procs, configs in ((1, ONE_PROCESS), (2, TWO_PROCESSES))}
    results = jobs[1]["results"] + jobs[2]["results"]
    probes = {f"{procs}_process_job": {"gflops_min": min(j["host_probe_gflops"]), "gflops_median": float(np.median(j["host_probe_gflops"])),
                                       "gflops_max": max(j["host_probe_gflops"])} for procs, j in jobs.items()}
    report = {"machine": machine(), "command": "python benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
              "window_s": args.window, "rounds": args.rounds, "global_batch": args.batch, "results": results,
              "host_probe": probes,
              "data_stream": stream_speed(), "wall_s": time.time() - t0,
              "notes": "showers/s = real showers per second (each step also generates 3 batches of showers); "
                       "shared 2-core host: absolute numbers move between runs, compare within one process count"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        spread = r["window_showers_per_s"]
        print(f"{r['model']:6s} w={r['width']:<4} {r['precision']} cl={int(r['channels_last'])} procs={r['processes']} "
              f"threads={r['threads_per_process']}: "
              f"{r['showers_per_s']:6.2f} showers/s (windows {min(spread):.2f}-{max(spread):.2f}, {r['steps']} steps)")
    print(f"host probe (1-thread matmul GFLOP/s, min/median/max per window): "
          + "; ".join(f"{k} {v['gflops_min']:.0f}/{v['gflops_median']:.0f}/{v['gflops_max']:.0f}" for k, v in probes.items()))
    print(f"data stream: {report['data_stream']['showers_per_s']:.0f} showers/s; wrote {args.out} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
