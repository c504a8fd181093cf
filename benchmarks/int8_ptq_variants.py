"""docs/findings.md section 10: post-training variants for the CERN 3DGAN's heavy convolutions
(issue 12, step 2 and the SmoothQuant comparison of step 1), measured on OpenVINO's real int8.

For each heavy unit (conv2, conv3, conv4 inputs and weights) added to the units the physics
recipe admits today (dense, conv1 input), on the graph the tuner uses (exact sub-pixel rewrite):

* range estimator per unit: min-max, percentile (NNCF MEAN_QUANTILE), histogram, each also
  with asymmetric activation ranges (``-asym``: NNCF's MIXED preset; ``--variants asym``);
* bias correction: NNCF FastBiasCorrection (default), full BiasCorrection, none;
* NNCF SmoothQuant for convolutions (off by default in NNCF; needs ``model_type=TRANSFORMER``),
  alpha 0.5 and 0.95, and that model type without smoothing (-1, the control), against
  caloquant's exact equalization (findings section 7).

Each variant is scored as the tuner scores it: paired showers against fp32 at 5 energy points
(worst Ecal deviation, worst moment shift, and ``badness`` = largest deviation plus two standard
errors over its tolerance; <= 1 passes the default tolerance).

    .venv/bin/python benchmarks/int8_ptq_variants.py [--n 200] [--units conv2 conv3 conv4]
        [--variants all|smoothquant|asym] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import caloquant as cq
from caloquant.fileio import write_json
from caloquant.precision import (
    EvalSet,
    Tolerance,
    calibration_latents,
    fuse_upsample_conv,
    make_backend,
)
from caloquant.precision.evaluation import badness

REPO = Path(__file__).resolve().parents[1]
ACCEPTED = (
    "dense",
    "view",
)  # the units the physics recipe admits on the CERN 3DGAN (dense, conv1 input)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200, help="paired showers per energy point")
    ap.add_argument("--units", nargs="+", default=["conv2", "conv3", "conv4"])
    ap.add_argument("--variants", choices=["all", "smoothquant", "asym"], default="all")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="physics only: the thread count changes the time, not the numbers",
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_ptq_variants.json"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = cq.load().checkpoint
    gen, spec = ck.generator.eval(), ck.spec

    def fp32(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return gen(torch.from_numpy(z)).numpy()

    ev = EvalSet.build(spec, fp32, args.n, seed=0)
    calib = calibration_latents(spec, 512, 0)
    graph = fuse_upsample_conv(gen)[0]
    be = make_backend("openvino", graph, spec.latent_dim, args.threads)
    units = be.units(calib)
    label = {u: be.unit_label(u) for u in units}
    base = [u for u in units if label[u] in ACCEPTED]
    tol = Tolerance.load("default")
    variants = [
        (cal, bc, None)
        for cal in ("minmax", "percentile", "histogram")
        for bc in ("fast", "full", "none")
    ]
    variants += [
        ("minmax", "fast", a) for a in (-1.0, 0.5, 0.95)
    ]  # -1: NNCF's TRANSFORMER model type, no smoothing
    if args.variants == "smoothquant":
        variants = [v for v in variants if v[2] is not None]
    if (
        args.variants == "asym"
    ):  # symmetric against asymmetric activation ranges, default bias correction
        variants = [
            (f"{cal}{scheme}", "fast", None)
            for cal in ("minmax", "percentile", "histogram")
            for scheme in ("", "-asym")
        ]
    rows = []
    for name in args.units:
        unit = [u for u in units if label[u].startswith(name)]
        if not unit:
            raise SystemExit(f"error: no unit {name} among {sorted(label.values())}")
        for cal, bc, sq in variants:
            t0 = time.perf_counter()
            model = be.int8_model(calib, base + unit, cal, "fp32", bc, smooth_quant=sq)
            s = ev.score(
                np.concatenate(
                    [model(ev.latents[i : i + 100]) for i in range(0, len(ev.latents), 100)]
                )
            )
            row = {
                "unit": name,
                "calibration": cal,
                "bias_correction": bc,
                "smooth_quant_conv_alpha": sq,
                "worst_ecal_rel": s["worst_ecal_rel"],
                "worst_moment_shift": s["worst_moment_shift"],
                "badness": badness(s, tol),
                "ecal_ratio_per_point": [p["ecal_ratio"] for p in s["points"]],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(
                f"{name:6s} {cal:10s} bc={bc:4s} sq={sq!s:5s}  "
                f"Ecal {100 * row['worst_ecal_rel']:8.2f} %  "
                f"moments {row['worst_moment_shift']:.3f} cell  "
                f"badness {row['badness']:.2f}  ({row['seconds']} s)",
                flush=True,
            )
    write_json(
        args.out,
        {
            "what": "CERN 3DGAN, sub-pixel graph, OpenVINO int8 of dense + conv1 input "
            "+ one heavy unit",
            "n_per_point": args.n,
            "points_gev": list(ev.points),
            "tolerance": asdict(tol),
            "accepted_units": [label[u] for u in base],
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
