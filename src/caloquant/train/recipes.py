"""The authors' training recipes for the two members of the 3DGAN family.

Everything that differs between the CERN Conv3D 3DGAN (Keras 2, 2017; ../shared/3dgan/README.md)
and the Conv2D generator of the reduced-precision paper (conv2d_generator.md) lives here; the
training loop (:mod:`caloquant.train.loop`) only reads these numbers. Both recipes share one
loop, the authors' Keras loop: per batch, one discriminator update on real showers, one on
generated showers, then two generator updates through the frozen discriminator.

Three losses on the discriminator's outputs (real/fake probability, energy estimate Ep/100,
ECAL sum): binary cross-entropy, and the mean absolute percentage error
``100 * mean(|t - p| / (|t| + eps))`` for the energy and the ECAL sum.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.models import SPEC_3DGAN, ModelSpec, spec_conv2d


@dataclass(frozen=True)
class Recipe:
    """One model's training recipe. Energies in GeV; ``cell_scale`` multiplies the cells."""

    name: str
    description: str
    loss_weights: tuple[float, float, float]  # real/fake BCE, aux energy MAPE, ECAL MAPE
    real_label: float  # discriminator target for real showers (soft labels: 0.9)
    fake_label: float
    flip_prob: float  # probability that a discriminator target is flipped (t -> 1 - t)
    g_steps: int  # generator updates per discriminator update
    optimizer: str  # "rmsprop" | "adam"
    lr_g: float
    lr_d: float
    optimizer_eps: float
    # learning rate lr * exp(-rate * (epoch - start)) from epoch `start` on (None: constant)
    lr_decay: tuple[int, float] | None
    # (first epoch, lo GeV, hi GeV): energies of generated showers during training
    energy_schedule: tuple[tuple[int, float, float], ...]
    # ECAL-sum target of a generated shower: polyval(ecal_fit, Ep/100) * Ep/100, times cell_scale
    ecal_fit: tuple[float, ...]
    cell_scale: float
    cell_threshold_gev: float  # cells below this are set to 0 before scaling
    mape_eps: float
    leaky_output_epochs: int  # first epochs trained with a LeakyReLU output (Conv2D only)
    default_epochs: int
    # the discriminator sees real and generated showers in one batch (see caloquant.train.trainer:
    # needed where BatchNorm sits right before the discriminator's heads)
    mixed_batches: bool = False

    def energy_range(self, epoch: int) -> tuple[float, float]:
        lo, hi = self.energy_schedule[0][1:]
        for first, a, b in self.energy_schedule:
            if epoch >= first:
                lo, hi = a, b
        return lo, hi

    def for_data(
        self, energy_range: tuple[float, float], ecal_fit: tuple[float, ...] | None
    ) -> Recipe:
        """This recipe applied to other training data: generated showers only at energies the
        data covers (the schedule clipped to ``energy_range``; the authors' data covered their
        whole schedule), and, given ``ecal_fit``, the ECAL target fitted to the data as the
        authors fitted theirs (their fit describes their detector's Ecal/Ep, not another's)."""
        lo, hi = energy_range
        sched = tuple((first, max(a, lo), min(b, hi)) for first, a, b in self.energy_schedule)
        if any(a >= b for _, a, b in sched):
            raise CaloquantError(
                f"the training data ({lo:g}-{hi:g} GeV) does not overlap the recipe's energies "
                f"{[(a, b) for _, a, b in self.energy_schedule]}"
            )
        return replace(
            self,
            energy_schedule=sched,
            ecal_fit=ecal_fit if ecal_fit is not None else self.ecal_fit,
        )

    def ecal_target(self, energies_gev: np.ndarray) -> np.ndarray:
        """ECAL sum a generated shower should have, in training units (cells x cell_scale)."""
        u = np.asarray(energies_gev, dtype=np.float64) / 100.0
        return np.polyval(self.ecal_fit, u) * u * self.cell_scale

    def lr_factor(self, epoch: int) -> float:
        if self.lr_decay is None or epoch < self.lr_decay[0]:
            return 1.0
        start, rate = self.lr_decay
        return float(np.exp(-rate * (epoch - start)))

    def spec(self, width: float) -> ModelSpec:
        if self.name == "gan3d":
            return SPEC_3DGAN
        return spec_conv2d(width)


RECIPES: dict[str, Recipe] = {
    # ../shared/3dgan/README.md "Training facts": Keras defaults for RMSprop (lr 1e-3, rho 0.9,
    # eps 1e-8), hard labels, cells in GeV with a 1e-6 threshold, 50 epochs (epoch 49 of 50 is
    # the published one), ECAL target 2 * Ep/100.
    "gan3d": Recipe(
        name="gan3d",
        description="CERN 3DGAN, Conv3D (Khattak, Vallecorsa et al.)",
        loss_weights=(6.0, 0.1, 0.1),
        real_label=1.0,
        fake_label=0.0,
        flip_prob=0.05,
        g_steps=2,
        optimizer="rmsprop",
        lr_g=1e-3,
        lr_d=1e-3,
        optimizer_eps=1e-8,
        lr_decay=None,
        energy_schedule=((0, 100.0, 500.0),),
        ecal_fit=(2.0,),
        cell_scale=1.0,
        cell_threshold_gev=1e-6,
        mape_eps=1e-7,
        leaky_output_epochs=0,
        default_epochs=50,
    ),
    # conv2d_generator.md "Training recipe used by the authors": Adam 5e-4 / 1e-4 (Keras eps
    # 1e-7), decay from epoch 80 (so never within the 30 epochs; per-step decay would freeze the
    # learning rate within the first epoch), soft labels 0.9 / 0.1, loss weights 6 / 0.2 / 0.1,
    # 100-400 GeV for 2 epochs then 2-500 GeV, the ROOT fit of Ecal/Ep, cells x 100. The number
    # of LeakyReLU-output epochs is not published; we use the 2 warm-up epochs. Two generator
    # updates per discriminator update come from the authors' loop that this recipe extends.
    # Mixed real/generated batches: the one departure, without which this discriminator (BatchNorm
    # right before its heads) cannot learn real from generated at all (trainer docstring).
    "conv2d": Recipe(
        name="conv2d",
        description="Conv2D generator of the reduced-precision paper (Rehm et al.)",
        loss_weights=(6.0, 0.2, 0.1),
        real_label=0.9,
        fake_label=0.1,
        flip_prob=0.05,
        g_steps=2,
        optimizer="adam",
        lr_g=5e-4,
        lr_d=1e-4,
        optimizer_eps=1e-7,
        lr_decay=(80, 0.012),
        energy_schedule=((0, 100.0, 400.0), (2, 2.0, 500.0)),
        ecal_fit=(0.0018, -0.023, 0.11, -0.28, 2.21),
        cell_scale=100.0,
        cell_threshold_gev=1e-6,
        mape_eps=2e-7,
        leaky_output_epochs=2,
        default_epochs=30,
        mixed_batches=True,
    ),
}


def fit_ecal(ecal_gev: np.ndarray, energies_gev: np.ndarray, degree: int = 4) -> tuple[float, ...]:
    """The authors' form of the ECAL target, fitted to data: 100 Ecal/Ep as a polynomial in
    u = Ep/100 (so that ``ecal_target`` = polyval(fit, u) * u, in GeV before the cell scale).
    Least squares on the per-shower ratios; the degree drops where the energies are too few."""
    u = np.asarray(energies_gev, dtype=np.float64) / 100.0
    ratio = (
        100.0 * np.asarray(ecal_gev, dtype=np.float64) / np.asarray(energies_gev, dtype=np.float64)
    )
    deg = int(min(degree, max(len(np.unique(np.round(u, 3))) - 1, 0)))
    return tuple(float(c) for c in np.polyfit(u, ratio, deg))


def get_recipe(model: str) -> Recipe:
    if model not in RECIPES:
        raise CaloquantError(f"unknown model '{model}' (choose from {', '.join(RECIPES)})")
    return RECIPES[model]
