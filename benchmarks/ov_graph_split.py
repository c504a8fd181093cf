"""Per-node float precision on OpenVINO by splitting the graph (issue 12, item 4).

OpenVINO's CPU plugin keeps a node in f32 under a bf16 hint when the node carries the C++
runtime attribute ``disable_fp16_compression``; from Python that attribute cannot be made
(an ``rt_info`` entry of that name is a plain string, ignored by the plugin, and not written to
or read from IR: measured here, see docs/findings.md 11). What remains is to cut the model
into consecutive parts and compile each with its own ``INFERENCE_PRECISION_HINT``, handing the
tensor at the cut from one compiled model to the next.

The split is the OpenVINO backend's (``float_model`` / ``int8_model`` with ``f32_from``, tuner
step 6b). This script measures, on the CERN 3DGAN's rewritten graph (the physics recipe's), for
each configuration: the physics against fp32 (the tuner's paired evaluation set and its pass
decision) and the speed (batch 32, 2 threads, interleaved rounds, median), including the
hand-over cost (the fp32 model cut in two, both parts f32, against the uncut fp32 model).

    .venv/bin/python benchmarks/ov_graph_split.py [--physics-only] [--threads-physics 1] \
        [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "ov_graph_split.json"


def executed(model: Any) -> list[list[str]]:
    """What each compiled part runs, read off its runtime graph: 'conv2.conv:bf16', ..."""
    return [
        [f"{layer}:{precision}" for layer, precision in part] for part in model.runtime_precisions()
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--physics-only", action="store_true", help="no timing (the host is shared)")
    ap.add_argument("--threads-physics", type=int, default=1)
    ap.add_argument("--window", type=float, default=3.0, help="seconds per timing window")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    import caloquant as cq
    from caloquant.fileio import atomic_path
    from caloquant.precision import QuantizeConfig, calibration_latents, make_backend
    from caloquant.precision.backends.openvino import OpenVINOModel, split_at
    from caloquant.precision.backends.torch_backend import TorchModel, weight_layers
    from caloquant.precision.evaluation import EvalSet, badness, passes, run_batched
    from caloquant.precision.rewrite import fuse_upsample_conv

    torch.set_num_threads(args.threads_physics)
    ck = cq.load().checkpoint
    spec, gen = ck.spec, ck.generator.eval()
    cfg = QuantizeConfig()
    fp32_torch = TorchModel(
        gen, "fp32", args.threads_physics, {n: "fp32" for n in weight_layers(gen)}
    )
    ev = EvalSet.build(spec, fp32_torch, cfg.eval_n_per_point, cfg.seed, cfg.eval_energies_gev)
    module, _ = fuse_upsample_conv(gen)
    be = make_backend("openvino", module, spec.latent_dim, args.threads_physics)
    calib = calibration_latents(spec, cfg.calib_n, cfg.seed)
    units = be.units(calib)
    unit = {be.unit_label(u): u for u in units}
    # the physics recipe's int8 units
    int8_head = [u for u in units if be.unit_label(u) in ("dense", "view")]
    threads = args.threads_physics

    # every configuration is built by the backend, as the tuner builds it (step 6b); one backend
    # per thread count
    backends = {t: make_backend("openvino", module, spec.latent_dim, t) for t in {threads, 2}}
    configs: dict[str, Any] = {
        "f32": lambda t: backends[t].float_model("fp32"),
        "bf16": lambda t: backends[t].float_model("bf16"),
        "f32 | f32 at conv4 (hand-over cost)": lambda t: OpenVINOModel(
            list(zip(split_at(be.fp_model, unit["conv4"]), ("f32", "f32"))), t, {}
        ),
    }
    for cut in ("conv4", "conv3.conv"):
        configs[f"bf16 | f32 from {cut}"] = lambda t, c=cut: backends[t].float_model(
            "bf16", f32_from=unit[c]
        )
        configs[f"int8(dense,conv1)+bf16 | f32 from {cut}"] = lambda t, c=cut: backends[
            t
        ].int8_model(calib, int8_head, cfg.calibration, "bf16", f32_from=unit[c])
    configs["int8(dense,conv1)+f32"] = lambda t: backends[t].int8_model(
        calib, int8_head, cfg.calibration, "fp32"
    )
    configs["int8(dense,conv1)+bf16"] = lambda t: backends[t].int8_model(
        calib, int8_head, cfg.calibration, "bf16"
    )

    tol = cfg.tolerance
    rows: dict[str, Any] = {}
    for name, make in configs.items():
        model = make(threads)
        t0 = time.perf_counter()
        score = ev.score(run_batched(model, ev.latents, 100))
        rows[name] = {
            "hints": [h for _, h in model.parts],
            "executed": executed(model),
            "passes": passes(score, tol),
            "badness": badness(score, tol),
            "worst_ecal_rel": score["worst_ecal_rel"],
            "worst_moment_shift": score["worst_moment_shift"],
            "physics_s": round(time.perf_counter() - t0, 1),
        }
        print(
            f"{name:45s} {'PASS' if rows[name]['passes'] else 'fail'} "
            f"Ecal {score['worst_ecal_rel']:.4f} moments {score['worst_moment_shift']:.4f} "
            f"badness {rows[name]['badness']:.2f}",
            flush=True,
        )

    if not args.physics_only:
        torch.set_num_threads(2)
        z = calibration_latents(spec, 32, 7)
        torch_fn = TorchModel(gen, "fp32", 2, {n: "fp32" for n in weight_layers(gen)})
        runners = {"torch fp32 (original graph)": torch_fn} | {
            n: make(2) for n, make in configs.items()
        }
        times: dict[str, list[float]] = {n: [] for n in runners}
        for n, r in runners.items():  # warm-up
            r(z)
        # interleaved rounds: slow phases of the host land on every configuration
        for _ in range(args.rounds):
            for n, r in runners.items():
                t_end, k, t0 = time.perf_counter() + args.window, 0, time.perf_counter()
                while time.perf_counter() < t_end:
                    r(z)
                    k += 1
                times[n].append((time.perf_counter() - t0) / k)
        med = {n: float(np.median(v)) for n, v in times.items()}
        for n in configs:
            rows[n]["speedup_vs_torch_fp32"] = med["torch fp32 (original graph)"] / med[n]
            rows[n]["speedup_vs_openvino_fp32_same_graph"] = med["f32"] / med[n]
            rows[n]["showers_per_s"] = 32 / med[n]
            print(
                f"{n:45s} {rows[n]['speedup_vs_torch_fp32']:.2f}x torch fp32, "
                f"{rows[n]['speedup_vs_openvino_fp32_same_graph']:.2f}x OV fp32",
                flush=True,
            )

    import openvino as ov

    res = {
        "command": " ".join(["python", *sys.argv]),
        "machine": platform.processor() or platform.machine(),
        "openvino": ov.__version__,
        "batch": 32,
        "tolerance": tol.to_dict(),
        "physics_only": args.physics_only,
        "rows": rows,
    }
    with atomic_path(args.out, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
