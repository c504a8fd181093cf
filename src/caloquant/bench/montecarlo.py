"""Monte Carlo reference for the speed-up: Geant4 from the literature (not measured here), and a
slot for a Monte Carlo command timed in the same run."""

from __future__ import annotations

import shlex
import subprocess
import time
from typing import Any

from caloquant.errors import CaloquantError

# The 3DGAN papers compare against full Geant4 simulation of the same calorimeter. Rehm et al.
# (ICPRAM 2021, ../shared/papers/rehm2021_reduced_precision_3dgan_icpram.txt, Sec. 6.1) quote
# 38,000x (fp32, 55.7 ms) and 67,000x (int8, 32.3 ms) speed-ups "with respect to the original
# Geant4 benchmarks quoted in (Vallecorsa et al., 2019)"; for a batch of 128 showers those
# imply 16.5 and 17.2 s per Geant4 shower, consistent with the ~17 s per shower of that source.
GEANT4_LITERATURE: dict[str, Any] = {
    "label": "Geant4 (literature, not measured here)",
    "measured_here": False,
    "seconds_per_shower": 17.0,
    "what": "full Geant4 simulation of one 100-500 GeV electron shower "
    "in the 25x25x25-cell CLIC-like "
    "electromagnetic calorimeter that the CERN 3DGAN was trained on",
    "source": "S. Vallecorsa, F. Carminati, G. Khattak, "
    "'3D convolutional GAN for fast simulation', "
    "EPJ Web Conf. 214 (2019) 02010; used as the Monte Carlo reference by F. Rehm et al., "
    "'Reduced Precision Strategies for Deep Learning: A High Energy Physics Generative "
    "Adversarial Network Use Case', ICPRAM 2021, Sec. 6.1",
    "verified": False,
    "hardware": "not checked here: Vallecorsa et al. 2019 is not in ../shared, "
    "so its Geant4 hardware and its exact "
    "per-shower time are unverified; "
    "the GAN timings of Rehm et al. 2021 used 7 streams x 56 threads on a "
    "2-socket Intel Xeon server",
    "cross_check": "Rehm et al. 2021: 38,000x for float32 at 55.7 ms "
    "and 67,000x for int8 at 32.3 ms per inference; "
    "with 128 showers per inference these give 16.5 s and 17.2 s per Geant4 shower",
    "caveat": "17 s is derived, not read from the source: "
    "67,000 x 32.3 ms / 128 assumes 128 showers per timed "
    "inference, which Rehm et al. do not state; "
    "different hardware, core count and year from this run: an "
    "order-of-magnitude comparison, not a measurement",
}


def run_monte_carlo(command: str, showers: int) -> dict[str, Any]:
    """Time a Monte Carlo command that simulates ``showers`` showers (wall clock, this machine)."""
    if showers < 1:
        raise CaloquantError(f"--mc-showers must be positive, got {showers}")
    argv = shlex.split(command)
    if not argv:
        raise CaloquantError("--mc-command is empty")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
        )
    except OSError as exc:
        raise CaloquantError(f"--mc-command could not start: {exc.strerror or exc}") from None
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        raise CaloquantError(f"--mc-command exited with code {proc.returncode}: {last[0][:160]}")
    return {
        "label": "Monte Carlo (measured in this run)",
        "measured_here": True,
        "command": command,
        "showers": showers,
        "seconds": round(wall, 3),
        "seconds_per_shower": wall / showers,
    }


def check_mc_engine(engine: str) -> None:
    """Fail before any timing when ``--mc`` names an unknown engine or Geant4 cannot run here."""
    if engine not in ("geant4", "gflash"):
        raise CaloquantError(f"--mc must be geant4 or gflash, got '{engine}'")
    if engine == "geant4":
        from caloquant.sim import helper_status

        st = helper_status()
        if not st["ready"]:
            raise CaloquantError(
                f"--mc geant4: the Geant4 engine cannot run here ({st.get('reason')})"
            )


def time_mc_engine(
    engine: str,
    showers_per_point: int = 3,
    budget_s: float = 300.0,
    energies: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0),
) -> dict[str, Any]:
    """Time caloquant's own Monte Carlo engine (``caloquant.sim``) per energy point in this run,
    plus its mean over a flat 100-500 GeV spectrum (wall seconds per shower, one core)."""
    from caloquant.sim import flat_average, time_engine

    check_mc_engine(engine)
    res = time_engine(
        engine, energies=energies, showers_per_point=showers_per_point, budget_s=budget_s
    )
    mean, err = flat_average(res["per_energy"], min(energies), max(energies))
    res["flat_mean_s_per_shower"], res["flat_mean_s_per_shower_err"] = mean, err
    # CPU seconds are robust to other processes on a shared host (wall: what a user waits)
    res["flat_mean_cpu_s_per_shower"], res["flat_mean_cpu_s_per_shower_err"] = flat_average(
        res["per_energy"], min(energies), max(energies), key="cpu_s_per_shower"
    )
    res["flat_range_gev"] = [min(energies), max(energies)]
    return res


def engine_speedups(
    mc_engine: dict[str, Any] | None, showers_per_s: float, cores_used: int = 1
) -> dict[str, Any]:
    """Speed-up of a model (showers/s) over the measured engine: per energy point and over the
    flat spectrum, each with its statistical error (from the spread of the timed showers).

    ``speedup_vs_mc_engine*``: the model on its ``cores_used`` cores (threads x streams, capped
    by the usable cores) against the engine on one core. ``speedup_vs_mc_engine_per_core*``:
    showers/s per core against showers/s per core (the engine's ``cores``, 1 when not said),
    the first divided by ``cores_used``. Every key is None without a timed engine."""
    keys = ("speedup_vs_mc_engine", "speedup_vs_mc_engine_per_core")
    if not mc_engine:
        return {f"{k}{s}": None for k in keys for s in ("", "_err", "_per_energy")}

    def sig(x: float) -> float:  # 4 significant digits: speed-ups span 0.01 (GFlash) to 1e5
        return float(f"{x:.4g}")

    per_core = float(mc_engine.get("cores", 1)) / max(1, cores_used)
    out: dict[str, Any] = {}
    for k, f in zip(keys, (1.0, per_core)):
        per = {}
        for e, v in mc_engine["per_energy"].items():
            if v.get("n", 0) >= 1:
                s = v["wall_s_per_shower"]
                sem = s["sem"] if s["sem"] == s["sem"] else 0.0  # NaN with one timed shower
                per[e] = {
                    "speedup": sig(s["mean"] * showers_per_s * f),
                    "err": sig(sem * showers_per_s * f),
                }
        out[k] = sig(mc_engine["flat_mean_s_per_shower"] * showers_per_s * f)
        out[f"{k}_err"] = sig(mc_engine["flat_mean_s_per_shower_err"] * showers_per_s * f)
        out[f"{k}_per_energy"] = per
    return out
