"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.models import ArchInfo, ModelSpec, register_architecture


def assert_one_line_error(res: Any, *needles: str) -> None:
    assert res.code != 0, f"expected failure, got exit 0: {res.out}"
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    if len(lines) == 2 and lines[1].startswith("try '") and lines[1].endswith(" --help'"):
        lines = lines[:1]  # a usage error (bad option value, unknown command): its hint to --help
    assert len(lines) == 1, f"expected a one-line error, got:\n{res.err}"
    assert "Traceback" not in res.err
    assert lines[0].startswith("error:"), lines[0]
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


def write_h5(path: Path, **datasets: np.ndarray) -> Path:
    import h5py

    with h5py.File(path, "w") as h5:
        for k, v in datasets.items():
            h5.create_dataset(k, data=v)
    return path


def toy_showers(
    n: int,
    seed: int,
    lo: float = 100.0,
    hi: float = 500.0,
    grid: int = 25,
    width_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cheap random EM-like showers (not physics-accurate; for metric tests only): gamma
    longitudinal profile, Gaussian transverse spread centred on the middle cell (its width
    times ``width_scale``), 2 % sampling fraction with 15 %/sqrt(E) resolution,
    gamma-distributed cell fluctuations. Negligible energy in the last layer, so a one-cell
    shift along z loses nothing."""
    from scipy.special import erf

    rng = np.random.default_rng(seed)
    e = rng.uniform(lo, hi, n)
    t = np.arange(grid) + 0.5
    a = 4.0 + 0.4 * rng.standard_normal(n) + 0.3 * np.log(e / 100.0)
    long = t[None, :] ** (a[:, None] - 1) * np.exp(-0.7 * t[None, :])
    long /= long.sum(axis=1, keepdims=True)
    edges = np.arange(grid + 1) - grid / 2.0  # cell edges around the central cell
    cx = 0.2 * rng.standard_normal((n, 1))
    cy = 0.2 * rng.standard_normal((n, 1))
    width = (0.8 + 0.05 * t)[None, :] * (1 + 0.05 * rng.standard_normal((n, 1)))  # (n, Z)
    width = width * width_scale

    def lateral(c: np.ndarray) -> np.ndarray:  # (n, X, Z)
        u = (edges[None, :, None] - c[:, :, None]) / (np.sqrt(2) * width[:, None, :])
        cdf = 0.5 * (1 + erf(u))
        return np.diff(cdf, axis=1)

    fx, fy = lateral(cx), lateral(cy)
    vis = 0.02 * e * (1 + 0.15 / np.sqrt(e) * rng.standard_normal(n))
    s = np.einsum("nxz,nyz,nz->nxyz", fx, fy, long * vis[:, None])
    s *= rng.gamma(4.0, 0.25, s.shape)
    s[s < 1e-4] = 0.0
    return s.astype(np.float32), e


class UpGen(nn.Module):
    """A small generator with an upsample + conv chain: latent (16) -> (8, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.dense = nn.Linear(16, 8 * 4 * 4 * 4)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad = nn.ZeroPad3d((1, 2, 1, 2, 1, 2))
        self.conv = nn.Conv3d(8, 8, 4)
        self.out = nn.Conv3d(8, 1, 1)
        for m in (self.dense, self.conv, self.out):
            nn.init.normal_(m.weight, 0, 0.3, generator=g)
            nn.init.normal_(m.bias, 0, 0.05, generator=g)
        with torch.no_grad():
            self.out.bias.fill_(0.3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(-1, 8, 4, 4, 4)
        x = nn.functional.leaky_relu(self.conv(self.pad(self.up(x))), 0.3)
        return nn.functional.relu(self.out(x)).squeeze(1)


register_architecture(
    "test-upgen", ArchInfo(UpGen, None, "test model with an upsample + conv chain")
)
UP_SPEC = ModelSpec(
    arch="test-upgen",
    noise_dim=16,
    latent_dim=16,
    grid=(8, 8, 8),
    energy_range_gev=(10.0, 100.0),
    conditioning={"rule": "scale", "energy_unit_gev": 100.0},
    hparams={},
)
