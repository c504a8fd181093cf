"""Quantization-aware fine-tuning (QAT) against the fp32 model, without data.

Post-training int8 leaves the weights as they were trained for float32; QAT lets them adapt to
the engine's int8 arithmetic. The teacher is the float32 generator itself: every step draws
fresh latents over the model's energy range, the teacher makes the target showers, and a copy
of the generator (the student) makes the same showers through the *engine's* int8 arithmetic,
simulated in torch:

* the engine states its int8 scheme as a plan (:class:`~caloquant.precision.backends.FakeQuant`:
  each int8 unit's input range and levels, and its weight grid), read off the engine's own
  quantized model, so the simulation is the engine's formula, not a generic one;
* inputs go through the engine's FakeQuantize formula and weights through its per-channel
  grid, with straight-through gradients (the rounding passes the gradient unchanged inside the
  range, clamping stops it outside);
* the activation ranges are re-read from the engine every ``refresh_every`` steps on the
  current weights (the engine's calibration of the final weights is what will run);
* sub-pixel-rewritten convolutions are trained through their compact kernel (the folded kernel
  stays a sum of the original taps, so the artifact can still store it compactly).

The loss: relative mean squared error of the cells, plus each shower's physics deviations from its
paired fp32 shower in units of the tolerance: the Ecal ratio, the mean and width of the shower along
each axis, and the relative number of hit cells (a smooth count; the final ReLU turns int8 noise
into lit cells; relative like the cells, the tolerance has no hit term), plus the *mean* deviations
of groups of showers of similar energy weighted by the group size (the tolerance judges means; see
:func:`qat_loss`). A physics deviation at the tolerance costs as much as a cell error of 100 %.

Nothing here decides what ships: the tuner builds the engine's real int8 model from the
fine-tuned weights and checks the tolerance on it, and a run whose loss diverges returns
nothing (the post-training result stands). The run is time-boxed, checkpointed atomically and
resumed by the same call (the state is keyed by the model, the units and the settings).

Why by hand: NNCF's PyTorch QAT and torchao's QAT insert generic fake-quantizers of their own
scheme; the int8 model that runs here is made by the engine from a float model (NNCF on
OpenVINO IR), so what QAT must match is that engine's arithmetic, including its per-layer
overflow-fix weight grid, which no library exposes for training.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path
from caloquant.models import weights_digest
from caloquant.physics import (
    AUTHORS_HIT_THRESHOLD_GEV as HIT_THRESHOLD_GEV,  # the authors' hits (ROOTutils.get_hits)
)
from caloquant.precision.backends import FakeQuant
from caloquant.precision.config import QATConfig, Tolerance
from caloquant.precision.rewrite import UpsampledConv, rewritten_convs

log = logging.getLogger(__name__)
STATE_VERSION = 1
SMOOTH = 10  # steps averaged for the divergence check (and for the starting level)


# -- the engine's arithmetic, in torch ----------------------------------------------------
def fake_quantize(x: torch.Tensor, low: float, high: float, levels: int) -> torch.Tensor:
    """The engine's FakeQuantize (input range = output range): clamp, ``levels`` even steps;
    straight-through gradient inside the range."""
    step = (high - low) / (levels - 1)
    xc = x.clamp(low, high)
    q = torch.round((xc - low) / step) * step + low
    return xc + (q - xc).detach()


class WeightGrid(nn.Module):
    """Per-output-channel symmetric weight quantization: scale_c = max|w_c| / ratio_c, integers
    clamped to +-bound_c (a parametrization of ``weight``)."""

    def __init__(self, ratio: Sequence[float], bound: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("ratio", torch.tensor(ratio, dtype=torch.float32))
        self.register_buffer("bound", torch.tensor(bound, dtype=torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (w.dim() - 1)
        scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-30) / self.ratio).view(shape)
        b = self.bound.view(shape)
        q = torch.minimum(torch.maximum(torch.round(w / scale), -b), b) * scale
        return w + (q - w).detach()


class CompactKernel(nn.Module):
    """The folded kernel of a sub-pixel convolution as a function of its compact kernel, so
    training keeps it a sum of the original taps (a parametrization that owns the parameter)."""

    def __init__(self, m: UpsampledConv) -> None:
        super().__init__()
        eq, operands, shape = m.compact_weight_recipe()
        self.eq, self.shape = eq, shape
        for i, t in enumerate(operands[:-1]):
            self.register_buffer(f"phase{i}", t.detach().clone().float())
        self.n = len(operands) - 1
        self.source = nn.Parameter(operands[-1].detach().clone().float())

    def forward(self, _unused: torch.Tensor) -> torch.Tensor:
        mats = [getattr(self, f"phase{i}") for i in range(self.n)]
        return torch.einsum(self.eq, *mats, self.source).reshape(self.shape)


class Student:
    """A copy of the generator that computes through the engine's int8 arithmetic for ``plan``."""

    def __init__(self, module: nn.Module, plan: Sequence[FakeQuant]) -> None:
        self.base = copy.deepcopy(module).eval()
        self.module = copy.deepcopy(module).eval()
        self.compact = rewritten_convs(self.module)
        mods = dict(self.module.named_modules())
        for m in self.compact.values():
            parametrize.register_parametrization(m.conv, "weight", CompactKernel(m), unsafe=True)
            m.conv.parametrizations.weight.original.requires_grad_(False)
        self.ranges: dict[str, tuple[float, float, int]] = {}
        for fq in plan:
            if fq.module not in mods:
                raise CaloquantError(
                    f"QAT plan names module '{fq.module}', which the generator does not have"
                )
            target = mods[fq.module]
            if fq.weight_ratio and not any(isinstance(p, WeightGrid) for p in _params_of(target)):
                parametrize.register_parametrization(
                    target, "weight", WeightGrid(fq.weight_ratio, fq.weight_bound)
                )
            if fq.module not in self.ranges:
                target.register_forward_pre_hook(self._hook(fq.module))
            self.ranges[fq.module] = (fq.low, fq.high, fq.levels)

    def _hook(self, name: str) -> Callable[..., Any]:
        def pre(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            low, high, levels = self.ranges[name]
            return (fake_quantize(args[0], low, high, levels), *args[1:])

        return pre

    def set_ranges(self, plan: Sequence[FakeQuant]) -> None:
        for fq in plan:
            self.ranges[fq.module] = (fq.low, fq.high, fq.levels)

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def float_module(self) -> nn.Module:
        """The fine-tuned generator in float: no quantizers, compact kernels folded again.
        Built from a clean copy (removing a parametrization from a deep copy would strip the
        shared parametrized class of the student itself)."""
        out = copy.deepcopy(self.base)
        values: dict[str, torch.Tensor] = {}
        compact: dict[str, torch.Tensor] = {}
        for key, v in self.module.state_dict().items():
            if ".parametrizations.weight." not in key:
                values[key] = v
                continue
            owner, rest = key.split(".parametrizations.weight.")
            if rest == "0.source" and owner.removesuffix(".conv") in self.compact:
                compact[owner.removesuffix(".conv")] = v.detach().clone()
            elif rest == "original" and owner.removesuffix(".conv") not in self.compact:
                values[f"{owner}.weight"] = v
        mods = dict(out.named_modules())
        for name, src in compact.items():
            m = mods[name]
            assert isinstance(m, UpsampledConv)
            m.source_weight = src
            values[f"{name}.conv.weight"] = torch.einsum(
                m.compact_weight_recipe()[0], *m.phase_mats, src
            ).reshape(m.conv.weight.shape)
        out.load_state_dict(values)
        for p in out.parameters():
            p.requires_grad_(False)
        return out.eval()


def _params_of(m: nn.Module) -> list[nn.Module]:
    return list(m.parametrizations.weight) if parametrize.is_parametrized(m, "weight") else []


# -- the loss -------------------------------------------------------------------------------
def _profile_moments(s: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-weighted mean and width (cells) of each shower along ``axis`` (1, 2 or 3)."""
    other = tuple(d for d in range(1, s.dim()) if d != axis)
    prof = s.sum(other)
    e = prof.sum(1, keepdim=True).clamp_min(1e-12)
    idx = torch.arange(prof.shape[1], dtype=s.dtype)
    p = prof / e
    mean = (p * idx).sum(1)
    width = torch.sqrt(((p * idx**2).sum(1) - mean**2).clamp_min(1e-12))
    return mean, width


def qat_loss(
    student: torch.Tensor, teacher: torch.Tensor, tol: Tolerance, groups: int = 0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cells (relative MSE) plus the physics deviations of each shower from its paired fp32
    shower, in units of the tolerance (per shower, so that deviations of opposite sign at
    different energies cannot cancel).

    ``groups`` > 0 adds the *mean* deviations of groups of showers of similar energy (the batch
    sorted by the fp32 shower's energy, split into ``groups`` equal parts), each squared and
    weighted by the group's size m. Why: the tolerance judges the mean per energy point, and
    int8 noise moves single showers far more than that; the per-shower square (b + e)^2 has
    the bias b and the noise e in one term, and its minimisation spends its steps on the noise
    (docs/findings.md 8b: conv2 plateaus at 1.3 % Ecal). m * mean^2 keeps the noise at the
    per-shower level (its variance is e^2 / m) while the bias counts m times."""
    dims = tuple(range(1, teacher.dim()))
    cells = ((student - teacher) ** 2).mean() / (teacher**2).mean().clamp_min(1e-30)
    ecal = (student.sum(dims) / teacher.sum(dims).clamp_min(1e-30) - 1) / tol.ecal_rel
    shifts = []
    for ax in dims:
        ms, ws = _profile_moments(student, ax)
        mt, wt = _profile_moments(teacher, ax)
        shifts += [(ms - mt) / tol.moment_shift, (ws - wt) / tol.moment_shift]
    moments = torch.stack(shifts)  # (terms, showers)
    width = HIT_THRESHOLD_GEV / 4  # a smooth hit count: 0.5 at the threshold, ~1 a few widths above

    def hits(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid((x - HIT_THRESHOLD_GEV) / width).sum(dims)

    # the tolerance says nothing about hits: relative, like the cells (int8 noise can move the count
    # of a shower by tens of per cent, which on the Ecal tolerance's scale would drown the rest)
    hit_rel = hits(student) / hits(teacher).clamp_min(1.0) - 1
    loss = cells + (hit_rel**2).mean() + (ecal**2).mean() + (moments**2).mean()
    parts = {
        "cells": float(cells.detach()),
        "ecal_rms": float(ecal.detach().pow(2).mean().sqrt()),
        "moments_rms": float(moments.detach().pow(2).mean().sqrt()),
        "hits_rms": float(hit_rel.detach().pow(2).mean().sqrt()),
    }
    if groups > 0:
        order = torch.argsort(teacher.sum(dims))
        devs = torch.cat([ecal[None], moments])[:, order]  # (terms, showers), by energy
        means = torch.stack(
            [g.mean(1) for g in torch.tensor_split(devs, groups, dim=1)], 1
        )  # (terms, groups)
        size = devs.shape[1] / groups
        bias = size * (means**2).mean()
        loss = loss + bias
        parts["bias_max"] = float(
            means.detach().abs().max()
        )  # worst group-mean deviation, tolerance units
    return loss, parts


# -- the run --------------------------------------------------------------------------------
@dataclass
class QATResult:
    """``module``: the fine-tuned float generator (None when the run diverged)."""

    module: nn.Module | None
    steps: int
    seconds: float
    diverged: bool
    resumed_from_step: int
    loss_first: float
    loss_last: float
    history: list[dict[str, float]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "diverged": self.diverged,
            "resumed_from_step": self.resumed_from_step,
            "loss_first": self.loss_first,
            "loss_last": self.loss_last,
        }


def state_key(
    module: nn.Module, units: Sequence[str], calibration: str, cfg: QATConfig, tol: Tolerance
) -> str:
    """What a QAT run depends on: the weights, the units, the calibration, the settings (not the
    budget)."""
    h = hashlib.sha256(weights_digest(module).encode())
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("minutes", "state_dir")}
    h.update(
        json.dumps(
            {
                "units": sorted(units),
                "calibration": calibration,
                "cfg": settings,
                "tol": tol.to_dict(),
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()[:20]


def finetune(
    module: nn.Module,
    plan_fn: Callable[[nn.Module], list[FakeQuant]],
    latents_fn: Callable[[int, int], np.ndarray],
    cfg: QATConfig,
    tol: Tolerance,
    state: Path | None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> QATResult:
    """Fine-tune a copy of ``module`` through the engine's int8 arithmetic (``plan_fn(float
    module)`` gives the plan on given weights); ``latents_fn(n, seed)`` draws conditioned
    latents. ``state``: the checkpoint file (resumed when it exists; None: no checkpoints)."""
    teacher = module.eval()
    plan = plan_fn(teacher)
    if not plan:
        raise CaloquantError("QAT: the engine's plan quantizes nothing for these units")
    student = Student(teacher, plan)  # weight grids from the starting weights, on a resume too
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    step, elapsed0, history = 0, 0.0, []
    loss_ref: float | None = None
    done = False
    if state is not None and state.exists():
        st = _load_state(state)
        student.module.load_state_dict(st["student"])
        opt.load_state_dict(st["optimizer"])
        step, elapsed0, history, loss_ref = (
            st["step"],
            st["elapsed_s"],
            st["history"],
            st["loss_ref"],
        )
        plan = [
            FakeQuant(**{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
            for p in st["plan"]
        ]
        student.set_ranges(plan)
        done = bool(st.get("done"))
        log.info(
            "  QAT: %s run found at step %d, %s",
            "finished" if done else "interrupted",
            step,
            "reused" if done else "resumed",
        )
    resumed = step
    t0 = time.perf_counter()
    diverged = False

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - t0

    def save(final: bool = False) -> None:
        if state is None:
            return
        state.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(state, suffix=".pt") as tmp:
            torch.save(
                {
                    "qat_state": STATE_VERSION,
                    "student": student.module.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "elapsed_s": elapsed(),
                    "history": history,
                    "loss_ref": loss_ref,
                    "plan": [asdict(p) for p in plan],
                    "done": final,
                },
                tmp,
            )

    while not done:
        if (cfg.max_steps is not None and step >= cfg.max_steps) or (
            cfg.minutes > 0 and elapsed() > 60 * cfg.minutes
        ):
            break
        if step and step % cfg.refresh_every == 0:  # the engine's ranges on the current weights
            plan = plan_fn(student.float_module())
            student.set_ranges(plan)
        z = torch.from_numpy(
            np.ascontiguousarray(
                latents_fn(cfg.batch, cfg.seed * 1_000_003 + step), dtype=np.float32
            )
        )
        with torch.no_grad():
            target = teacher(z)
        loss, parts = qat_loss(student.module(z), target, tol, cfg.bias_groups)
        value = float(loss.detach())
        recent = [h["loss"] for h in history[-(SMOOTH - 1) :]] + [value]
        if len(history) == SMOOTH - 1:
            loss_ref = float(np.mean(recent))  # the starting level: mean of the first steps
        smooth = float(np.mean(recent))
        # before the starting level exists, a run is measured against its first loss (before any
        # update) with the square of the factor: a healthy start may spike (the factor-1000 test
        # model: 1,026 -> 28,795 at step 7, mean of the window 5.6x, back to 150 by step 30), a
        # learning rate that is far too large multiplies the loss by 1e15 at the first update
        first = history[0]["loss"] if history else value
        limit = (
            cfg.diverge_factor * loss_ref if loss_ref is not None else cfg.diverge_factor**2 * first
        )
        if not math.isfinite(value) or smooth > limit:
            diverged = True
            log.info(
                "  QAT diverged at step %d (loss %.3g over the last %d steps, start %.3g): "
                "the post-training result stands",
                step,
                smooth,
                len(recent),
                loss_ref or float("nan"),
            )
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        history.append({"step": step, "loss": value, **parts})
        if on_step is not None:
            on_step(step, parts | {"loss": value})
        if step % cfg.checkpoint_every == 0:
            save()
    if not diverged and not done:
        save(final=True)
    losses = [h["loss"] for h in history]
    return QATResult(
        None if diverged else student.float_module(),
        step,
        elapsed(),
        diverged,
        resumed,
        losses[0] if losses else float("nan"),
        float(np.mean(losses[-10:])) if losses else float("nan"),
        history[-200:],
    )


def _load_state(path: Path) -> dict[str, Any]:
    try:
        st = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind
        raise CaloquantError(
            f"{path}: unreadable QAT state ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(st, dict) or st.get("qat_state") != STATE_VERSION:
        raise CaloquantError(
            f"{path}: not a caloquant QAT state (or of another version); delete it to start over"
        )
    return st
