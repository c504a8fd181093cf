"""The Conv2D 3DGAN generator of the reduced-precision paper (Rehm et al. 2021).

Depth is carried as channels: a 5x5x5 seed cube is read in three orientations, each goes
through its own 2D path to a (25, 25, 25) volume, the three volumes are aligned,
concatenated along channels and merged by a final 3x3 convolution. Each block is
conv -> LeakyReLU -> BatchNorm (-> Dropout 0.2 in training). ``width`` scales every channel
count (1.0 = the paper's ~2.07 M parameters); small widths make fast test models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caloquant.models.gan3d import KERAS_BN_EPS, KERAS_LEAKY_SLOPE


def same2d(k: int) -> nn.ZeroPad2d:
    """TensorFlow 'same' padding for stride 1: (k-1)//2 before, k//2 after."""
    return nn.ZeroPad2d(((k - 1) // 2, k // 2, (k - 1) // 2, k // 2))


class Block(nn.Sequential):
    def __init__(self, conv: nn.Module, channels: int, pad: nn.Module | None = None) -> None:
        layers = ([pad] if pad is not None else []) + [conv, nn.LeakyReLU(KERAS_LEAKY_SLOPE), nn.BatchNorm2d(channels, eps=KERAS_BN_EPS), nn.Dropout(0.2)]
        super().__init__(*layers)


def _path(c: int, w: float) -> nn.Sequential:
    def ch(n: int) -> int:
        return max(2, int(round(n * w)))

    return nn.Sequential(
        Block(nn.Conv2d(c, ch(32), 5, bias=False), ch(32), same2d(5)),  # 5x5
        Block(nn.ConvTranspose2d(ch(32), ch(64), 5, stride=3, padding=1), ch(64)),  # 15x15
        Block(nn.Conv2d(ch(64), ch(64), 5, bias=False), ch(64), same2d(5)),
        Block(nn.ConvTranspose2d(ch(64), ch(64), 5, stride=2, padding=2, output_padding=1), ch(64)),  # 30x30
        Block(nn.Conv2d(ch(64), ch(64), 8, bias=False), ch(64), same2d(8)),
        Block(nn.Conv2d(ch(64), ch(64), 5, bias=False), ch(64)),  # 26x26 ('valid')
        Block(nn.Conv2d(ch(64), ch(32), 4, bias=False), ch(32), same2d(4)),
        Block(nn.Conv2d(ch(32), ch(32), 3, bias=False), ch(32), same2d(3)),
        Block(nn.Conv2d(ch(32), 25, 2, bias=False), 25),  # 25 channels (depth) x 25 x 25 ('valid')
    )


class Conv2DGenerator(nn.Module):
    """Latent (N, 200) -> shower (N, 25, 25, 25) in GeV, built from 2D convolutions only."""

    latent_dim = 200

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.dense = nn.Linear(200, 125)
        self.paths = nn.ModuleList([_path(5, width) for _ in range(3)])
        self.pad_out = same2d(3)
        self.out = nn.Conv2d(75, 25, 3, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cube = self.dense(z).view(-1, 5, 5, 5)  # (a, b, c) read channels-first
        # three orientations: each spatial axis plays "channels" once
        v0 = self.paths[0](cube)  # channels = a  -> output (z1, b, c)
        v1 = self.paths[1](cube.permute(0, 2, 1, 3))  # channels = b
        v2 = self.paths[2](cube.permute(0, 3, 2, 1))  # channels = c
        # align the three volumes to (depth-as-channel, x, y) of path 0 and merge
        merged = torch.cat([v0, v1.permute(0, 2, 1, 3), v2.permute(0, 3, 2, 1)], dim=1)
        out = F.relu(self.out(self.pad_out(merged)))  # (N, 25=z, 25=x, 25=y)
        return out.permute(0, 2, 3, 1)  # (N, x, y, z)
