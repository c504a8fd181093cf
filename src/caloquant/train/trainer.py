"""The GAN update rule of the 3DGAN authors, for one batch: the :class:`Trainer`.

Per batch of B real showers (training units: cells x cell_scale; energies Ep in GeV):

1. discriminator update on the real showers, targets real_label (5 % flipped), Ep/100, Ecal;
2. discriminator update on B generated showers: latents z = Ep/100 * n for Ep uniform in the
   recipe's range, generated in inference mode (Keras ``generator.predict``: BatchNorm running
   statistics, no dropout), targets fake_label (5 % flipped), Ep/100, the ECAL fit;
3. ``g_steps`` generator updates through the frozen discriminator (training mode), targets 1
   (the authors' "trick" labels), Ep/100 and the ECAL fit.

With ``recipe.mixed_batches`` steps 1 and 2 are one update on the 2B real and generated showers
in one forward pass, and each generator update passes its B generated showers through the
discriminator together with the B real ones (its loss counts the generated ones only). Why:
a discriminator whose last layer before its heads is BatchNorm in training mode (the Conv2D
one: Dense -> LeakyReLU -> BatchNorm -> Dense heads) normalises every batch to the mean beta,
so the batch mean of the real/fake logit is w . beta + b for *any* batch; fed a batch of only
real and a batch of only generated showers it cannot tell them apart on average, its
real/fake loss stays at ln 2 and the generator learns the energy terms alone (measured:
d_bce 0.69-0.70 for 9 epochs, showers of the right energy with no shower shape). In a mixed
batch the batch statistics are shared, and the difference between real and generated
showers survives normalisation. (The Conv3D discriminator reads BatchNorm'ed feature maps
through spatially varying head weights, which are not invariant: its recipe keeps the
authors' separate batches.)

Each update minimises ``w0 * BCE + w1 * MAPE(aux, Ep/100) + w2 * MAPE(Ecal, target)``. With
precision bf16 the forward passes run under CPU autocast (weights, gradients and optimizer
state stay float32); losses are always computed in float32, and the ECAL sum is taken in
float32 from the showers (the discriminator's own ECAL output is the same parameter-free sum).
With ``physics_loss`` W > 0 the generator updates draw the real batch's energies and add W times
the physics term of :mod:`caloquant.train.physics_loss` (the authors' loss: W = 0).
All randomness comes from the process-global torch generator, whose state the run saves.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from caloquant.errors import CaloquantError
from caloquant.models import (
    TWO_STAGE,
    TwoStageGenerator,
    build,
    condition_latent,
    model_ref,
    shape_spec,
    two_stage_spec,
)
from caloquant.models.gan3d import KERAS_LEAKY_SLOPE
from caloquant.train.config import TrainConfig
from caloquant.train.ddp import Dist
from caloquant.train.energy import EnergyFit, fit_energy_stage
from caloquant.train.physics_loss import physics_loss
from caloquant.train.recipes import Recipe, get_recipe
from caloquant.train.rng import seed_process
from caloquant.train.weights import KERAS_INIT, keras_batchnorm, keras_init, remove_dropout, rescale

LOSS_NAMES = (
    "d_loss",
    "d_bce",
    "d_aux",
    "d_ecal",
    "g_loss",
    "g_bce",
    "g_aux",
    "g_ecal",
    "g_phys",
    "d_p_real",
    "d_p_fake",
)  # the last two: the discriminator's mean p(real) on real / generated


@dataclass
class Losses:
    total: torch.Tensor
    bce: torch.Tensor
    aux: torch.Tensor
    ecal: torch.Tensor
    p_real: torch.Tensor  # the discriminator's p(real) per shower (detached)


def mape(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Keras mean absolute percentage error: 100 * mean(|t - p| / (|t| + eps))."""
    return 100.0 * ((target - pred.float()).abs() / (target.abs() + eps)).mean()


class Trainer:
    """Generator, discriminator, their optimizers and the update rule; one :meth:`step` per
    batch."""

    def __init__(
        self,
        cfg: TrainConfig,
        dist: Dist = Dist(),
        recipe: Recipe | None = None,
        energy_data: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """``recipe``: the model's recipe as applied to the training data (``Recipe.for_data``);
        None: the authors' recipe as published. The model's valid energy range is that of the
        generated showers of its last schedule entry (what it was trained to produce).
        ``energy_data``: the training showers' (Ep, Ecal) in GeV, to which a two-stage model's
        energy stage is fitted (``cfg.energy_stage``; None leaves it at its start)."""
        self.cfg, self.dist = cfg, dist
        self.recipe = r = recipe or get_recipe(cfg.model)
        spec = r.spec(cfg.width)
        if cfg.energy_stage:
            spec = two_stage_spec(spec)
        lo, hi = r.energy_schedule[-1][1:]
        self.spec = replace(
            spec,
            energy_range_gev=(max(spec.energy_range_gev[0], lo), min(spec.energy_range_gev[1], hi)),
        )
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        g, d = build(self.spec)
        assert d is not None, f"{self.spec.arch} has no discriminator"
        keras_init(self.shape_of(g), **KERAS_INIT.get(shape_spec(self.spec).arch, {}))
        keras_init(d)
        if cfg.init is not None:
            g, d = self._load_init(cfg.init, g, d)
        self.energy_fit: EnergyFit | None = None
        if isinstance(g, TwoStageGenerator):
            if energy_data is not None:
                self.energy_fit = fit_energy_stage(g.energy, *energy_data)
            g.energy.requires_grad_(False)  # frozen: the adversarial loss never moves the scale
            g.output_scale.fill_(r.cell_scale)  # training units
        keras_batchnorm(g)
        keras_batchnorm(d)
        if not cfg.generator_dropout:
            remove_dropout(g)
        if cfg.channels_last:
            fmt = (
                torch.channels_last_3d
                if shape_spec(self.spec).arch == "3dgan-conv3d"
                else torch.channels_last
            )
            g, d = g.to(memory_format=fmt), d.to(memory_format=fmt)
        self.g_raw, self.d_raw = g.train(), d.train()
        # what is validated and exported: an exponential moving average of the generator's
        # weights and BatchNorm statistics (GAN weights oscillate from step to step; the average
        # is the standard remedy, Yazici et al. 2019); torch's own AveragedModel
        self.g_ema = (
            AveragedModel(g, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
            if cfg.ema > 0
            else None
        )
        # DDP averages gradients over ranks in backward(); without it the modules are used
        # as they are
        self.g: nn.Module = DistributedDataParallel(g) if dist.active else g
        self.d: nn.Module = DistributedDataParallel(d) if dist.active else d
        g_params = [p for p in g.parameters() if p.requires_grad]
        if r.optimizer == "adam":
            self.opt_g = torch.optim.Adam(g_params, lr=r.lr_g, eps=r.optimizer_eps)
            self.opt_d = torch.optim.Adam(d.parameters(), lr=r.lr_d, eps=r.optimizer_eps)
        else:  # Keras RMSprop: rho 0.9 is torch's alpha
            self.opt_g = torch.optim.RMSprop(g_params, lr=r.lr_g, alpha=0.9, eps=r.optimizer_eps)
            self.opt_d = torch.optim.RMSprop(
                d.parameters(), lr=r.lr_d, alpha=0.9, eps=r.optimizer_eps
            )
        self.epoch, self.next_batch, self.step_count = 0, 0, 0
        seed_process(cfg.seed, dist.rank)
        self.set_epoch(0)

    @staticmethod
    def shape_of(g: nn.Module) -> nn.Module:
        """The network that draws the shower's shape: a two-stage model's shape network, else
        the generator itself."""
        return g.shape if isinstance(g, TwoStageGenerator) else g

    def _load_init(self, path: str, g: nn.Module, d: nn.Module) -> tuple[nn.Module, nn.Module]:
        """``--init``: a built-in model name, checkpoint or Keras file (``models.model_ref``).
        A single-stage model of the shape network's architecture initialises a two-stage
        model's shape network (and the discriminator)."""
        ck = model_ref(path).float_checkpoint()
        ours = shape_spec(self.spec) if ck.spec.arch != TWO_STAGE else self.spec

        def kw(s: Any) -> Any:
            return s.hparams.get("arch_kwargs", {})

        if ck.spec.arch != ours.arch or kw(ck.spec) != kw(ours):
            raise CaloquantError(
                f"{path}: holds a {ck.spec.arch} model {kw(ck.spec)}, "
                f"not the {self.spec.arch} {kw(self.spec)} being trained"
            )
        # checkpoints are in GeV; training runs in cells x cell_scale
        g_init, d_init = rescale(ck.generator, ck.discriminator, 1.0 / self.recipe.cell_scale)
        (g if ours is self.spec else self.shape_of(g)).load_state_dict(g_init.state_dict())
        if d_init is not None:
            d.load_state_dict(d_init.state_dict())
        return g, d

    # -- per epoch ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Learning rates, energy range and output activation of this epoch."""
        r = self.recipe
        f = r.lr_factor(epoch)
        for opt, lr in ((self.opt_g, r.lr_g), (self.opt_d, r.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * f
        self.energy_range = r.energy_range(epoch)
        if hasattr(self.g_raw, "output_slope"):
            # the warm-up is for a generator trained from scratch: one started from a trained
            # model (--init) continues with the ReLU output it was trained to (4 steps with the
            # LeakyReLU output widened conv2d-g4's transverse showers 4.6x)
            warm = epoch < r.leaky_output_epochs and self.cfg.init is None
            self.g_raw.output_slope = KERAS_LEAKY_SLOPE if warm else 0.0

    # -- building blocks (also used by the tests) -----------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw N(0, 1) noise and incident energies (GeV, uniform in this epoch's range)."""
        lo, hi = self.energy_range
        noise = torch.randn(n, self.spec.noise_dim)
        energies = torch.rand(n, dtype=torch.float64) * (hi - lo) + lo
        return noise, energies

    def labels(self, is_real: torch.Tensor) -> torch.Tensor:
        """The recipe's real/fake targets for each shower, a fraction flip_prob flipped."""
        n = len(is_real)
        t = torch.where(is_real, self.recipe.real_label, self.recipe.fake_label).float()
        flip = torch.rand(n) < self.recipe.flip_prob
        t[flip] = 1.0 - t[flip]
        return t

    def ecal_target(self, energies: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.recipe.ecal_target(energies.numpy())).float()

    def generate(
        self, module: nn.Module, noise: torch.Tensor, energies: torch.Tensor
    ) -> torch.Tensor:
        latent = condition_latent(
            noise.numpy(), energies.numpy(), self.spec
        )  # the model's own rule
        return module(torch.from_numpy(latent))

    def losses(
        self,
        disc: nn.Module,
        showers: torch.Tensor,
        target: torch.Tensor,
        energies: torch.Tensor,
        ecal_target: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> Losses:
        """The weighted three-term loss of the discriminator's outputs on ``showers``. ``context``:
        further showers in the same forward pass (they shape BatchNorm's batch statistics; their
        outputs are not part of the loss)."""
        w, eps = self.recipe.loss_weights, self.recipe.mape_eps
        n = len(showers)
        x = showers if context is None else torch.cat([showers, context.to(showers.dtype)])
        with self.autocast():
            p, aux, _ = disc(self.d_input(x))
        p, aux = p[:n], aux[:n]
        bce = F.binary_cross_entropy(p.float().clamp(1e-7, 1 - 1e-7), target)  # Keras clips to 1e-7
        aux_l = mape(aux, (energies / 100.0).float(), eps)
        ecal_l = mape(showers.float().flatten(1).sum(1), ecal_target, eps)
        return Losses(
            w[0] * bce + w[1] * aux_l + w[2] * ecal_l, bce, aux_l, ecal_l, p.detach().float()
        )

    def d_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of showers in training units: the cells to the power
        ``d_input_power`` (shifted by 1e-6 so that the gradient at an empty cell stays finite)."""
        p = self.cfg.d_input_power
        return x if p == 1.0 else (x.clamp_min(0.0) + 1e-6) ** p - 1e-6**p

    def discriminator_backward(
        self,
        showers: torch.Tensor,
        energies: torch.Tensor,
        real: bool | torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> Losses:
        """Discriminator loss on real or generated showers and its gradients (averaged over ranks).
        ``real``: True, False, or one bool per shower (a mixed batch). ``target``: the real/fake
        targets; by default the recipe's labels with random flips."""
        is_real = torch.as_tensor(real, dtype=torch.bool).expand(len(energies))
        if target is None:
            target = self.labels(is_real)
        # a real shower's ECAL target is its own sum (the term is zero), a generated one's the fit
        ecal_t = torch.where(is_real, showers.float().flatten(1).sum(1), self.ecal_target(energies))
        self.opt_d.zero_grad(set_to_none=True)
        losses = self.losses(self.d, showers, target, energies, ecal_t)
        losses.total.backward()
        return losses

    def generator_backward(
        self,
        noise: torch.Tensor,
        energies: torch.Tensor,
        context: torch.Tensor | None = None,
        real: torch.Tensor | None = None,
    ) -> tuple[Losses, float]:
        """Generator loss through the frozen discriminator and the generator's gradients, and the
        physics term (0 when off); ``context``: real showers that share the discriminator's
        forward pass (mixed batches); ``real``: the real batch, drawn at ``energies``, that the
        physics term compares with."""
        self.opt_g.zero_grad(set_to_none=True)
        # frozen: no discriminator gradients (and no DDP gradient hooks fire for its parameters)
        self.d_raw.requires_grad_(False)
        try:
            with self.autocast():
                fake = self.generate(self.g, noise, energies)
            losses = self.losses(
                self.d_raw,
                fake,
                torch.ones(len(energies)),
                energies,
                self.ecal_target(energies),
                context,
            )
            w = self.cfg.physics_loss
            phys = torch.zeros(())
            if w and real is not None:
                c = self.cfg
                scale = self.recipe.cell_scale
                phys = physics_loss(
                    fake, real, energies, scale, c.physics_layers, c.physics_layer_cells
                )
            (losses.total + w * phys).backward()
        finally:
            self.d_raw.requires_grad_(True)
        return losses, phys.item()

    def predict(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n generated showers for the discriminator (Keras ``generator.predict``: inference
        mode)."""
        noise, energies = self.draw(n)
        with torch.no_grad(), self.autocast():
            self.g_raw.eval()
            fake = self.generate(self.g_raw, noise, energies).float()
            self.g_raw.train()
        return fake, energies

    # -- one batch ------------------------------------------------------------------------
    def step(self, showers: np.ndarray, energies: np.ndarray) -> dict[str, float]:
        """One batch of this rank's real showers (training units) -> loss values."""
        x, e = torch.from_numpy(showers), torch.from_numpy(energies)
        n = len(e)
        if self.recipe.mixed_batches:
            fake, e_fake = self.predict(n)
            is_real = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
            d_both = self.discriminator_backward(
                torch.cat([x, fake]), torch.cat([e, e_fake]), is_real
            )
            self.opt_d.step()
            d_terms = {
                "d_loss": d_both.total.item(),
                "d_bce": d_both.bce.item(),
                "d_aux": d_both.aux.item(),
                # generated showers vs the ECAL fit: the real half's term is 0 by construction
                "d_ecal": 2.0 * d_both.ecal.item(),
                "d_p_real": d_both.p_real[:n].mean().item(),
                "d_p_fake": d_both.p_real[n:].mean().item(),
            }
            context: torch.Tensor | None = x
        else:
            d_real = self.discriminator_backward(x, e, real=True)
            self.opt_d.step()
            fake, e_fake = self.predict(n)
            d_fake = self.discriminator_backward(fake, e_fake, real=False)
            self.opt_d.step()
            d_terms = {
                "d_loss": (d_real.total.item() + d_fake.total.item()) / 2,
                "d_bce": (d_real.bce.item() + d_fake.bce.item()) / 2,
                "d_aux": (d_real.aux.item() + d_fake.aux.item()) / 2,
                # generated showers vs the ECAL fit (the real term is 0)
                "d_ecal": d_fake.ecal.item(),
                "d_p_real": d_real.p_real.mean().item(),
                "d_p_fake": d_fake.p_real.mean().item(),
            }
            context = None
        g_losses, g_phys = [], []
        for _ in range(self.recipe.g_steps):
            noise, e_g = self.draw(n)
            if self.cfg.physics_loss:  # generated at the real batch's energies, compared with it
                e_g = e  # (drawn all the same: the random stream is the one without the term)
            losses, phys = self.generator_backward(noise, e_g, context, real=x)
            g_losses.append(losses)
            g_phys.append(phys)
            self.opt_g.step()
        if self.g_ema is not None:
            self.g_ema.update_parameters(self.g_raw)
        self.step_count += 1
        self.next_batch += 1
        out = {
            **d_terms,
            "g_loss": float(np.mean([lg.total.item() for lg in g_losses])),
            "g_bce": float(np.mean([lg.bce.item() for lg in g_losses])),
            "g_aux": float(np.mean([lg.aux.item() for lg in g_losses])),
            "g_ecal": float(np.mean([lg.ecal.item() for lg in g_losses])),
            "g_phys": float(np.mean(g_phys)),
        }
        bad = [k for k, v in out.items() if not np.isfinite(v)]
        if bad:
            raise CaloquantError(
                f"training diverged at step {self.step_count}: {bad[0]} is {out[bad[0]]}; "
                "the last checkpoint was written before this step"
            )
        return out

    # -- state ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "generator": self.g_raw.state_dict(),
            "discriminator": self.d_raw.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "generator_ema": None if self.g_ema is None else self.g_ema.state_dict(),
            "epoch": self.epoch,
            "next_batch": self.next_batch,
            "step": self.step_count,
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.g_raw.load_state_dict(st["generator"])
        self.d_raw.load_state_dict(st["discriminator"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        if self.g_ema is not None:
            self.g_ema.load_state_dict(st["generator_ema"])
        self.epoch, self.next_batch, self.step_count = st["epoch"], st["next_batch"], st["step"]
        self.set_epoch(self.epoch)

    def export(self) -> tuple[nn.Module, nn.Module]:
        """Copies of generator (its moving average when ``ema``) and discriminator in GeV, in
        eval mode, with the deployed ReLU output."""
        g_src = self.g_raw if self.g_ema is None else self.g_ema.module
        g, d = rescale(g_src, self.d_raw, self.recipe.cell_scale)
        assert d is not None
        if hasattr(g, "output_slope"):
            g.output_slope = 0.0
        return g.eval(), d.eval()
