"""`quantize`: build a reduced-precision variant of a generator, with its physics evidence;
`load_artifact`: run a saved variant as a ShowerGenerator."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant.errors import CaloquantError
from caloquant.fileio import write_json
from caloquant.models import Checkpoint, ModelSpec, condition_latent
from caloquant.precision.backends import load_model, make_backend
from caloquant.precision.config import QuantizeConfig
from caloquant.precision.evaluation import EvalSet, interleaved_throughput, throughput
from caloquant.precision.tuner import Trial, Tuner

MANIFEST = "manifest.json"
TUNING_LOG = "tuning_log.json"


@dataclass
class QuantizeResult:
    out_dir: Path
    manifest: dict[str, Any]
    chosen: Trial
    trials: list[Trial]
    baseline: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.chosen.passes


def calibration_latents(spec: ModelSpec, n: int, seed: int) -> np.ndarray:
    """Latents over the model's valid energy range (uniform Ep), raw N(0,1) noise, conditioned."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xCA11B])))
    e = rng.uniform(*spec.energy_range_gev, size=n)
    return condition_latent(rng.standard_normal((n, spec.noise_dim), dtype=np.float32), e, spec)


def _dir_bytes(d: Path, files: list[str]) -> int:
    return sum((d / f).stat().st_size for f in files if (d / f).exists())


def quantize(ckpt: Checkpoint, cfg: QuantizeConfig, out_dir: str | os.PathLike[str], model_path: str = "",
             log: Callable[[str], None] = print) -> QuantizeResult:
    """Run the configured recipe and write the artifact directory (atomically)."""
    from caloquant import __version__

    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    spec = ckpt.spec
    gen = ckpt.generator.eval()

    def fp32(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return gen(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    ev = EvalSet.build(spec, fp32, cfg.eval_n_per_point, cfg.seed, cfg.eval_energies_gev)
    calib = calibration_latents(spec, cfg.calib_n, cfg.seed)
    log(f"evaluation: {len(ev.energies)} paired showers at {', '.join(f'{p:g}' for p in ev.points)} GeV; calibration: {cfg.calib_n} latents")
    baseline = throughput(fp32, ev.latents[: cfg.batch])
    log(f"baseline PyTorch fp32 eager: {baseline['showers_per_s']:.1f} showers/s (batch {cfg.batch}, {cfg.threads} threads)")

    module, rewrite = _rewrite(gen, cfg, ev, log)
    backend = make_backend(cfg.backend, module, spec.latent_dim, cfg.threads)
    tuner = Tuner(backend, ev, calib, cfg, log)
    head: list[Trial] = []
    missing: list[dict[str, str]] = []
    if cfg.recipe == "naive":
        chosen = tuner.naive()
    elif cfg.precision == "int8":
        chosen = tuner.physics_int8()
        if cfg.head_to_head:
            head, missing = tuner.head_to_head(module, spec.latent_dim)
    else:
        chosen = tuner.float(cfg.precision)
    # the reported speeds: baseline, choice and every comparison timed in the same interleaved rounds
    fns: dict[str, Any] = {"baseline": fp32, "chosen": chosen.model}
    fns |= {f"head{i}": t.model for i, t in enumerate(head) if t.speed is not None}
    log(f"speed: {len(fns)} models timed in {cfg.speed_rounds} interleaved rounds (batch {cfg.batch}, {cfg.threads} threads)")
    timed = interleaved_throughput(fns, ev.latents[: cfg.batch], cfg.speed_rounds)
    baseline = {**timed["baseline"], "first_measurement": baseline["showers_per_s"]}
    chosen.speed = dict(chosen.speed or {}, **timed["chosen"])
    for i, t in enumerate(head):
        if f"head{i}" in timed:
            t.speed = dict(t.speed or {}, **timed[f"head{i}"])

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = chosen.model.save(tmp)
        fp32_bytes = sum(p.numel() * 4 for p in gen.parameters()) + sum(b.numel() * 4 for b in gen.buffers())
        manifest = {
            "caloquant_artifact": 1,
            "caloquant_version": __version__,
            "source_model": model_path,
            "spec": spec.to_dict(),
            "backend": cfg.backend,
            "precision": cfg.precision,
            "recipe": cfg.recipe,
            "backend_options": _backend_options(chosen),
            "layer_precisions": chosen.model.layer_precisions,
            "calibration": {"method": chosen.config.get("calibration"), "n": cfg.calib_n, "seed": cfg.seed}
            if chosen.config.get("precision") == "int8" else None,
            "tolerance": cfg.tolerance.to_dict(),
            "meets_tolerance": chosen.passes,
            "physics": {k: v for k, v in chosen.score.items() if k != "points"} | {"points": chosen.score.get("points", [])},
            "speed": {"showers_per_s": chosen.speed["showers_per_s"], "baseline_torch_fp32_showers_per_s": baseline["showers_per_s"],
                      "speedup_vs_torch_fp32": chosen.speed["showers_per_s"] / baseline["showers_per_s"],
                      "batch": cfg.batch, "threads": cfg.threads, "rounds": cfg.speed_rounds,
                      "chosen_rounds": chosen.speed.get("rounds"), "baseline_rounds": baseline.get("rounds"),
                      "method": "median over interleaved rounds; each round: warm-up, then median call time over >= 1 s"},
            "files": files,
            "size_bytes": _dir_bytes(tmp, files),
            "fp32_param_bytes": fp32_bytes,
            "config": cfg.to_dict(),
            "head_to_head": [{"name": t.name, "meets_tolerance": t.passes, "worst_ecal_rel": t.score["worst_ecal_rel"],
                              "worst_moment_shift": t.score["worst_moment_shift"], "layer_precisions": t.model.layer_precisions,
                              "speedup_vs_torch_fp32": t.speed["showers_per_s"] / baseline["showers_per_s"] if t.speed else None,
                              "seconds": round(t.seconds, 1)} for t in head]
            + [{"name": m["name"], "error": m["error"]} for m in missing],
            "rewrite": rewrite,
            "tuning_seconds": round(time.perf_counter() - t_start, 1),
        }
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / TUNING_LOG, {"baseline": baseline, "trials": [t.to_dict() for t in tuner.trials],
                                      "chosen": chosen.name})
        if out.exists():
            if not (out / MANIFEST).exists() and any(out.iterdir()):
                raise CaloquantError(f"{out}: exists and is not a caloquant artifact; refusing to overwrite")
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return QuantizeResult(out, manifest, chosen, tuner.trials, baseline)


def _rewrite(gen: torch.nn.Module, cfg: QuantizeConfig, ev: EvalSet, log: Callable[[str], None]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The exact sub-pixel rewrite (physics recipe), checked against the original on the
    evaluation latents; the naive recipe keeps the backend's defaults and the original graph."""
    if not (cfg.rewrite and cfg.recipe == "physics"):
        return gen, {"convs": []}
    from caloquant.precision.rewrite import fuse_upsample_conv

    module, convs = fuse_upsample_conv(gen)
    if not convs:
        return gen, {"convs": []}

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    n = min(len(ev.latents), 500)
    out = np.concatenate([run(ev.latents[i : i + 100]) for i in range(0, n, 100)])
    dev = float(np.max(np.abs(out - ev.reference[:n])) / max(float(np.max(np.abs(ev.reference[:n]))), 1e-30))
    if dev > 1e-4:  # float32 rounding is ~1e-6; anything larger would be a bug: do not use it
        log(f"[yellow]sub-pixel rewrite of {', '.join(convs)} deviates by {dev:.1e}; not used[/]")
        return gen, {"convs": [], "rejected": convs, "max_rel_deviation": dev}
    sp = throughput(run, ev.latents[: cfg.batch])["showers_per_s"]
    log(f"exact rewrite: upsample + conv -> sub-pixel conv for {', '.join(convs)} (max deviation {dev:.1e} of the "
        f"largest cell); PyTorch fp32 eager of the rewritten graph: {sp:.1f} showers/s")
    return module, {"convs": convs, "max_rel_deviation": dev, "torch_fp32_eager_showers_per_s": sp}


def _backend_options(trial: Trial) -> dict[str, Any]:
    m = trial.model
    opts: dict[str, Any] = {}
    if hasattr(m, "hint"):
        opts["inference_precision_hint"] = m.hint
    if getattr(m, "compacted", None) is not None:
        opts["compact_kernels"] = list(m.compacted)  # float kernels stored small (float16) and expanded at load
    if "float_precision" in trial.config:
        opts["float_precision"] = trial.config["float_precision"]
    return opts


@dataclass
class ArtifactGenerator:
    """A saved reduced-precision model, usable wherever a ShowerGenerator is expected."""

    spec: ModelSpec
    manifest: dict[str, Any]
    model: Any

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"])

    def generate(self, latent: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(latent), dtype=np.float32).reshape((len(latent), *self.spec.grid))


def is_artifact(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).exists()


def load_artifact(path: str | os.PathLike[str], threads: int = 2) -> ArtifactGenerator:
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: model not found")
    mf = p / MANIFEST
    if not mf.exists():
        raise CaloquantError(f"{p}: not a caloquant artifact directory (no {MANIFEST})")
    try:
        manifest = json.loads(mf.read_text())
        spec = ModelSpec.from_dict(manifest["spec"])
        backend = manifest["backend"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CaloquantError(f"{mf}: malformed manifest ({exc!r})") from None
    return ArtifactGenerator(spec, manifest, load_model(backend, p, manifest, threads))
