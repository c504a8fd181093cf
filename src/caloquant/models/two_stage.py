"""Two-stage generator: the shower's total energy from its own model, the shape from a GAN.

A GAN that draws every cell also draws the total energy, and nothing in its loss holds that
sum to the detector's response: the models trained so far were 12-30 % off in energy scale
against Geant4 (docs/findings.md 6). Here the two are separate, as in CaloFlow's two-stage
design (Krause & Shih 2021: a flow for the layer energies, a second one for the shape given
them):

1. :class:`EnergyStage`, a one-dimensional conditional flow, draws the response
   u = Ecal / Ep given Ep. It is fitted by maximum likelihood to the training showers, so its
   mean response and its resolution are those of the data at every energy (up to statistical
   error and what the small network can follow), whatever the shape network does.
2. The shape network (any of caloquant's generators with a non-negative output, e.g. the
   Conv2D one) draws a shower; :class:`TwoStageGenerator` divides it by its own sum and
   multiplies by u * Ep. The shape network decides where the energy goes, never how much.

The flow is a sinh-arcsinh transform of a standard normal (Jones & Pewsey 2009), location,
scale, skew and tail weight given by a small MLP of log Ep:
``u = mu + sigma * sinh((asinh(eps) + skew) / tail)``, eps ~ N(0, 1). It has a closed-form
density (:meth:`EnergyStage.log_prob`) and is monotone in eps, so one noise value per shower
fixes the energy, and the latent vector still fixes the whole shower.

The latent vector keeps caloquant's conditioning contract (``ModelSpec.conditioning`` rule
``concat``: ``[noise, Ep / 100 GeV]``): the noise holds the shape network's noise and one more
value for the energy; the shape network's own rule (latent = noise * Ep / 100) is applied
inside :meth:`TwoStageGenerator.forward`. Every operation is a plain tensor operation (asinh
and sinh written with log and exp), so the module exports to OpenVINO, ONNX and torch.export
like the single-stage generators; the energy stage is tiny next to the shape network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ENERGY_UNIT_GEV = 100.0  # Ep enters as Ep / 100 GeV, as in the 3DGAN family's conditioning
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _asinh(x: torch.Tensor) -> torch.Tensor:
    # log(|x| + sqrt(x^2 + 1)) with the sign outside: no cancellation for negative x; written
    # out because not every engine's converter has an Asinh operation
    a = x.abs()
    return torch.sign(x) * torch.log(a + torch.sqrt(a * a + 1.0))


def _sinh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.exp(x) - torch.exp(-x))


class EnergyStage(nn.Module):
    """The response u = Ecal / Ep given e = Ep / 100 GeV: a conditional sinh-arcsinh flow.

    ``loc`` and ``spread`` standardise log e (set by the fit to the training energies);
    ``base`` holds the data's overall mean response and log spread, so that an untrained
    network (zero output layer) already starts at the data's average.
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, 4),
        )  # fmt: skip
        self.register_buffer("loc", torch.zeros(1))
        self.register_buffer("spread", torch.ones(1))
        self.register_buffer("base", torch.tensor([1.0, math.log(0.05)]))

    def params(
        self, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, sigma, skew, tail) for e = Ep / 100 GeV, shape (n, 1) each."""
        t = (torch.log(e) - self.loc) / self.spread
        p = self.net(t)
        mu = self.base[0] + 0.1 * p[:, 0:1]  # the response moves by ~10 % per unit output
        sigma = torch.exp(self.base[1] + p[:, 1:2])
        skew = p[:, 2:3]
        tail = torch.exp(0.7 * torch.tanh(p[:, 3:4]))  # tail weight within [0.5, 2]
        return mu, sigma, skew, tail

    def forward(self, e: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The response u (n, 1), non-negative, for e (n, 1) and standard-normal eps (n, 1)."""
        mu, sigma, skew, tail = self.params(e)
        return torch.relu(mu + sigma * _sinh((_asinh(eps) + skew) / tail))

    def log_prob(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """log density of the response u (n, 1) at e (n, 1) (the ReLU floor at 0 aside: the
        data have no shower without energy)."""
        mu, sigma, skew, tail = self.params(e)
        x = (u - mu) / sigma
        y = tail * _asinh(x) - skew  # the normal variate that maps to x
        log_cosh = torch.logaddexp(y, -y) - math.log(2.0)
        return (
            torch.log(tail)
            + log_cosh
            - _LOG_SQRT_2PI
            - 0.5 * torch.log1p(x * x)
            - 0.5 * _sinh(y) ** 2
            - torch.log(sigma)
        )


class TwoStageGenerator(nn.Module):
    """Latent (N, noise_dim + 2) -> shower (N, *grid): the shape network's shower, normalised,
    times the energy stage's Ecal = u * Ep.

    The latent is ``[shape noise (d), energy noise (1), Ep / 100 GeV (1)]``. ``output_scale``
    is the cell unit of the output per GeV (1: showers in GeV; training runs in cells x 100);
    :meth:`scale_output` changes it, the two-stage counterpart of scaling the last convolution
    of a single-stage generator.
    """

    # quantizers work in the shape network only (caloquant.precision.backends.quantized_scope):
    # the energy stage and the normalisation set the energy scale and stay float32
    quantized_scope = "shape"

    def __init__(self, shape: nn.Module, hidden: int = 32) -> None:
        super().__init__()
        self.shape = shape
        self.energy = EnergyStage(hidden)
        self.shape_dim = int(shape.latent_dim)
        self.latent_dim = self.shape_dim + 2
        self.register_buffer("output_scale", torch.ones(1))

    @property
    def output_slope(self) -> float:
        return float(getattr(self.shape, "output_slope", 0.0))

    @output_slope.setter
    def output_slope(self, slope: float) -> None:
        if hasattr(self.shape, "output_slope"):
            self.shape.output_slope = slope

    @torch.no_grad()
    def scale_output(self, factor: float) -> None:
        """Multiply every shower by ``factor`` (a change of cell unit)."""
        self.output_scale.mul_(factor)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        d = self.shape_dim
        noise, eps, e = latent[:, :d], latent[:, d : d + 1], latent[:, d + 1 : d + 2]
        s = self.shape(noise * e)  # the shape network's own rule: latent = noise * Ep / 100
        # a warm-up LeakyReLU output may give negative cells: the sum counts the positive ones
        total = s.clamp_min(0.0).flatten(1).sum(1).clamp_min(1e-20)
        ecal = self.energy(e, eps) * e * (ENERGY_UNIT_GEV * self.output_scale)
        return s * (ecal / total.unsqueeze(1)).view(-1, *([1] * (s.dim() - 1)))
