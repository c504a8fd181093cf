"""Weights at the start and the end of training: Keras-style initialisation, the exact
conversion between training units (cells x ``cell_scale``) and GeV checkpoints, and the
generator's dropout switched off for training.

Why a conversion: the Conv2D recipe trains on cells multiplied by 100, while a caloquant
checkpoint maps latents to showers in GeV. Both networks are positively homogeneous at their
ends: the generator ends in a bias-free convolution followed by (Leaky)ReLU, and the
discriminator reads the cells through convolutions behind zero padding. So dividing the
generator's last weight by s turns "cells x s" into GeV, and multiplying the discriminator's
input weights by s makes it read GeV as it read "cells x s" in training; both are exact, and
the ECAL-sum output of the discriminator, a plain sum of its input, is then in GeV too.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

KERAS_BN_MOMENTUM = (
    0.01  # Keras momentum 0.99 keeps 99 % of the running value; PyTorch counts the new 1 %
)


@torch.no_grad()
def keras_init(
    module: nn.Module, he_uniform: tuple[str, ...] = (), glorot_normal: tuple[str, ...] = ()
) -> None:
    """Keras 2 defaults: glorot-uniform kernels, zero biases, BatchNorm gamma 1 / beta 0; layers
    named in ``he_uniform`` / ``glorot_normal`` use those initialisers (the CERN 3DGAN generator
    sets them per layer). Keras' glorot_normal is truncated at 2 sigma."""
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            if name in he_uniform:
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")  # bound sqrt(6 / fan_in)
            elif name in glorot_normal:
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                std = (2.0 / (fan_in + fan_out)) ** 0.5
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def keras_batchnorm(module: nn.Module) -> None:
    """Running statistics updated as Keras does (momentum 0.99); not stored in checkpoints."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = KERAS_BN_MOMENTUM


def remove_dropout(module: nn.Module) -> None:
    """Replace every dropout layer of ``module`` by the identity, in place (no parameters: the
    checkpoint is the same).

    Why (``--no-generator-dropout``): the Conv2D generator has dropout 0.2 in each of its 27
    blocks, active in its training updates and off when it is deployed. Dropout spreads energy:
    on a two-stage conv2d trained with the physics term (190 steps on Geant4), the same latents
    gave showers 18 % wider transversely with 8 % more hits in training mode than in inference
    mode (recomputing the BatchNorm statistics changed nothing), so a generator trained to match
    Geant4 in training mode is narrow when deployed. Without dropout, the network that is trained
    is the one that is deployed."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.dropout._DropoutNd):
            setattr(module, name, nn.Identity())
        else:
            remove_dropout(child)


# Per-layer initialisers of the authors' Keras models (EcalEnergyGan.py of svalleco/3Dgan).
KERAS_INIT = {
    "3dgan-conv3d": {"he_uniform": ("conv1", "conv2", "conv3"), "glorot_normal": ("conv4",)},
    "3dgan-conv2d": {},
}


@torch.no_grad()
def rescale(
    gen: nn.Module, disc: nn.Module | None, scale: float
) -> tuple[nn.Module, nn.Module | None]:
    """Copies of (gen, disc) whose cell unit is divided by ``scale``: training units -> GeV with
    ``scale`` = cell_scale, GeV -> training units with 1 / cell_scale."""
    gen = copy.deepcopy(gen)
    if hasattr(gen, "scale_output"):  # a two-stage model: its energy stage sets the unit
        gen.scale_output(1.0 / scale)
    else:
        gen.output_conv.weight.mul_(1.0 / scale)
    if disc is not None:
        disc = copy.deepcopy(disc)
        for conv in disc.input_convs:
            conv.weight.mul_(scale)
    return gen, disc
