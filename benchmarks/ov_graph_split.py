"""Per-node float precision on OpenVINO by splitting the graph (issue 12, item 4).

OpenVINO's CPU plugin keeps a node in f32 under a bf16 hint when the node carries the C++
runtime attribute ``disable_fp16_compression``; from Python that attribute cannot be made
(an ``rt_info`` entry of that name is a plain string, ignored by the plugin, and not written to
or read from IR: measured here, see docs/findings.md 11). What remains is to cut the model
into consecutive parts and compile each with its own ``INFERENCE_PRECISION_HINT``, handing the
tensor at the cut from one compiled model to the next.

This script measures, on the CERN 3DGAN's rewritten graph (the physics recipe's), for each
configuration: the physics against fp32 (the tuner's paired evaluation set and its pass
decision) and the speed (batch 32, 2 threads, interleaved rounds, median), including the
hand-over cost (the fp32 model cut in two, both parts f32, against the uncut fp32 model).

    .venv/bin/python benchmarks/ov_graph_split.py [--physics-only] [--threads-physics 1] [--out FILE]
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


def split(model: Any, cut_before: str) -> tuple[Any, Any]:
    """Two models: the part up to the input of the first op whose name starts with
    ``cut_before``, and the rest from a new Parameter at that input. Hand-written: OpenVINO has
    no sub-graph extraction in its Python API."""
    import openvino as ov
    import openvino.opset13 as ops

    def first(m: Any) -> Any:  # the first op of that name that takes an activation (not a weight constant)
        return next(o for o in m.get_ordered_ops() if o.get_friendly_name().startswith(cut_before)
                    and o.get_input_size() > 0 and o.input_value(0).get_node().get_type_name() != "Constant")

    head_model, tail_model = model.clone(), model.clone()
    head = ov.Model([ops.result(first(head_model).input_value(0))], head_model.get_parameters(), "head")
    src = first(tail_model).input_value(0)
    p = ops.parameter(src.get_partial_shape(), src.get_element_type(), "cut")
    for target in list(src.get_target_inputs()):
        target.replace_source_output(p.output(0))
    tail = ov.Model(tail_model.get_results(), [p], "tail")
    return head, tail


class Chain:
    """Consecutive compiled parts; the output tensor of one is the input of the next (no copy)."""

    def __init__(self, parts: list[tuple[Any, str]], threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = [core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": h, "INFERENCE_NUM_THREADS": threads,
                                                       "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
                         for m, h in parts]
        self.requests = [c.create_infer_request() for c in self.compiled]
        self.hints = [h for _, h in parts]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        import openvino as ov

        x: Any = ov.Tensor(np.ascontiguousarray(z, dtype=np.float32))
        for req in self.requests:
            req.set_input_tensor(x)
            req.infer()
            x = req.get_output_tensor()
        return np.array(x.data)

    def executed(self) -> list[list[str]]:
        out = []
        for c in self.compiled:
            rt = c.get_runtime_model()
            out.append([f"{o.get_friendly_name().split('/')[0].replace('__module.', '')}:{o.get_rt_info()['runtimePrecision'].astype(str)}"
                        for o in rt.get_ordered_ops()
                        if o.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")])
        return out


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
    from caloquant.precision.backends.torch_backend import TorchModel, weight_layers
    from caloquant.precision.evaluation import EvalSet, badness, passes, run_batched
    from caloquant.precision.rewrite import fuse_upsample_conv

    torch.set_num_threads(args.threads_physics)
    ck = cq.load().checkpoint
    spec, gen = ck.spec, ck.generator.eval()
    cfg = QuantizeConfig()
    fp32_torch = TorchModel(gen, "fp32", args.threads_physics, {n: "fp32" for n in weight_layers(gen)})
    ev = EvalSet.build(spec, fp32_torch, cfg.eval_n_per_point, cfg.seed, cfg.eval_energies_gev)
    module, _ = fuse_upsample_conv(gen)
    be = make_backend("openvino", module, spec.latent_dim, args.threads_physics)
    calib = calibration_latents(spec, cfg.calib_n, cfg.seed)
    fp = be.fp_model
    units = be.units(calib)
    int8_head = [u for u in units if be.unit_label(u) in ("dense", "view")]  # the physics recipe's int8 units
    q = be.int8_model(calib, int8_head, cfg.calibration, "fp32").model

    configs: dict[str, list[tuple[Any, str]]] = {"f32": [(fp, "f32")], "bf16": [(fp, "bf16")]}
    configs["f32 | f32 at conv4 (hand-over cost)"] = list(zip(split(fp, "__module.conv4/"), ("f32", "f32")))
    for cut in ("conv4", "conv3"):
        configs[f"bf16 | f32 from {cut}"] = list(zip(split(fp, f"__module.{cut}"), ("bf16", "f32")))
        configs[f"int8(dense,conv1)+bf16 | f32 from {cut}"] = list(zip(split(q, f"__module.{cut}"), ("bf16", "f32")))
    configs["int8(dense,conv1)+f32"] = [(q, "f32")]
    configs["int8(dense,conv1)+bf16"] = [(q, "bf16")]

    tol = cfg.tolerance
    rows: dict[str, Any] = {}
    for name, parts in configs.items():
        chain = Chain(parts, args.threads_physics)
        t0 = time.perf_counter()
        score = ev.score(run_batched(chain, ev.latents, 100))
        rows[name] = {"hints": chain.hints, "executed": chain.executed(), "passes": passes(score, tol),
                      "badness": badness(score, tol), "worst_ecal_rel": score["worst_ecal_rel"],
                      "worst_moment_shift": score["worst_moment_shift"], "physics_s": round(time.perf_counter() - t0, 1)}
        print(f"{name:45s} {'PASS' if rows[name]['passes'] else 'fail'} Ecal {score['worst_ecal_rel']:.4f} "
              f"moments {score['worst_moment_shift']:.4f} badness {rows[name]['badness']:.2f}", flush=True)

    if not args.physics_only:
        torch.set_num_threads(2)
        z = calibration_latents(spec, 32, 7)
        torch_fn = TorchModel(gen, "fp32", 2, {n: "fp32" for n in weight_layers(gen)})
        runners = {"torch fp32 (original graph)": torch_fn} | {n: Chain(p, 2) for n, p in configs.items()}
        times: dict[str, list[float]] = {n: [] for n in runners}
        for n, r in runners.items():  # warm-up
            r(z)
        for _ in range(args.rounds):  # interleaved rounds: slow phases of the host land on every configuration
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
            print(f"{n:45s} {rows[n]['speedup_vs_torch_fp32']:.2f}x torch fp32, "
                  f"{rows[n]['speedup_vs_openvino_fp32_same_graph']:.2f}x OV fp32", flush=True)

    import openvino as ov

    res = {"command": " ".join(["python", *sys.argv]), "machine": platform.processor() or platform.machine(),
           "openvino": ov.__version__, "batch": 32, "tolerance": tol.to_dict(), "physics_only": args.physics_only,
           "rows": rows}
    with atomic_path(args.out, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
