"""The self-check of a reduced-precision artifact: a small canary run on the current CPU.

Why: an artifact tuned on one CPU can be wrong on another. The same OpenVINO bf16 model gave
the right showers on an AMD Zen 4 and 92 % too little energy on an Intel AMX CPU (oneDNN's
bf16 Conv3D for one layer shape, docs/findings.md 1). Kernels are chosen at compile time on
the machine that runs the model, so the check has to run there, when the model is loaded.

What: at tuning time the artifact stores ``CANARY_N`` fixed latents (energies spread over the
model's range) with the float32 model's summary for each shower: Ecal, hit-cell count and the
six moments (mean and sqrt(M2) along x, y, z). Loading runs the artifact on those latents and
compares, paired, shower by shower:

* ``ecal_rel``: |sum Ecal / sum Ecal_fp32 - 1|;
* ``hits_rel``: |sum hits / sum hits_fp32 - 1|;
* ``moment_shift``: the largest |mean over showers of (moment - moment_fp32)|, in cells.

The statistic and its threshold. A 32-shower canary cannot carry the 200-showers-per-point
tolerance itself, but it does not need to: the comparison is paired against stored float32
outputs of the same latents, and an engine is deterministic on one machine, so on the tuning
CPU the canary reproduces the artifact's own deviation exactly (``tuned``). The threshold is
that deviation plus the tuning tolerance (``ecal_rel`` and ``moment_shift``; hits get 5 %):
a CPU that computes the model at most one tolerance worse than the tuning CPU passes, a
wrong kernel (a deviation of percent to tens of percent) fails loudly. The check costs one
batch of 32 showers (tens of milliseconds for an int8 3DGAN; a torch int8 artifact also
compiles on its first call, which sampling would do anyway).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.models import ModelSpec, condition_latent

log = logging.getLogger(__name__)
CANARY_N = 32
CANARY_FILE = "canary.npz"
MOMENTS = ("mean_x", "mean_y", "mean_z", "std_x", "std_y", "std_z")
HITS_MARGIN = 0.05


def canary_latents(spec: ModelSpec, n: int = CANARY_N, seed: int = 0xCA4A) -> np.ndarray:
    """Fixed latents: energies evenly over the model's range, raw noise from ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    e = np.linspace(*spec.energy_range_gev, n)
    return condition_latent(rng.standard_normal((n, spec.noise_dim), dtype=np.float32), e, spec)


def summarize(showers: np.ndarray) -> dict[str, np.ndarray]:
    """Per-shower Ecal, hit count and moments, the canary's reference quantities."""
    from caloquant.physics import shower_features

    s = np.maximum(np.asarray(showers, dtype=np.float32), 0.0)
    f = shower_features(s, np.ones(len(s)))
    return {"ecal": f["ecal"], "n_hits": f["n_hits"], **{m: np.nan_to_num(f[m]) for m in MOMENTS}}


def deviation(ref: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
    """Paired deviations of ``cand`` from ``ref`` (see the module docstring)."""

    def rel(k: str) -> float:
        den = float(np.sum(ref[k]))
        return abs(float(np.sum(cand[k])) / den - 1.0) if den > 0 else float(np.sum(cand[k]) > 0)

    return {
        "ecal_rel": rel("ecal"),
        "hits_rel": rel("n_hits"),
        "moment_shift": max(abs(float(np.mean(cand[m] - ref[m]))) for m in MOMENTS),
    }


def make_canary(
    spec: ModelSpec,
    fp32: Callable[[np.ndarray], np.ndarray],
    model: Callable[[np.ndarray], np.ndarray],
    ecal_rel: float,
    moment_shift: float,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The canary arrays (for ``CANARY_FILE``) and the manifest's ``self_check`` block: the
    artifact's own deviation on this CPU and the thresholds derived from it."""
    from caloquant.runtime import cpu_identity

    lat = canary_latents(spec)
    ref = summarize(fp32(lat))
    out = np.asarray(model(lat), dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise CaloquantError("the tuned model gives NaN or Inf showers on the canary latents")
    tuned = deviation(ref, summarize(out))
    threshold = {
        "ecal_rel": tuned["ecal_rel"] + ecal_rel,
        "hits_rel": tuned["hits_rel"] + HITS_MARGIN,
        "moment_shift": tuned["moment_shift"] + moment_shift,
    }
    arrays = {"latents": lat, **{f"ref_{k}": v for k, v in ref.items()}}
    block = {
        "file": CANARY_FILE,
        "n": CANARY_N,
        "tuned_on": cpu_identity(),
        "tuned_deviation": tuned,
        "threshold": threshold,
        "statistic": "paired against stored float32 outputs of fixed latents: "
        "|sum Ecal ratio - 1|, |sum hits ratio - 1|, max |mean moment shift| (cells); "
        "threshold = deviation at tuning + tolerance (hits: + 5 %)",
    }
    return arrays, block


def save_canary(out_dir: Path, arrays: dict[str, np.ndarray]) -> str:
    with open(out_dir / CANARY_FILE, "wb") as f:
        np.savez(f, **arrays)
    return CANARY_FILE


def run_check(
    out_dir: str | os.PathLike[str],
    block: dict[str, Any],
    model: Callable[[np.ndarray], np.ndarray],
) -> dict[str, Any]:
    """Run the canary of the artifact in ``out_dir`` with ``model`` on this CPU; a one-line
    error naming the deviation and the CPU when it is outside the threshold."""
    from caloquant.runtime import cpu_class, cpu_identity

    p = Path(out_dir) / block.get("file", CANARY_FILE)
    try:
        with np.load(p, allow_pickle=False) as z:
            lat = np.asarray(z["latents"], dtype=np.float32)
            ref = {
                k[4:]: np.asarray(z[k], dtype=np.float64) for k in z.files if k.startswith("ref_")
            }
        thr = {k: float(v) for k, v in block["threshold"].items()}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CaloquantError(
            f"{p}: unreadable self-check canary ({type(exc).__name__}: {str(exc)[:80]})"
        ) from None
    out = np.asarray(model(lat), dtype=np.float32)
    cpu = cpu_identity()
    where = f"on {cpu['cpu_model']} ({' '.join(cpu['flags']) or 'no listed ISA flags'})"
    tuned_on = (block.get("tuned_on") or {}).get("cpu_model", "?")
    if not np.all(np.isfinite(out)):
        raise CaloquantError(
            f"{out_dir}: self-check failed {where}: NaN or Inf showers (tuned on {tuned_on}); "
            "use skip_self_check / --skip-self-check to load anyway"
        )
    dev = deviation(ref, summarize(out))
    bad = [k for k in thr if dev[k] > thr[k]]
    if bad:
        what = ", ".join(f"{k} {dev[k]:.4g} > {thr[k]:.4g}" for k in bad)
        raise CaloquantError(
            f"{out_dir}: self-check failed {where}: {what} (tuned on {tuned_on}); "
            "the engine computes this artifact differently here; "
            "use skip_self_check / --skip-self-check to load anyway"
        )
    tuned = block.get("tuned_on") or {}
    # artifacts from before the class was recorded: derived from the flags they recorded
    tuned_class = tuned.get("cpu_class") or (
        cpu_class(tuned["flags"]) if "flags" in tuned else None
    )
    if (
        tuned_class and tuned_class != cpu["cpu_class"]
    ):  # the physics passed; the speed ranking may not carry over
        log.warning(
            "%s: tuned on a %s CPU, running on a %s one: the self-check passed, "
            "but the fastest precision mix may differ here (re-run quantize on this CPU)",
            out_dir,
            tuned_class,
            cpu["cpu_class"],
        )
    return {
        "passed": True,
        "deviation": dev,
        "threshold": thr,
        "cpu": cpu,
        "same_cpu_class": None if tuned_class is None else tuned_class == cpu["cpu_class"],
    }
