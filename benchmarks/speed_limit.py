"""What speed is left on this CPU class (issue 25, item 7): for the CERN 3DGAN's rewritten graph
on OpenVINO, the exact fp32 engine model F against int8 placed unit by unit, and both under the
engine's run settings (batch, streams, performance hint, thread pinning).

1. *Per unit*: each quantizable unit alone in int8 (the rest fp32), the tuner's physics set
   {view, dense}, and every unit in int8 (naive: the physics fails, the speed bound of int8),
   each against F in paired interleaved rounds (:func:`caloquant.timing.race`, batch 32, one
   stream, 2 threads): which units the CPU's int8 kernels speed up at all.
2. *Run settings*: F and the physics set under batch 16/32/64/128, one stream (LATENCY hint) or
   two streams of one thread (THROUGHPUT), and with the plugin's thread pinning on or off; every
   setting against F at batch 32, one stream, in paired interleaved rounds (ratio and 90 %
   interval of the per-round ratios, :func:`caloquant.timing.ratio_interval`).

Run on a quiet host (nothing else on the CPU). On another class's kernels:
``ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=tests/cpu_class`` (tests/cpu_class/README.md)::

    .venv/bin/python benchmarks/speed_limit.py [--rounds 5] [--window 1.0]

Writes benchmarks/results/speed_limit/<cpu class>[-emulated-on-<real class>].json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHYSICS_SET = ("view", "dense")  # what the tuner admits on every class measured (findings 13)


def compile_runners(ov_model: Any, batch: int, streams: int, pin: bool | None) -> list[Any]:
    """``streams`` infer requests of one compiled model, 2 threads in all, with the hint the
    backend uses (LATENCY for one stream, THROUGHPUT otherwise); ``pin``: ENABLE_CPU_PINNING
    (None: the plugin's default). Compiled here rather than by ``EngineModel.runners``, which
    has no pinning setting (the backend leaves it to the plugin)."""
    import openvino as ov

    cfg: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": 2,
        "NUM_STREAMS": streams,
        "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
    }
    if pin is not None:
        cfg["ENABLE_CPU_PINNING"] = pin
    c = ov.Core().compile_model(ov_model, "CPU", cfg)
    out = []
    for _ in range(streams):
        req = c.create_infer_request()
        out.append(lambda x, r=req: r.infer({0: x})[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    # a race needs 3 paired rounds; the bounds keep the settings grid within an hour
    # (32 settings x 20 rounds x 5 s)
    if not (3 <= a.rounds <= 20 and 0 < a.window <= 5):  # NaN fails too
        ap.error(f"need --rounds 3-20 and --window in (0, 5] s, got {a.rounds} and {a.window}")
    if a.out is not None and a.out.is_dir():
        ap.error(f"--out {a.out} is a directory; give a .json file path")

    import caloquant as cq
    from caloquant import runtime
    from caloquant.fileio import atomic_path
    from caloquant.precision import QuantizeConfig, calibration_latents, make_backend
    from caloquant.precision.rewrite import fuse_upsample_conv
    from caloquant.runtime import cpu_identity, fast_kernels
    from caloquant.timing import RaceConfig, TimingConfig, race, ratio_interval, time_streams

    t_start = time.perf_counter()
    ident = cpu_identity()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    ck = cq.load().checkpoint
    spec, gen = ck.spec, ck.generator.eval()
    module, _ = fuse_upsample_conv(gen)
    qc = QuantizeConfig()
    be = make_backend("openvino", module, spec.latent_dim, 2)
    calib = calibration_latents(spec, qc.calib_n, qc.seed)
    units = be.units(calib)
    label = {u: be.unit_label(u) for u in units}
    rng = np.random.default_rng(7)
    latent = calibration_latents(spec, 128, 11)
    tc = TimingConfig(window_s=a.window, rounds=a.rounds, warmup_s=0.5)

    # 1. per unit
    models: dict[str, Any] = {"fp32 (exact engine model)": be.float_model("fp32")}
    for u in units:
        models[f"int8: {label[u]}"] = be.int8_model(calib, [u], "minmax")
    phys = [u for u in units if label[u] in PHYSICS_SET]
    models["int8: {view, dense} (physics set)"] = be.int8_model(calib, phys, "minmax")
    models["int8: all units (naive)"] = be.int8_model(calib, units, "minmax")
    fns = {k: m.runners(2, 1)[0][0] for k, m in models.items()}
    ref = "fp32 (exact engine model)"
    rc = RaceConfig(min_rounds=a.rounds, max_rounds=3 * a.rounds, budget_s=240.0)
    r1 = race(fns, ref, latent[:32], tc, rc)
    per_unit = {
        k: {
            **{f: r1["models"][k].get(f) for f in ("showers_per_s", "ratio", "verdict")},
            "interval": r1["models"][k].get("ratio_interval"),
            "executed": [f"{n}:{p}" for part in models[k].runtime_precisions() for n, p in part],
        }
        for k in fns
    }

    # 2. run settings: F and the physics set, paired interleaved rounds
    grid = list(itertools.product((16, 32, 64, 128), (1, 2), (None, False)))
    cases: dict[str, tuple[list[Any], list[np.ndarray]]] = {}
    pair = (
        ("fp32", models[ref]),
        ("int8 {view, dense}", models["int8: {view, dense} (physics set)"]),
    )
    for name, m in pair:
        for batch, streams, pin in grid:
            key = f"{name} b{batch} s{streams} pin={'default' if pin is None else pin}"
            rs = compile_runners(m.model, batch, streams, pin)
            cases[key] = (rs, [np.ascontiguousarray(latent[:batch])] * streams)
    base = "fp32 b32 s1 pin=default"
    sps: dict[str, list[float]] = {k: [] for k in cases}
    keys = list(cases)
    for r in range(a.rounds):
        order = list(keys)
        rng.shuffle(order)  # a fresh order each round: a slow spell hits no setting twice alike
        for k in order:
            rs, xs = cases[k]
            sps[k].append(time_streams(rs, xs, tc, warmup=(r == 0))["showers_per_s"])
        print(f"settings round {r + 1}/{a.rounds} done", flush=True)
    settings = {}
    for k in keys:
        ratio, lo, hi = ratio_interval(sps[k], sps[base], 0.90)
        settings[k] = {
            "showers_per_s": float(np.median(sps[k])),
            "ratio_vs_fp32_b32_s1": ratio,
            "interval": [lo, hi],
        }
    best = {
        name: max(
            (k for k in keys if k.startswith(name)), key=lambda k: settings[k]["showers_per_s"]
        )
        for name in ("fp32", "int8 {view, dense}")
    }
    out = {
        "cpu": ident,
        "onednn_max_cpu_isa": isa,
        "fast_kernels": fast_kernels(ident["flags"]),
        "model": "cern-3dgan (rewritten graph), OpenVINO, 2 threads",
        "timing": {"window_s": a.window, "rounds": a.rounds},
        "per_unit": per_unit,
        "per_unit_race": {k: r1[k] for k in ("rounds", "seconds", "load_before", "other_load_pct")},
        "settings": settings,
        "best_setting": {n: {"setting": k, **settings[k]} for n, k in best.items()},
        "wall_seconds": time.perf_counter() - t_start,
    }
    name = str(ident["cpu_class"])
    if isa:  # the class of the CPU underneath (tests/cpu_class keeps the unpatched reader)
        real = getattr(runtime.cpuinfo, "__wrapped__", runtime.cpuinfo)()
        name += f"-emulated-on-{runtime.cpu_class(real.get('flags', '').split())}"
    dst = a.out or ROOT / "benchmarks" / "results" / "speed_limit" / f"{name}.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(out, indent=1))
    for k, v in per_unit.items():
        print(f"{k:40s} {v['showers_per_s']:8.0f}/s  x{v['ratio'] or 1:.3f} {v['verdict']}")
    for k in keys:
        s = settings[k]
        print(
            f"{k:40s} {s['showers_per_s']:8.0f}/s  x{s['ratio_vs_fp32_b32_s1']:.3f} {s['interval']}"
        )
    print("best", json.dumps(best), f"{out['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
