"""Inference benchmarks of the CERN 3DGAN and the paper's Conv2D generator, every backend and
precision, with `caloquant bench`; regenerates `benchmarks/results/bench_*.json`.

    .venv/bin/python benchmarks/bench_models.py [--shared ../shared] [--duration 2]

1. Models: the real CERN 3DGAN (imported from ``SHARED/3dgan/params_generator_epoch_049.hdf5``),
   its physics-tuned int8 artifact (``caloquant quantize --precision int8``, made once, ~6 min)
   and the Conv2D generator of Rehm et al. (width 1, 2.05 M parameters, seeded random weights:
   speed does not depend on training).
2. Precision sweep, one `caloquant bench` run per architecture: PyTorch fp32 and bf16 (autocast),
   OpenVINO fp32, bf16 and int8 (NNCF defaults, i.e. `quantize --recipe naive`), ONNX Runtime fp32
   and int8 (static QDQ), and for the 3DGAN the tuned artifact; threads 1,2 x streams 1,2 x
   batch 1,32 -> ``bench_3dgan.json``, ``bench_conv2d.json``.
3. The default grid of `caloquant bench` (threads 1,2 x streams 1,2 x batch 1,8,32,128) run twice
   on five models -> ``bench_default_run1.json``, ``bench_default_run2.json`` and
   ``bench_default_agreement.json`` (wall time of each run, per-point relative differences of
   showers/s and of the within-run speed ratio to PyTorch fp32, host probe of both runs).

Plots go to ``--workdir``/plots_*. About 25 minutes on 2 cores (plus the tuning, once). Each run
waits until other
processes use less than 10 % of the CPUs; every grid point records the other load it saw and
is re-measured once when it exceeded 25 %.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
VARIANTS = [
    "",
    "@torch:bf16",
    "@openvino:fp32",
    "@openvino:bf16",
    "@openvino:int8",
    "@onnxruntime:fp32",
    "@onnxruntime:int8",
]


def caloquant(*args: str) -> None:
    if args[0] == "bench":  # timings: start on a quiet machine (other processes distort them)
        from caloquant.bench.machine import wait_for_quiet

        t0 = time.perf_counter()
        pct = wait_for_quiet(max_other_pct=10.0, timeout_s=900.0)
        print(f"other load {pct} % (waited {time.perf_counter() - t0:.0f} s)", flush=True)
    exe = Path(sys.executable).with_name("caloquant")
    cmd = [str(exe), *map(str, args)]
    print("$ caloquant " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def prepare(shared: Path, work: Path) -> tuple[Path, Path, Path]:
    import torch

    from caloquant.models import Checkpoint, Conv2DGenerator, save_checkpoint, spec_conv2d

    work.mkdir(parents=True, exist_ok=True)
    gan = work / "3dgan.pt"
    if not gan.exists():
        keras = shared / "3dgan" / "params_generator_epoch_049.hdf5"
        if not keras.exists():
            sys.exit(f"CERN 3DGAN weights not found: {keras} (use --shared)")
        caloquant("import-keras", keras, "-o", gan)
    c2d = work / "conv2d.pt"
    if not c2d.exists():
        torch.manual_seed(0)
        save_checkpoint(
            c2d,
            Checkpoint(
                spec_conv2d(1.0),
                Conv2DGenerator(1.0).eval(),
                provenance={"note": "seeded random weights (torch.manual_seed(0)); for speed only"},
            ),
        )
    tuned = work / "3dgan_int8_physics"
    if not (tuned / "manifest.json").exists():
        caloquant("quantize", "--model", gan, "--precision", "int8", "-o", tuned)
    return gan, tuned, c2d


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--workdir", type=Path, default=REPO / "out" / "bench_models")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--duration", type=float, default=2.0, help="timed seconds per grid point")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-default", action="store_true")
    args = ap.parse_args()
    gan, tuned, c2d = prepare(args.shared, args.workdir)
    args.out.mkdir(parents=True, exist_ok=True)
    dur = str(args.duration)

    if not args.skip_sweep:
        for name, ckpt in (("3dgan", gan), ("conv2d", c2d)):
            models = [x for v in VARIANTS for x in ("--model", f"{ckpt}{v}")]
            if name == "3dgan":
                models += ["--model", str(tuned)]
            caloquant(
                "bench",
                *models,
                "--threads",
                "1,2",
                "--streams",
                "1,2",
                "--batch",
                "1,32",
                "--duration",
                dur,
                "--json",
                args.out / f"bench_{name}.json",
                "--plots",
                args.workdir / f"plots_{name}",
            )

    if not args.skip_default:
        from caloquant.bench import compare_runs
        from caloquant.fileio import write_json

        models = [
            x
            for m in (gan, f"{gan}@openvino:fp32", f"{gan}@openvino:int8", tuned, c2d)
            for x in ("--model", str(m))
        ]
        walls = []
        for i in (1, 2):
            t0 = time.perf_counter()
            caloquant(
                "bench",
                *models,
                "--duration",
                dur,
                "--json",
                args.out / f"bench_default_run{i}.json",
                "--plots",
                args.workdir / f"plots_default_run{i}",
            )
            walls.append(round(time.perf_counter() - t0, 1))
        runs = [json.loads((args.out / f"bench_default_run{i}.json").read_text()) for i in (1, 2)]
        cmp = compare_runs(*runs)
        summary = {
            "what": "the default grid of `caloquant bench` run twice on the same models, "
            "back to back",
            "command": "caloquant bench "
            + " ".join(f"--model {m}" for m in models[1::2])
            + f" --duration {dur}",
            "process_wall_s": walls,
            "grid_wall_s": [r["wall_s"] for r in runs],
            "budget_s": 600,
            "within_budget": all(w <= 600 for w in walls),
            "agreement": cmp,
            "all_points_within_10pct": cmp["max_rel_diff"] <= 0.10,
            "median_within_10pct": cmp["median_rel_diff"] <= 0.10,
        }
        write_json(args.out / "bench_default_agreement.json", summary)
        rat = cmp["ratio_to_reference"]
        print(
            f"default grid: {walls[0]:.0f} s and {walls[1]:.0f} s per run; showers/s agree within "
            f"{100 * cmp['max_rel_diff']:.1f} % (median {100 * cmp['median_rel_diff']:.1f} %), "
            f"{cmp['within_10pct']}/{cmp['points']} points within 10 %; "
            f"speed ratios to {rat['reference_model']} "
            f"within {100 * rat['max_rel_diff']:.1f} % "
            f"(median {100 * rat['median_rel_diff']:.1f} %), "
            f"{rat['within_10pct']}/{rat['points']} within 10 %; host probe {cmp.get('host_probe')}"
        )


if __name__ == "__main__":
    main()
