"""The CERN 3DGAN (Conv3D) generator and discriminator, as trained by its authors in Keras 2.

Tensors are channels-first, (N, C, X, Y, Z), with x, y transverse and z the depth. Keras
semantics are reproduced exactly: LeakyReLU slope 0.3, BatchNorm epsilon 1e-3, TensorFlow
'same' padding with even kernels ((k-1)//2 before, k//2 after), nearest-neighbour upsampling,
and channels-last flatten/reshape orders. Padding is an explicit ``ZeroPad3d`` module so that
every convolution is a plain 'valid' one, which all quantizers understand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERAS_LEAKY_SLOPE = 0.3
KERAS_BN_EPS = 1e-3


def tf_same_pad(kernel: tuple[int, int, int]) -> nn.ZeroPad3d:
    """TensorFlow 'same' padding for stride 1 as an explicit pad (ZeroPad3d takes z, y, x pairs)."""
    kx, ky, kz = kernel
    return nn.ZeroPad3d(((kz - 1) // 2, kz // 2, (ky - 1) // 2, ky // 2, (kx - 1) // 2, kx // 2))


def sym_pad(px: int, py: int, pz: int) -> nn.ZeroPad3d:
    """Keras ZeroPadding3D((px, py, pz)): the same amount on both sides of each axis."""
    return nn.ZeroPad3d((pz, pz, py, py, px, px))


class Generator3DGAN(nn.Module):
    """Latent (N, 200) -> shower (N, 25, 25, 25) in GeV. ~873k parameters, ~0.51 GFLOP/shower.

    The latent is the *conditioned* vector ``z = (Ep / 100 GeV) * n`` with n ~ N(0, 1);
    see :func:`caloquant.models.condition_latent`.
    """

    latent_dim = 200

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(200, 7 * 7 * 8 * 8)
        # block 1: conv (6,6,8) 'same' -> LeakyReLU -> BN -> upsample 2
        self.pad1 = tf_same_pad((6, 6, 8))
        self.conv1 = nn.Conv3d(8, 64, (6, 6, 8))
        self.bn1 = nn.BatchNorm3d(64, eps=KERAS_BN_EPS)
        self.up1 = nn.Upsample(scale_factor=(2, 2, 2), mode="nearest")
        # block 2: pad (2,2,0) -> conv (6,5,8) -> LeakyReLU -> BN -> upsample (2,2,3)
        self.pad2 = sym_pad(2, 2, 0)
        self.conv2 = nn.Conv3d(64, 6, (6, 5, 8))
        self.bn2 = nn.BatchNorm3d(6, eps=KERAS_BN_EPS)
        self.up2 = nn.Upsample(scale_factor=(2, 2, 3), mode="nearest")
        # block 3: pad (1,0,3) -> conv (3,3,8) -> LeakyReLU
        self.pad3 = sym_pad(1, 0, 3)
        self.conv3 = nn.Conv3d(6, 6, (3, 3, 8))
        # output: conv (2,2,2), no bias -> ReLU
        self.conv4 = nn.Conv3d(6, 1, (2, 2, 2), bias=False)

    @property
    def output_conv(self) -> nn.Conv3d:
        """The last convolution: no bias, followed by ReLU, so scaling its weight by s scales
        every shower by s exactly (ReLU is positively homogeneous)."""
        return self.conv4

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z)
        # Keras reshapes the dense output in C order to (x, y, z, ch) = (7, 7, 8, 8)
        x = x.view(-1, 7, 7, 8, 8).permute(0, 4, 1, 2, 3)
        x = self.up1(self.bn1(F.leaky_relu(self.conv1(self.pad1(x)), KERAS_LEAKY_SLOPE)))
        x = self.up2(self.bn2(F.leaky_relu(self.conv2(self.pad2(x)), KERAS_LEAKY_SLOPE)))
        x = F.leaky_relu(self.conv3(self.pad3(x)), KERAS_LEAKY_SLOPE)
        x = F.relu(self.conv4(x))
        return x.squeeze(1)


class Discriminator3DGAN(nn.Module):
    """Shower (N, 25, 25, 25) -> (p_real, Ep/100 estimate, Ecal sum), as in the Keras model.

    Dropout (0.2) is active only in training mode, as in Keras.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 32, 5, padding=2)
        self.pads = nn.ModuleList([sym_pad(2, 2, 2), sym_pad(2, 2, 2), sym_pad(1, 1, 1)])
        self.convs = nn.ModuleList([nn.Conv3d(32, 8, 5), nn.Conv3d(8, 8, 5), nn.Conv3d(8, 8, 5)])
        self.bns = nn.ModuleList([nn.BatchNorm3d(8, eps=KERAS_BN_EPS) for _ in range(3)])
        self.drop = nn.Dropout(0.2)
        self.pool = nn.AvgPool3d(2)
        self.generation = nn.Linear(10648, 1)
        self.auxiliary = nn.Linear(10648, 1)

    @property
    def input_convs(self) -> list[nn.Module]:
        """The convolution that reads the input cells: scaling its weight by s is the same as
        scaling the input by s (zero padding, then a linear map)."""
        return [self.conv1]

    def forward(self, showers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = showers.unsqueeze(1)
        h = self.drop(F.leaky_relu(self.conv1(x), KERAS_LEAKY_SLOPE))
        for pad, conv, bn in zip(self.pads, self.convs, self.bns):
            h = self.drop(bn(F.leaky_relu(conv(pad(h)), KERAS_LEAKY_SLOPE)))
        h = self.pool(h)
        # Keras flattens channels-last: (x, y, z, ch)
        h = h.permute(0, 2, 3, 4, 1).flatten(1)
        p_real = torch.sigmoid(self.generation(h)).squeeze(1)
        aux = self.auxiliary(h).squeeze(1)
        ecal = showers.flatten(1).sum(1)
        return p_real, aux, ecal
