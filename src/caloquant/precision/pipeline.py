"""One quantize run as an object: what it starts from, the graphs it may try, and what it
reports.

:class:`QuantizePipeline` holds the state of one :func:`caloquant.precision.quantize` call:
the fp32 model and its paired evaluation showers, the calibration latents, the graphs of the
same function (the exact sub-pixel rewrite, equalized graphs, fine-tuned graphs) that the
:class:`~caloquant.precision.tuner.Tuner` builds engines from on demand, and, once the tuner
has chosen, the speeds timed side by side and the typed
:class:`~caloquant.precision.manifest.Manifest`.
Which steps run is the configuration's to say (``QuantizeConfig.searches_int8``,
``QuantizeConfig.confirms``), in one place each.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant.models import Checkpoint, ModelSpec, condition_latent, weights_digest
from caloquant.precision.backends import Backend, make_backend
from caloquant.precision.canary import make_canary
from caloquant.precision.config import QuantizeConfig
from caloquant.precision.evaluation import EvalSet, run_batched
from caloquant.precision.manifest import ARTIFACT_VERSION, Manifest
from caloquant.precision.trial import Trial
from caloquant.precision.tuner import Tuner
from caloquant.timing import interleaved
from caloquant.version import __version__

log = logging.getLogger(__name__)

# the fp32 showers of the evaluation sets of recent quantize calls in this process, by (weights,
# spec, set): a study quantizes one model to several precisions, and making the 2 x 1,000 fp32
# reference showers is ~15 s of every call on the CERN 3DGAN (2 cores); a few sets of ~60 MB each
_EVAL_SETS: dict[tuple[Any, ...], EvalSet] = {}
_EVAL_SETS_MAX = 4


def calibration_latents(spec: ModelSpec, n: int, seed: int) -> np.ndarray:
    """Latents over the model's valid energy range (uniform Ep), raw N(0,1) noise, conditioned."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xCA11B])))
    e = rng.uniform(*spec.energy_range_gev, size=n)
    return condition_latent(rng.standard_normal((n, spec.noise_dim), dtype=np.float32), e, spec)


def _deviation(module: torch.nn.Module, ev: EvalSet) -> float:
    """Largest |module - fp32| over (up to) 500 evaluation showers, relative to the largest cell."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    n = min(len(ev.latents), 500)
    out = run_batched(run, ev.latents[:n], 100).reshape(ev.reference[:n].shape)
    return float(
        np.max(np.abs(out - ev.reference[:n])) / max(float(np.max(np.abs(ev.reference[:n]))), 1e-30)
    )


def frontier(trials: list[Trial], baseline_showers_per_s: float) -> list[dict[str, Any]]:
    """Speed against worst deviation, technique by technique (the tuner's steps in order):
    per step, how many trials passed, the most int8 units a passing trial reached, the
    fastest passing trial (its speed also against ``baseline_showers_per_s``, PyTorch fp32;
    single timings or the final race's medians) and the failing trial closest to passing."""
    out: list[dict[str, Any]] = []
    own = [t for t in trials if t.step and not t.config.get("external")]
    for step in dict.fromkeys(t.step for t in own):
        ts = [t for t in own if t.step == step]
        ok = [t for t in ts if t.passes and t.speed]
        row: dict[str, Any] = {
            "technique": step,
            "trials": len(ts),
            "passing": sum(t.passes for t in ts),
            "most_int8_units_passing": max(
                (len(t.config.get("int8_units", [])) for t in ts if t.passes), default=None
            ),
        }
        if ok:
            f = max(ok, key=lambda t: t.speed["showers_per_s"])  # type: ignore[index]
            row["fastest_passing"] = {
                "name": f.name,
                "showers_per_s": f.speed["showers_per_s"],  # type: ignore[index]
                "speedup_vs_torch_fp32": f.speed["showers_per_s"] / baseline_showers_per_s,  # type: ignore[index]
                "worst_ecal_rel": f.score["worst_ecal_rel"],
                "worst_moment_shift": f.score["worst_moment_shift"],
                "int8_units": len(f.config.get("int8_units", [])),
            }
        bad = [t for t in ts if not t.passes]
        if bad:
            c = min(bad, key=lambda t: t.badness)
            row["closest_failing"] = {
                "name": c.name,
                "badness": c.badness,
                "worst_ecal_rel": c.score["worst_ecal_rel"],
                "worst_moment_shift": c.score["worst_moment_shift"],
            }
        out.append(row)
    return out


class QuantizePipeline:
    """The state of one quantize run (see the module docstring); :meth:`run` does it."""

    def __init__(self, ckpt: Checkpoint, cfg: QuantizeConfig, source: str = "") -> None:
        from caloquant.precision.backends.torch_backend import TorchModel, weight_layers

        self.t_start = time.perf_counter()
        self.cfg, self.source, self.spec = cfg, source, ckpt.spec
        self.gen = ckpt.generator.eval()
        self.fp32 = TorchModel(
            self.gen, "fp32", cfg.threads, {n: "fp32" for n in weight_layers(self.gen)}
        )
        self.ev = self.eval_set(0)
        self.calib = calibration_latents(self.spec, cfg.calib_n, cfg.seed)
        log.info(
            "evaluation: %d paired showers at %s GeV; calibration: %d latents",
            len(self.ev.energies),
            ", ".join(f"{p:g}" for p in self.ev.points),
            cfg.calib_n,
        )
        module, self.rewrite = self.rewritten(self.gen)
        self.modules: dict[str, torch.nn.Module] = {
            "original": module
        }  # graph name -> float module
        self.equalization: dict[str, Any] = {}  # equalized graph name -> what equalization did
        self.finetuned: dict[str, Any] = {}  # fine-tuned graph name -> what QAT did

    # -- what the run starts from ------------------------------------------------------------
    def eval_set(self, stream: int) -> EvalSet:
        """``EvalSet.build`` for this generator's weights (stream 0: tuning, 1: confirmation),
        reused within the process."""
        cfg = self.cfg
        key = (
            weights_digest(self.gen),
            json.dumps(self.spec.to_dict(), sort_keys=True),
            cfg.eval_n_per_point,
            cfg.seed,
            cfg.eval_energies_gev,
            stream,
        )
        if key not in _EVAL_SETS:
            while len(_EVAL_SETS) >= _EVAL_SETS_MAX:
                _EVAL_SETS.pop(next(iter(_EVAL_SETS)))
            _EVAL_SETS[key] = EvalSet.build(
                self.spec,
                self.fp32,
                cfg.eval_n_per_point,
                cfg.seed,
                cfg.eval_energies_gev,
                stream=stream,
            )
        return _EVAL_SETS[key]

    def rewritten(self, gen: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The exact sub-pixel rewrite (``QuantizeConfig.rewrites``), checked against the
        original on the evaluation latents; otherwise the original graph."""
        if not self.cfg.rewrites:
            return gen, {"convs": []}
        from caloquant.precision.rewrite import fuse_upsample_conv

        module, convs = fuse_upsample_conv(gen)
        if not convs:
            return gen, {"convs": []}
        dev = _deviation(module, self.ev)
        if dev > 1e-4:  # float32 rounding is ~1e-6; anything larger would be a bug: do not use it
            log.warning("sub-pixel rewrite of %s deviates by %.1e; not used", ", ".join(convs), dev)
            return gen, {"convs": [], "rejected": convs, "max_rel_deviation": dev}
        log.info(
            "exact rewrite: upsample + conv -> sub-pixel conv for %s "
            "(max deviation %.1e of the largest cell)",
            ", ".join(convs),
            dev,
        )
        return module, {"convs": convs, "max_rel_deviation": dev}

    def backend(self, graph: str = "original") -> Backend:
        return make_backend(
            self.cfg.backend, self.modules[graph], self.spec.latent_dim, self.cfg.threads
        )

    # -- graphs the tuner builds on demand ------------------------------------------------------
    def equalized(self, alpha: float) -> Backend | None:
        """The graph with the convolution inputs' ranges moved into the weights (exactly the same
        function, or None)."""
        from caloquant.precision.equalize import equalize

        eq, info = equalize(
            self.gen,
            lambda m: run_batched(lambda z: m(torch.from_numpy(z)).numpy(), self.calib, 100),
            alpha,
        )
        name = f"equalized alpha={alpha:g}"
        mod = self.rewritten(eq)[0] if self.rewrite["convs"] else eq
        if (dev := _deviation(mod, self.ev)) > 1e-4:  # the same function or nothing
            log.warning("%s deviates by %.1e from the original; not used", name, dev)
            return None
        self.modules[name], self.equalization[name] = mod, info
        return self.backend(name)

    def graphs(self) -> dict[str, Any]:
        """Other graphs of the same function, by name, built on demand (physics int8 only)."""
        if not self.cfg.searches_int8:
            return {}
        return {
            f"equalized alpha={a:g}": (lambda a=a: self.equalized(a))
            for a in self.cfg.equalize_alphas
        }

    def finetune(
        self, base: str, name: str, units: list[str], cal: str, minutes: float, budget_left_s: float
    ) -> tuple[Backend | None, dict[str, Any]]:
        """Quantization-aware fine-tuning of graph ``base`` with ``units`` in int8 into graph
        ``name``: its backend (None when it diverged) and what the fine-tuning did. A diverged
        run is tried once more from the same start with a 10x smaller step."""
        from caloquant.fileio import cache_root
        from caloquant.precision.qat import finetune, state_key

        cfg = self.cfg
        left = max(budget_left_s, 1.0) / 60  # what the tuning budget leaves
        q = replace(cfg.qat, minutes=min(minutes, left) if minutes > 0 else left)
        module = self.modules[base]

        def plan(m: torch.nn.Module) -> Any:
            return make_backend(cfg.backend, m, self.spec.latent_dim, cfg.threads).fake_quant_plan(
                self.calib, units, cal
            )

        def run(q: Any) -> tuple[Any, Path]:
            state = (
                Path(cfg.qat.state_dir or cache_root() / "qat")
                / f"{state_key(module, units, cal, q, cfg.tolerance)}.pt"
            )
            log.info("  %s: up to %.1f min, lr %.2g (state %s)", name, q.minutes, q.lr, state)
            r = finetune(
                module,
                plan,
                lambda n, seed: calibration_latents(self.spec, n, seed),
                q,
                cfg.tolerance,
                state,
            )
            log.info(
                "  %d steps in %.0f s%s: loss %.3g -> %.3g",
                r.steps,
                r.seconds,
                f" (resumed at step {r.resumed_from_step})" if r.resumed_from_step else "",
                r.loss_first,
                r.loss_last,
            )
            return r, state

        res, state = run(q)
        first = None
        if res.diverged and q.minutes - res.seconds / 60 > 0.05:
            # once more from the same start with a 10x smaller step (CERN conv4 diverged within
            # 30 steps at 1e-4), within what is left of this unit's share
            first = res.info() | {"lr": q.lr}
            q = replace(q, lr=q.lr / 10, minutes=q.minutes - res.seconds / 60)
            res, state = run(q)
        info = res.info() | {"state": str(state), "units": units, "calibration": cal, "lr": q.lr}
        if first is not None:
            info["diverged_first"] = first
        if res.module is None:
            return None, info
        self.modules[name], self.finetuned[name] = res.module, info
        return make_backend(cfg.backend, res.module, self.spec.latent_dim, cfg.threads), info

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> Any:
        """Tune, confirm, time side by side, and describe: a ``QuantizeResult``."""
        from caloquant.precision.artifact import QuantizeResult

        cfg = self.cfg
        tuner = Tuner(
            self.backend(),
            self.ev,
            self.calib,
            cfg,
            self.graphs(),
            confirm_set=(lambda: self.eval_set(1)) if cfg.confirms else None,
            qat=self.finetune if cfg.searches_int8 and cfg.qat.enabled else None,
        )
        chosen = tuner.run()
        head: list[Trial] = []
        missing: list[dict[str, str]] = []
        if cfg.searches_int8 and cfg.head_to_head:  # on the working graph
            from caloquant.precision.head_to_head import head_to_head

            head, missing = head_to_head(tuner, self.modules[tuner.graph], self.spec.latent_dim)
        if cfg.confirms and chosen.passes and chosen.confirmation is None:
            tuner.confirm(chosen)
        # the reported speeds: baseline, the engine's fp32 of the same graph, the choice and every
        # comparison, timed in the same interleaved rounds
        fns: dict[str, Any] = {
            "baseline": self.fp32,
            # candidate zero is that model where the working graph is still the one it was built on
            "engine_fp32": tuner.exact.model
            if tuner.exact is not None and tuner.exact.config["graph"] == tuner.graph
            else tuner.backend.float_model("fp32"),
            "chosen": chosen.model,
        }
        fns |= {f"head{i}": t.model for i, t in enumerate(head) if t.speed is not None}
        log.info(
            "speed: %d models timed in %d interleaved rounds (batch %d, %s threads)",
            len(fns),
            cfg.timing.rounds,
            cfg.batch,
            cfg.threads,
        )
        timed = interleaved(fns, self.ev.latents[: cfg.batch], cfg.timing)
        chosen.speed = dict(chosen.speed or {}, **timed["chosen"])
        for i, t in enumerate(head):
            if f"head{i}" in timed:
                t.speed = dict(t.speed or {}, **timed[f"head{i}"])
        canary, self_check = make_canary(
            self.spec,
            self.fp32,
            lambda z: np.asarray(chosen.model(z)).reshape(len(z), *self.spec.grid),
            cfg.tolerance.ecal_rel,
            cfg.tolerance.moment_shift,
        )
        manifest = self.manifest(tuner, chosen, timed, head, missing, self_check)
        return QuantizeResult(
            self.spec, chosen.model, manifest, chosen, tuner.trials, timed["baseline"], canary
        )

    def manifest(
        self,
        tuner: Tuner,
        chosen: Trial,
        timed: dict[str, Any],
        head: list[Trial],
        missing: list[dict[str, str]],
        self_check: dict[str, Any],
    ) -> Manifest:
        cfg = self.cfg
        baseline = timed["baseline"]

        def per(k: str) -> float:
            return float(chosen.speed["showers_per_s"] / timed[k]["showers_per_s"])  # type: ignore[index]

        graph = chosen.config.get("graph", "original")
        return Manifest(
            caloquant_artifact=ARTIFACT_VERSION,
            caloquant_version=__version__,
            source_model=self.source,
            spec=self.spec,
            backend=cfg.backend,
            precision=chosen.config.get("precision", cfg.precision),
            requested_precision=cfg.precision,
            executed_precision=chosen.model.executed_precision(),
            recipe=cfg.recipe,
            backend_options=chosen.model.options(),
            float_precision=chosen.config.get(
                "float_precision", cfg.precision if cfg.precision != "int8" else "fp32"
            ),
            f32_from=chosen.config.get("f32_from"),
            layer_precisions=chosen.model.layer_precisions,
            calibration={
                "method": chosen.config.get("calibration"),
                "n": cfg.calib_n,
                "seed": cfg.seed,
            }
            if chosen.config.get("precision") == "int8"
            else None,
            tolerance=cfg.tolerance.to_dict(),
            meets_tolerance=chosen.ok,
            confirmation=chosen.confirmation,
            physics={k: v for k, v in chosen.score.items() if k != "points"}
            | {"points": chosen.score.get("points", [])},
            speed={
                "showers_per_s": chosen.speed["showers_per_s"],  # type: ignore[index]
                "baseline_torch_fp32_showers_per_s": baseline["showers_per_s"],
                "speedup_vs_torch_fp32": per("baseline"),
                f"speedup_vs_{cfg.backend}_fp32_same_graph": per("engine_fp32"),
                "batch": cfg.batch,
                "threads": cfg.threads,
                "timing": cfg.timing.to_dict(),
                "chosen_rounds": chosen.speed.get("rounds"),
                "baseline_rounds": baseline.get("rounds"),  # type: ignore[union-attr]
                "engine_fp32_rounds": timed["engine_fp32"]["rounds"],
                "method": "caloquant.timing: median over interleaved rounds; "
                "each round: median call time over a window",
            },
            self_check=self_check,
            fp32_param_bytes=sum(p.numel() * 4 for p in self.gen.parameters())
            + sum(b.numel() * 4 for b in self.gen.buffers()),
            config=cfg.to_dict(),
            head_to_head=[
                {
                    "name": t.name,
                    "meets_tolerance": t.passes,
                    "worst_ecal_rel": t.score["worst_ecal_rel"],
                    "worst_moment_shift": t.score["worst_moment_shift"],
                    "layer_precisions": t.model.layer_precisions,
                    "speedup_vs_torch_fp32": t.speed["showers_per_s"] / baseline["showers_per_s"]
                    if t.speed
                    else None,
                    "seconds": round(t.seconds, 1),
                }
                for t in head
            ]
            + [{"name": m["name"], "error": m["error"]} for m in missing],
            rewrite=self.rewrite
            | {
                "graph": graph,
                "equalization": self.equalization.get(graph.split("+qat")[0]),
                "qat": self.finetuned.get(graph),
            },
            qat=tuner.qat_info,
            # speed against worst deviation, technique by technique (the tuner's steps)
            frontier=frontier(tuner.trials, baseline["showers_per_s"])
            if cfg.searches_int8
            else None,
            int8_search=tuner.search,
            race=tuner.race_info,
            skipped_precisions=tuner.skipped_precisions,
            tuning_seconds=round(time.perf_counter() - self.t_start, 1),
        )
