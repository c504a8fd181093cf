"""The paper's Conv2D study on the model trained here: quantize the built-in ``conv2d-g4`` with
caloquant's physics recipe, then report speed-up and physics as Rehm et al. did for their Conv2D
generator (int8 1.73-3.0x over fp32). Issue 11's last step.

    .venv/bin/python benchmarks/quantize_conv2d_g4.py --ref heldout.h5
        [--workdir out/conv2d_g4_int8] [--duration 2]

1. ``caloquant quantize --model conv2d-g4 --precision int8`` (OpenVINO, physics recipe, default
   tolerance; every unit's precision and every trial in the artifact's manifest); its wall time.
2. ``caloquant bench`` of PyTorch fp32, OpenVINO fp32, OpenVINO int8 with NNCF defaults (the
   paper's "naive" int8) and the tuned artifact: threads 1,2 x streams 1,2 x batch 1,32, in
   interleaved rounds (every speed is a ratio inside this one run) ->
   ``benchmarks/results/bench_conv2d_g4.json``.
3. Physics of fp32 and of the artifact against a held-out Geant4 set (``validate_trained.py``'s
   summary: sampling fraction per 50 GeV bin, moments, projection MSE, classifier AUC) and of the
   artifact against fp32 on paired latents (the tuner's numbers, from the manifest).
Summary -> ``benchmarks/results/quantize_conv2d_g4.json``; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = "conv2d-g4"


def caloquant(*args: object) -> float:
    """Runs one caloquant command; returns its wall time. Timings start on a quiet machine."""
    if args[0] == "bench":
        from caloquant.bench.machine import wait_for_quiet

        pct = wait_for_quiet(max_other_pct=10.0, timeout_s=900.0)
        print(f"other load {pct} %", flush=True)
    cmd = [str(Path(sys.executable).with_name("caloquant")), *map(str, args)]
    print("$ caloquant " + " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return round(time.perf_counter() - t0, 1)


def bench_ratios(
    bench: dict[str, Any], labels: dict[tuple[str, str, str], str]
) -> list[dict[str, Any]]:
    """Showers/s of every variant per grid point, and its ratio to PyTorch fp32 and to
    OpenVINO fp32 at the same point (the same interleaved rounds)."""
    rows: dict[tuple[int, int, int], dict[str, float]] = {}
    for r in bench["results"]:
        key = (int(r["threads"]), int(r["streams"]), int(r["batch"]))
        rows.setdefault(key, {})[labels[(r["model"], r["backend"], r["precision"])]] = float(
            r["showers_per_s"]
        )
    out = []
    for (t, s, b), v in sorted(rows.items()):
        row: dict[str, Any] = {"threads": t, "streams": s, "batch": b, "showers_per_s": v}
        for base in ("torch fp32", "openvino fp32"):
            if base in v:
                row[f"ratio_to_{base.replace(' ', '_')}"] = {k: x / v[base] for k, x in v.items()}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ref", type=Path, required=True, help="held-out Geant4 showers (HDF5)")
    ap.add_argument("--workdir", type=Path, default=REPO / "out" / "conv2d_g4_int8")
    ap.add_argument(
        "--duration", type=float, default=2.0, help="timed seconds per bench grid point"
    )
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    if not args.ref.exists():
        sys.exit(f"error: held-out Geant4 file not found: {args.ref}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    art = args.workdir / "artifact"

    summary: dict[str, Any] = {"model": MODEL}
    if not (art / "manifest.json").exists():
        summary["quantize_wall_s"] = caloquant(
            "quantize", "--model", MODEL, "--precision", "int8", "-o", art
        )
    man = json.loads((art / "manifest.json").read_text())
    prec = man["layer_precisions"]
    summary.update(
        {
            "artifact": str(art),
            "meets_tolerance": man["meets_tolerance"],
            "tuning_seconds": man["tuning_seconds"],
            "units": len(prec),
            "int8_units": sorted(k for k, p in prec.items() if p == "int8"),
            "float_units": {k: p for k, p in prec.items() if p != "int8"},
            "float_precision": man.get("float_precision"),
            "size_ratio_vs_fp32": man["size_bytes"] / man["fp32_param_bytes"]
            if man.get("fp32_param_bytes")
            else None,
            "manifest_speed": {
                k: man["speed"][k]
                for k in (
                    "showers_per_s",
                    "speedup_vs_torch_fp32",
                    "speedup_vs_openvino_fp32_same_graph",
                    "batch",
                    "threads",
                )
            },
            "physics_vs_fp32": man["physics"],
        }
    )

    if not args.skip_bench:
        variants = {
            MODEL: "torch fp32",
            f"{MODEL}@openvino:fp32": "openvino fp32",
            f"{MODEL}@openvino:int8": "openvino int8 (NNCF defaults)",
            str(art): "openvino int8 (physics recipe)",
        }
        out = RESULTS / "bench_conv2d_g4.json"
        caloquant(
            "bench",
            *[x for m in variants for x in ("--model", m)],
            "--threads",
            "1,2",
            "--streams",
            "1,2",
            "--batch",
            "1,32",
            "--duration",
            args.duration,
            "--json",
            out,
            "--plots",
            args.workdir / "plots",
        )
        bench = json.loads(out.read_text())
        # the bench lists its models in the order given; a result names (model, backend, precision)
        labels = {
            (m["model"], m["backend"], m["precision"]): lab
            for m, lab in zip(bench["models"], variants.values(), strict=True)
        }
        summary["bench"] = bench_ratios(bench, labels)

    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "validate_trained.py"),
            "--ref",
            str(args.ref),
            "--models",
            MODEL,
            str(art),
            "--out",
            "validate_conv2d_g4_int8",
        ],
        check=True,
    )
    vt = json.loads((RESULTS / "validate_conv2d_g4_int8.json").read_text())
    summary["vs_geant4"] = {
        "reference": vt["reference"],
        "fp32": vt["models"][MODEL],
        "int8": vt["models"][str(art)],
    }

    from caloquant.fileio import write_json

    write_json(RESULTS / "quantize_conv2d_g4.json", summary)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "meets_tolerance",
                    "tuning_seconds",
                    "int8_units",
                    "float_units",
                    "size_ratio_vs_fp32",
                    "manifest_speed",
                )
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
