"""docs/findings.md section 7: int8 of the CERN 3DGAN's conv2 input, with and without the exact
equalization, on the original graph and on the sub-pixel rewrite, in a torch simulation of the
engine's scheme (per-tensor symmetric min-max activations from the calibration latents,
per-output-channel symmetric weights) and in OpenVINO's real int8 (conv2 alone in int8).

    .venv/bin/python benchmarks/int8_equalization_conv2.py
        [--out benchmarks/results/int8_equalization_conv2.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import caloquant as cq
from caloquant.fileio import write_json
from caloquant.models import condition_latent
from caloquant.precision import calibration_latents
from caloquant.precision.backends import make_backend
from caloquant.precision.equalize import equalize
from caloquant.precision.rewrite import fuse_upsample_conv

POINTS = (100.0, 300.0, 500.0)


def weight_int8(w: torch.Tensor) -> torch.Tensor:
    s = w.abs().flatten(1).amax(1).view(-1, *[1] * (w.dim() - 1)) / 127
    return torch.clamp(torch.round(w / s), -127, 127) * s


def simulate(
    model: torch.nn.Module,
    conv: torch.nn.Module,
    calib: torch.Tensor,
    lat: torch.Tensor,
    weights: bool,
) -> np.ndarray:
    amax: dict[str, torch.Tensor] = {}
    h = conv.register_forward_pre_hook(lambda _m, inp: amax.__setitem__("a", inp[0].abs().max()))
    with torch.no_grad():
        model(calib)
    h.remove()
    step = amax["a"] / 127
    w0 = conv.weight.data.clone()
    if weights:
        conv.weight.data = weight_int8(w0)
    h = conv.register_forward_pre_hook(
        lambda _m, inp: (torch.clamp(torch.round(inp[0] / step), -127, 127) * step,)
    )
    try:
        with torch.no_grad():
            return model(lat).numpy()
    finally:
        h.remove()
        conv.weight.data = w0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="paired showers per energy point")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "int8_equalization_conv2.json",
    )
    args = ap.parse_args()
    torch.set_num_threads(2)
    ck = cq.load().checkpoint
    gen, spec = ck.generator.eval(), ck.spec
    calib_np = calibration_latents(spec, 512, 0)
    calib = torch.from_numpy(calib_np)
    e = np.repeat(np.asarray(POINTS), args.n)
    lat_np = condition_latent(
        np.random.default_rng(5).standard_normal((len(e), spec.noise_dim), dtype=np.float32),
        e,
        spec,
    )
    lat = torch.from_numpy(lat_np)
    with torch.no_grad():
        ref = gen(lat).numpy()

    def dev(out: np.ndarray) -> list[float]:
        return [round(100 * float(out[e == p].sum() / ref[e == p].sum() - 1), 3) for p in POINTS]

    rows = []
    for alpha in (None, 0.5, 1.0):
        m = gen if alpha is None else equalize(gen, lambda mm: mm(calib), alpha)[0]
        for rewrite in (False, True):
            g = fuse_upsample_conv(m)[0] if rewrite else m
            conv = g.conv2.conv if rewrite else g.conv2
            row = {
                "alpha": alpha,
                "rewrite": rewrite,
                "points_gev": POINTS,
                "sim_activations_only_pct": dev(simulate(g, conv, calib, lat, False)),
                "sim_with_weights_pct": dev(simulate(g, conv, calib, lat, True)),
            }
            if rewrite:  # the engine: conv2 alone in int8 on the graph the tuner uses
                be = make_backend("openvino", g, spec.latent_dim, 2)
                unit = [u for u in be.units(calib_np) if "conv2" in u]
                row["openvino_int8_pct"] = dev(
                    be.int8_model(calib_np, unit, "minmax", "fp32")(lat_np)
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(
        args.out,
        {
            "what": "Ecal_int8 / Ecal_fp32 - 1 (%) with only conv2's input and weights in int8",
            "n_per_point": args.n,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
