"""`quantize`: build a reduced-precision variant of a generator in memory, with its physics
evidence; `QuantizeResult.save`: write it as an artifact directory; `load_artifact`: run a
saved variant as a ShowerGenerator, after checking it on this CPU.

An artifact directory holds the engine's model files, ``canary.npz`` (the self-check, see
``canary``), ``manifest.json`` (spec, precisions requested and executed, physics, speed,
sha256 of every file, the self-check thresholds) and ``tuning_log.json`` (every trial).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant.errors import CaloquantError
from caloquant.fileio import file_sha256, umask_mode, write_json
from caloquant.models import Checkpoint, ModelSpec, condition_latent
from caloquant.precision.backends import EngineModel, load_model, make_backend
from caloquant.precision.canary import make_canary, run_check, save_canary
from caloquant.precision.config import QuantizeConfig
from caloquant.precision.evaluation import EvalSet, run_batched
from caloquant.precision.tuner import Trial, Tuner
from caloquant.runtime import torch_threads
from caloquant.timing import interleaved

MANIFEST = "manifest.json"
TUNING_LOG = "tuning_log.json"
ARTIFACT_VERSION = 2  # 2: sha256 of every file, self-check canary, executed precision
log = logging.getLogger(__name__)


def calibration_latents(spec: ModelSpec, n: int, seed: int) -> np.ndarray:
    """Latents over the model's valid energy range (uniform Ep), raw N(0,1) noise, conditioned."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xCA11B])))
    e = rng.uniform(*spec.energy_range_gev, size=n)
    return condition_latent(rng.standard_normal((n, spec.noise_dim), dtype=np.float32), e, spec)


class _EngineGenerator:
    """A ShowerGenerator over an engine model described by a manifest."""

    spec: ModelSpec
    manifest: dict[str, Any]
    model: EngineModel

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"])

    def generate(self, latent: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(latent), dtype=np.float32).reshape((len(latent), *self.spec.grid))


@dataclass
class QuantizeResult(_EngineGenerator):
    """A tuned model in memory: run it (``generate``), inspect ``manifest``, ``save`` it."""

    spec: ModelSpec
    model: EngineModel
    manifest: dict[str, Any]
    chosen: Trial
    trials: list[Trial]
    baseline: dict[str, Any]
    canary: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.chosen.ok

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the artifact directory atomically (a temporary sibling, renamed at the end);
        an existing artifact of that name is replaced, any other existing folder is refused."""
        out = Path(out_dir)
        if out.exists() and not (out / MANIFEST).exists() and (not out.is_dir() or any(out.iterdir())):
            raise CaloquantError(f"{out}: exists and is not a caloquant artifact; refusing to overwrite")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            files = self.model.save(tmp)
            extra = [save_canary(tmp, self.canary)] if self.canary else []
            manifest = dict(self.manifest, files=files, size_bytes=sum((tmp / f).stat().st_size for f in files),
                            sha256={f: file_sha256(tmp / f) for f in files + extra})
            write_json(tmp / MANIFEST, manifest)
            write_json(tmp / TUNING_LOG, {"baseline": self.baseline, "trials": [t.to_dict() for t in self.trials],
                                          "chosen": self.chosen.name})
            os.chmod(tmp, umask_mode(directory=True))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
            self.manifest = manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out


# the fp32 showers of the evaluation sets of recent quantize calls in this process, by (weights,
# spec, set): a study quantizes one model to several precisions, and making the 2 x 1,000 fp32
# reference showers is ~15 s of every call on the CERN 3DGAN (2 cores); a few sets of ~60 MB each
_EVAL_SETS: dict[tuple[Any, ...], EvalSet] = {}
_EVAL_SETS_MAX = 4


def _eval_set(gen: torch.nn.Module, spec: ModelSpec, fp32: Callable[[np.ndarray], np.ndarray], cfg: QuantizeConfig,
              stream: int) -> EvalSet:
    """``EvalSet.build`` for this generator's weights, reused within the process."""
    import hashlib

    h = hashlib.sha256()
    for k, v in gen.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    key = (h.hexdigest(), json.dumps(spec.to_dict(), sort_keys=True), cfg.eval_n_per_point, cfg.seed,
           cfg.eval_energies_gev, stream)
    if key not in _EVAL_SETS:
        while len(_EVAL_SETS) >= _EVAL_SETS_MAX:
            _EVAL_SETS.pop(next(iter(_EVAL_SETS)))
        _EVAL_SETS[key] = EvalSet.build(spec, fp32, cfg.eval_n_per_point, cfg.seed, cfg.eval_energies_gev, stream=stream)
    return _EVAL_SETS[key]


def quantize(ckpt: Checkpoint, cfg: QuantizeConfig, source: str = "") -> QuantizeResult:
    """Run the configured recipe on a float32 checkpoint; nothing is written (see ``save``).
    Progress goes to the ``caloquant`` logger."""
    with torch_threads(cfg.threads):
        return _quantize(ckpt, cfg, source)


def _quantize(ckpt: Checkpoint, cfg: QuantizeConfig, source: str) -> QuantizeResult:
    from caloquant import __version__
    from caloquant.precision.backends.torch_backend import TorchModel, weight_layers

    t_start = time.perf_counter()
    spec = ckpt.spec
    gen = ckpt.generator.eval()
    fp32 = TorchModel(gen, "fp32", cfg.threads, {n: "fp32" for n in weight_layers(gen)})
    ev = _eval_set(gen, spec, fp32, cfg, 0)
    calib = calibration_latents(spec, cfg.calib_n, cfg.seed)
    log.info("evaluation: %d paired showers at %s GeV; calibration: %d latents", len(ev.energies),
             ", ".join(f"{p:g}" for p in ev.points), cfg.calib_n)

    module, rewrite = _rewrite(gen, cfg, ev)
    backend = make_backend(cfg.backend, module, spec.latent_dim, cfg.threads)
    modules = {"original": module}
    equalization: dict[str, Any] = {}

    def graph(alpha: float) -> Callable[[], Any]:
        def make() -> Any:
            from caloquant.precision.equalize import equalize

            eq, info = equalize(gen, lambda m: run_batched(lambda z: m(torch.from_numpy(z)).numpy(), calib, 100), alpha)
            name = f"equalized alpha={alpha:g}"
            mod = _rewrite(eq, cfg, ev)[0] if rewrite["convs"] else eq
            if (dev := _deviation(mod, ev)) > 1e-4:  # the same function or nothing
                log.warning("%s deviates by %.1e from the original; not used", name, dev)
                return None
            modules[name], equalization[name] = mod, info
            return make_backend(cfg.backend, mod, spec.latent_dim, cfg.threads)

        return make

    graphs = ({f"equalized alpha={a:g}": graph(a) for a in cfg.equalize_alphas}
              if cfg.recipe == "physics" and cfg.precision == "int8" else {})
    finetuned: dict[str, Any] = {}

    def qat(base: str, name: str, units: list[str], cal: str, minutes: float) -> tuple[Any | None, dict[str, Any]]:
        from dataclasses import replace

        from caloquant.fileio import cache_root
        from caloquant.precision.qat import finetune, state_key

        left = max(cfg.time_budget_s - (time.perf_counter() - tuner.t0), 1.0) / 60  # what the tuning budget leaves
        qcfg = replace(cfg.qat, minutes=min(minutes, left) if minutes > 0 else left)
        module = modules[base]

        def plan(m: torch.nn.Module) -> Any:
            return make_backend(cfg.backend, m, spec.latent_dim, cfg.threads).fake_quant_plan(calib, units, cal)

        def run(q: Any) -> tuple[Any, Path]:
            state = Path(cfg.qat.state_dir or cache_root() / "qat") / f"{state_key(module, units, cal, q, cfg.tolerance)}.pt"
            log.info("  %s: up to %.1f min, lr %.2g (state %s)", name, q.minutes, q.lr, state)
            r = finetune(module, plan, lambda n, seed: calibration_latents(spec, n, seed), q, cfg.tolerance, state)
            log.info("  %d steps in %.0f s%s: loss %.3g -> %.3g", r.steps, r.seconds,
                     f" (resumed at step {r.resumed_from_step})" if r.resumed_from_step else "", r.loss_first, r.loss_last)
            return r, state

        q = qcfg
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
        modules[name], finetuned[name] = res.module, info
        return make_backend(cfg.backend, res.module, spec.latent_dim, cfg.threads), info

    tuner = Tuner(backend, ev, calib, cfg, graphs, confirm_set=None if cfg.recipe == "naive" else lambda: _eval_set(
        gen, spec, fp32, cfg, 1),
        qat=qat if cfg.recipe == "physics" and cfg.precision == "int8" and cfg.qat.enabled else None)
    head: list[Trial] = []
    missing: list[dict[str, str]] = []
    if cfg.recipe == "naive":
        chosen = tuner.naive()
    elif cfg.precision == "int8":
        chosen = tuner.physics_int8()
        if cfg.head_to_head:  # on the working graph
            head, missing = tuner.head_to_head(modules[tuner.graph], spec.latent_dim)
    else:
        chosen = tuner.float(cfg.precision)
    if cfg.recipe != "naive" and chosen.passes and chosen.confirmation is None:
        tuner.confirm(chosen)
    # the reported speeds: baseline, the engine's fp32 of the same graph, the choice and every
    # comparison, timed in the same interleaved rounds
    fns: dict[str, Any] = {"baseline": fp32, "engine_fp32": tuner.backend.float_model("fp32"), "chosen": chosen.model}
    fns |= {f"head{i}": t.model for i, t in enumerate(head) if t.speed is not None}
    x = ev.latents[: cfg.batch]
    log.info("speed: %d models timed in %d interleaved rounds (batch %d, %s threads)", len(fns), cfg.timing.rounds,
             cfg.batch, cfg.threads)
    timed = interleaved(fns, x, cfg.timing)
    baseline = timed["baseline"]
    chosen.speed = dict(chosen.speed or {}, **timed["chosen"])
    for i, t in enumerate(head):
        if f"head{i}" in timed:
            t.speed = dict(t.speed or {}, **timed[f"head{i}"])
    canary, self_check = make_canary(spec, fp32, lambda z: np.asarray(chosen.model(z)).reshape(len(z), *spec.grid),
                                     cfg.tolerance.ecal_rel, cfg.tolerance.moment_shift)

    def per(k: str) -> float:
        return float(chosen.speed["showers_per_s"] / timed[k]["showers_per_s"])  # type: ignore[index]

    manifest = {
        "caloquant_artifact": ARTIFACT_VERSION,
        "caloquant_version": __version__,
        "source_model": source,
        "spec": spec.to_dict(),
        "backend": cfg.backend,
        "precision": cfg.precision,
        "executed_precision": chosen.model.executed_precision(),
        "recipe": cfg.recipe,
        "backend_options": chosen.model.options(),
        "float_precision": chosen.config.get("float_precision", cfg.precision if cfg.precision != "int8" else "fp32"),
        "f32_from": chosen.config.get("f32_from"),  # a split float part: fp32 from this unit on
        "layer_precisions": chosen.model.layer_precisions,
        "calibration": {"method": chosen.config.get("calibration"), "n": cfg.calib_n, "seed": cfg.seed}
        if chosen.config.get("precision") == "int8" else None,
        "tolerance": cfg.tolerance.to_dict(),
        "meets_tolerance": chosen.ok,
        "confirmation": chosen.confirmation,
        "physics": {k: v for k, v in chosen.score.items() if k != "points"} | {"points": chosen.score.get("points", [])},
        "speed": {"showers_per_s": chosen.speed["showers_per_s"], "baseline_torch_fp32_showers_per_s": baseline["showers_per_s"],
                  "speedup_vs_torch_fp32": per("baseline"),
                  f"speedup_vs_{cfg.backend}_fp32_same_graph": per("engine_fp32"),
                  "batch": cfg.batch, "threads": cfg.threads, "timing": cfg.timing.to_dict(),
                  "chosen_rounds": chosen.speed.get("rounds"), "baseline_rounds": baseline.get("rounds"),
                  "engine_fp32_rounds": timed["engine_fp32"]["rounds"],
                  "method": "caloquant.timing: median over interleaved rounds; each round: median call time over a window"},
        "self_check": self_check,
        "fp32_param_bytes": sum(p.numel() * 4 for p in gen.parameters()) + sum(b.numel() * 4 for b in gen.buffers()),
        "config": cfg.to_dict(),
        "head_to_head": [{"name": t.name, "meets_tolerance": t.passes, "worst_ecal_rel": t.score["worst_ecal_rel"],
                          "worst_moment_shift": t.score["worst_moment_shift"], "layer_precisions": t.model.layer_precisions,
                          "speedup_vs_torch_fp32": t.speed["showers_per_s"] / baseline["showers_per_s"] if t.speed else None,
                          "seconds": round(t.seconds, 1)} for t in head]
        + [{"name": m["name"], "error": m["error"]} for m in missing],
        "rewrite": rewrite | {"graph": chosen.config.get("graph", "original"),
                              "equalization": equalization.get(chosen.config.get("graph", "").split("+qat")[0]),
                              "qat": finetuned.get(chosen.config.get("graph", ""))},
        "qat": tuner.qat_info,
        # speed against worst deviation, technique by technique (the tuner's steps)
        "frontier": tuner.frontier(baseline["showers_per_s"]) if cfg.recipe == "physics" and cfg.precision == "int8" else None,
        "tuning_seconds": round(time.perf_counter() - t_start, 1),
    }
    return QuantizeResult(spec, chosen.model, manifest, chosen, tuner.trials, baseline, canary)


def _rewrite(gen: torch.nn.Module, cfg: QuantizeConfig, ev: EvalSet) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The exact sub-pixel rewrite (physics recipe), checked against the original on the
    evaluation latents; the naive recipe keeps the backend's defaults and the original graph."""
    if not (cfg.rewrite and cfg.recipe == "physics"):
        return gen, {"convs": []}
    from caloquant.precision.rewrite import fuse_upsample_conv

    module, convs = fuse_upsample_conv(gen)
    if not convs:
        return gen, {"convs": []}

    dev = _deviation(module, ev)
    if dev > 1e-4:  # float32 rounding is ~1e-6; anything larger would be a bug: do not use it
        log.warning("sub-pixel rewrite of %s deviates by %.1e; not used", ", ".join(convs), dev)
        return gen, {"convs": [], "rejected": convs, "max_rel_deviation": dev}
    log.info("exact rewrite: upsample + conv -> sub-pixel conv for %s (max deviation %.1e of the largest cell)",
             ", ".join(convs), dev)
    return module, {"convs": convs, "max_rel_deviation": dev}


def _deviation(module: torch.nn.Module, ev: EvalSet) -> float:
    """Largest |module - fp32| over (up to) 500 evaluation showers, relative to the largest cell."""
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    n = min(len(ev.latents), 500)
    out = run_batched(run, ev.latents[:n], 100).reshape(ev.reference[:n].shape)
    return float(np.max(np.abs(out - ev.reference[:n])) / max(float(np.max(np.abs(ev.reference[:n]))), 1e-30))


@dataclass
class ArtifactGenerator(_EngineGenerator):
    """A saved reduced-precision model, usable wherever a ShowerGenerator is expected.
    ``self_check``: the result of the canary run at load time (or why it was skipped)."""

    spec: ModelSpec
    manifest: dict[str, Any]
    model: EngineModel
    path: Path
    self_check: dict[str, Any]


def is_artifact(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).exists()


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An artifact's manifest, or a one-line error."""
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: model not found")
    mf = p / MANIFEST
    if not mf.exists():
        raise CaloquantError(f"{p}: not a caloquant artifact directory (no {MANIFEST})")
    try:
        manifest = json.loads(mf.read_text())
        ModelSpec.from_dict(manifest["spec"])
        str(manifest["backend"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CaloquantError(f"{mf}: malformed manifest ({exc!r})") from None
    return dict(manifest)


def load_artifact(path: str | os.PathLike[str], threads: int | None = None, skip_self_check: bool = False) -> ArtifactGenerator:
    """Load an artifact: files checked against their sha256, then the canary run on this CPU
    (refused with a one-line error when the physics moved beyond the artifact's threshold).
    ``skip_self_check`` loads anyway; the reason is kept in ``self_check``."""
    p = Path(path)
    manifest = read_manifest(p)
    for f, digest in (manifest.get("sha256") or {}).items():
        if not (p / f).exists():
            raise CaloquantError(f"{p}: artifact file {f} is missing")
        if file_sha256(p / f) != digest:
            raise CaloquantError(f"{p / f}: damaged (sha256 differs from the manifest)")
    spec = ModelSpec.from_dict(manifest["spec"])
    model = load_model(manifest["backend"], p, manifest, threads)
    block = manifest.get("self_check")
    if skip_self_check:
        check: dict[str, Any] = {"passed": None, "skipped": "skip_self_check requested by the user"}
    elif not block:
        check = {"passed": None, "skipped": "artifact has no self-check (made by caloquant < 0.2)"}
        log.warning("%s: artifact has no self-check canary; its physics on this CPU is not verified", p)
    else:
        with torch_threads(threads):
            check = run_check(p, block, lambda z: np.asarray(model(z)).reshape(len(z), *spec.grid))
    return ArtifactGenerator(spec, manifest, model, p, check)
