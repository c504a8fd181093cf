"""Reproducer: the bf16 Conv3D kernel gives wrong results for the CERN 3DGAN's first
convolution shape on CPUs with AMX (found 2026-11-23, torch 2.13.0+cpu and OpenVINO 2026.4.1,
both on oneDNN). Random weights and inputs, no model files needed.

Compares torch's bf16 conv3d with the same bf16-rounded operands computed in fp32; a correct
kernel differs by a few bf16 ulps of the output (relative error ~1e-2 at most), a broken one
by as much as the output itself.

    .venv/bin/python benchmarks/repro_bf16_conv3d.py
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F


def check(
    cin: int, cout: int, kernel: tuple[int, int, int], spatial: tuple[int, int, int], n: int = 8
) -> float:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, *spatial, generator=g).bfloat16()
    w = (torch.randn(cout, cin, *kernel, generator=g) * 0.05).bfloat16()
    got = F.conv3d(x, w).float()
    want = F.conv3d(x.float(), w.float())
    return float((got - want).abs().max() / want.abs().max())


if __name__ == "__main__":
    torch.set_num_threads(2)
    cases = {
        "3dgan conv1: 8->64, k(6,6,8), in 12x12x15": (8, 64, (6, 6, 8), (12, 12, 15)),
        "3dgan conv2: 64->6, k(6,5,8), in 18x18x16": (64, 6, (6, 5, 8), (18, 18, 16)),
        "3dgan conv3: 6->6, k(3,3,8), in 28x28x33": (6, 6, (3, 3, 8), (28, 28, 33)),
        "3dgan conv4: 6->1, k(2,2,2), in 26x26x26": (6, 1, (2, 2, 2), (26, 26, 26)),
    }
    out = {name: check(*args) for name, args in cases.items()}
    for name, rel in out.items():
        print(f"{'BROKEN' if rel > 0.05 else 'ok    '} max rel. error {rel:.3g}  {name}")
    print(json.dumps({"torch": torch.__version__, "results": out}))
