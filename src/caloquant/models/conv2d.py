"""The Conv2D 3DGAN generator of the reduced-precision paper (Rehm et al. 2021).

Depth is carried as channels: a 5x5x5 seed cube is read in three orientations, each goes
through its own 2D path to a (25, 25, 25) volume, the three volumes are aligned,
concatenated along channels and merged by a final 3x3 convolution. Each block is
conv -> LeakyReLU -> BatchNorm (-> Dropout 0.2 in training). ``width`` scales every channel
count (1.0 = the paper's ~2.07 M parameters); small widths make fast test models.

The discriminator uses the same idea on the 25x25x25 input: each of the three axes is read
as channels by one 2D path, the three feature cubes are concatenated and reduced to the
real/fake probability, the energy estimate (Ep / 100 GeV) and the ECAL sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from caloquant.models.gan3d import KERAS_BN_EPS, KERAS_LEAKY_SLOPE


def same2d(k: int) -> nn.ZeroPad2d:
    """TensorFlow 'same' padding for stride 1: (k-1)//2 before, k//2 after."""
    return nn.ZeroPad2d(((k - 1) // 2, k // 2, (k - 1) // 2, k // 2))


class Block(nn.Sequential):
    def __init__(self, conv: nn.Module, channels: int, pad: nn.Module | None = None) -> None:
        layers = ([pad] if pad is not None else []) + [
            conv,
            nn.LeakyReLU(KERAS_LEAKY_SLOPE),
            nn.BatchNorm2d(channels, eps=KERAS_BN_EPS),
            nn.Dropout(0.2),
        ]
        super().__init__(*layers)


def _scaled(width: float) -> Callable[[int], int]:
    """Channel count scaled by the width multiplier (at least 2, so BatchNorm has statistics)."""
    return lambda n: max(2, int(round(n * width)))


def _path(c: int, w: float) -> nn.Sequential:
    ch = _scaled(w)
    return nn.Sequential(
        Block(nn.Conv2d(c, ch(32), 5, bias=False), ch(32), same2d(5)),  # 5x5
        Block(nn.ConvTranspose2d(ch(32), ch(64), 5, stride=3, padding=1), ch(64)),  # 15x15
        Block(nn.Conv2d(ch(64), ch(64), 5, bias=False), ch(64), same2d(5)),
        Block(
            nn.ConvTranspose2d(ch(64), ch(64), 5, stride=2, padding=2, output_padding=1), ch(64)
        ),  # 30x30
        Block(nn.Conv2d(ch(64), ch(64), 8, bias=False), ch(64), same2d(8)),
        Block(nn.Conv2d(ch(64), ch(64), 5, bias=False), ch(64)),  # 26x26 ('valid')
        Block(nn.Conv2d(ch(64), ch(32), 4, bias=False), ch(32), same2d(4)),
        Block(nn.Conv2d(ch(32), ch(32), 3, bias=False), ch(32), same2d(3)),
        Block(nn.Conv2d(ch(32), 25, 2, bias=False), 25),  # 25 channels (depth) x 25 x 25 ('valid')
    )


class Conv2DGenerator(nn.Module):
    """Latent (N, 200) -> shower (N, 25, 25, 25) in GeV, built from 2D convolutions only.

    ``output_slope`` is the negative slope of the output activation: 0 is the deployed ReLU
    version; the authors trained the first epochs with a LeakyReLU output (slope > 0). It is
    a plain attribute, not a weight, so checkpoints do not carry it.
    """

    latent_dim = 200

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.dense = nn.Linear(200, 125)
        self.paths = nn.ModuleList([_path(5, width) for _ in range(3)])
        self.pad_out = same2d(3)
        self.out = nn.Conv2d(75, 25, 3, bias=False)
        self.output_slope = 0.0

    @property
    def output_conv(self) -> nn.Conv2d:
        """The last convolution: no bias, followed by (Leaky)ReLU, so scaling its weight by s
        scales every shower by s exactly (the activation is positively homogeneous)."""
        return self.out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cube = self.dense(z).view(-1, 5, 5, 5)  # (a, b, c) read channels-first
        # three orientations: each spatial axis plays "channels" once
        v0 = self.paths[0](cube)  # channels = a  -> output (z1, b, c)
        v1 = self.paths[1](cube.permute(0, 2, 1, 3))  # channels = b
        v2 = self.paths[2](cube.permute(0, 3, 2, 1))  # channels = c
        # align the three volumes to (depth-as-channel, x, y) of path 0 and merge
        merged = torch.cat([v0, v1.permute(0, 2, 1, 3), v2.permute(0, 3, 2, 1)], dim=1)
        out = self.out(self.pad_out(merged))  # (N, 25=z, 25=x, 25=y)
        out = F.relu(out) if self.output_slope == 0 else F.leaky_relu(out, self.output_slope)
        return out.permute(0, 2, 3, 1)  # (N, x, y, z)


def _disc_path(c: int, w: float) -> nn.Sequential:
    ch = _scaled(w)
    return nn.Sequential(
        Block(nn.Conv2d(c, ch(64), 8), ch(64), same2d(8)),  # 25x25
        Block(nn.Conv2d(ch(64), ch(32), 6), ch(32)),  # 20x20 ('valid' from here on)
        Block(nn.Conv2d(ch(32), ch(32), 5), ch(32)),  # 16x16
        Block(nn.Conv2d(ch(32), ch(32), 4), ch(32)),  # 13x13
        Block(nn.Conv2d(ch(32), ch(32), 3), ch(32)),  # 11x11
        Block(nn.Conv2d(ch(32), 9, 3), 9),  # 9 channels x 9 x 9: a 9x9x9 feature cube
    )


class Conv2DDiscriminator(nn.Module):
    """Shower (N, 25, 25, 25) -> (p_real, Ep/100 estimate, Ecal sum), from 2D convolutions only.

    ~714k parameters at width 1.0 (the paper's). Each path block is conv -> LeakyReLU ->
    BatchNorm -> Dropout 0.2, as in the generator (the paper lists the convolutions only);
    convolutions keep their bias (the Keras default), which gives the paper's parameter count.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.paths = nn.ModuleList([_disc_path(25, width) for _ in range(3)])
        self.dense = nn.Linear(3 * 9 * 9 * 9, 10)
        self.bn = nn.BatchNorm1d(10, eps=KERAS_BN_EPS)
        self.generation = nn.Linear(10, 1)
        self.auxiliary = nn.Linear(10, 1)

    @property
    def input_convs(self) -> list[nn.Module]:
        """The convolutions that read the input cells (one per path): scaling their weights by
        s is the same as scaling the input by s (zero padding, then a linear map)."""
        return [path[0][1] for path in self.paths]

    def forward(self, showers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = showers  # (N, x, y, z)
        # each spatial axis plays "channels" once: z (depth), x, y
        feats = [
            self.paths[0](x.permute(0, 3, 1, 2)),
            self.paths[1](x),
            self.paths[2](x.permute(0, 2, 1, 3)),
        ]
        h = torch.cat([f.flatten(1) for f in feats], dim=1)
        h = self.bn(F.leaky_relu(self.dense(h), KERAS_LEAKY_SLOPE))
        p_real = torch.sigmoid(self.generation(h)).squeeze(1)
        aux = self.auxiliary(h).squeeze(1)
        ecal = showers.flatten(1).sum(1)
        return p_real, aux, ecal
