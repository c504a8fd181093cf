"""Time a simulation engine per incident energy, within a time budget (for `caloquant bench`)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import time
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.sim.engines import SimConfig, init_worker, make_engine, worker_engine


def _time_showers(energy: float, start: int, n: int) -> list[tuple[float, float]]:
    """(wall s, CPU s) of each of n showers, one at a time, in this worker's engine."""
    engine = worker_engine()
    out = []
    for k in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        engine.run(start + k, start + k, np.array([energy]))
        out.append((time.perf_counter() - w0, time.process_time() - c0))
    return out


def _stats(x: np.ndarray) -> dict[str, float]:
    n = len(x)
    return {
        "median": float(np.median(x)),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if n > 1 else float("nan"),
        "sem": float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def time_engine(
    engine: str = "geant4",
    energies: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0),
    showers_per_point: int = 3,
    budget_s: float = 120.0,
    config: SimConfig | None = None,
    gflash_batch: int = 500,
    seed: int = 12345,
) -> dict[str, Any]:
    """Seconds per shower of a simulation engine at each energy, on one core, time-boxed.

    Geant4: one worker process builds the session, simulates one warm-up shower (physics
    tables), then times single showers point by point, the lowest energy first, until
    ``showers_per_point`` per point are done or ``budget_s`` is spent (points not reached are
    reported as missing). GFlash: batches of ``gflash_batch`` showers per point.
    Per point: wall and CPU seconds per shower (median, mean, std, sem over showers).
    """
    cfg = config or SimConfig(engine=engine, seed=seed)
    if cfg.engine != engine:
        raise CaloquantError(f"config engine '{cfg.engine}' differs from engine '{engine}'")
    if showers_per_point < 1 or not budget_s > 0:
        raise CaloquantError("showers per point and the time budget must be positive")
    cfg.check()
    t_start = time.perf_counter()
    per: dict[str, Any] = {}
    setup_s = None
    if engine == "gflash":
        t0 = time.perf_counter()
        eng = make_engine(cfg)
        eng.run(0, 0, np.array([energies[0]]))  # compile / load the kernel
        setup_s = time.perf_counter() - t0
        for j, e in enumerate(sorted(energies)):
            w = []
            for r in range(max(1, showers_per_point)):
                w0, c0 = time.perf_counter(), time.process_time()
                eng.run(j * 1000 + r, 0, np.full(gflash_batch, e))
                w.append(
                    (
                        (time.perf_counter() - w0) / gflash_batch,
                        (time.process_time() - c0) / gflash_batch,
                    )
                )
            arr = np.asarray(w)
            per[f"{e:g}"] = {
                "n": len(w) * gflash_batch,
                "wall_s_per_shower": _stats(arr[:, 0]),
                "cpu_s_per_shower": _stats(arr[:, 1]),
            }
    else:
        from caloquant.sim.helper import build_helper

        build_helper()
        ctx = mp.get_context("spawn")
        with cf.ProcessPoolExecutor(
            1, mp_context=ctx, initializer=init_worker, initargs=(cfg, None)
        ) as ex:
            t0 = time.perf_counter()
            ex.submit(
                _time_showers, float(min(energies)), 10**6, 1
            ).result()  # start-up + physics tables
            setup_s = time.perf_counter() - t0
            for e in sorted(energies):
                got: list[tuple[float, float]] = []
                for k in range(showers_per_point):
                    if time.perf_counter() - t_start > budget_s:
                        break
                    got += ex.submit(_time_showers, float(e), 1000 * int(e) + k, 1).result()
                if not got:
                    per[f"{e:g}"] = {"n": 0, "missing": "time budget spent"}
                    continue
                arr = np.asarray(got)
                per[f"{e:g}"] = {
                    "n": len(got),
                    "wall_s_per_shower": _stats(arr[:, 0]),
                    "cpu_s_per_shower": _stats(arr[:, 1]),
                }
    return {
        "engine": engine,
        "label": f"{engine} (measured in this run)",
        "measured_here": True,
        "physics": cfg.physics.label if engine == "geant4" else "gflash",
        "geometry_hash": cfg.geometry.hash,
        "energies_gev": [float(e) for e in energies],
        "showers_per_point": showers_per_point,
        "budget_s": budget_s,
        "setup_s": setup_s,
        "wall_s": time.perf_counter() - t_start,
        "per_energy": per,
        "complete": all(v.get("n", 0) >= 1 for v in per.values()),
        "note": "one core, one shower at a time after a warm-up shower; "
        "wall and CPU seconds per shower",
    }


def flat_average(
    per_energy: dict[str, Any], lo: float = 100.0, hi: float = 500.0, key: str = "wall_s_per_shower"
) -> tuple[float, float]:
    """Mean seconds per shower over a flat spectrum in [lo, hi] (trapezoid over the measured
    points, linear in between) and its statistical error (from each point's sem)."""
    pts = sorted(
        (float(e), v) for e, v in per_energy.items() if v.get("n", 0) >= 1 and lo <= float(e) <= hi
    )
    if not pts:
        raise CaloquantError("no measured energy point inside the spectrum")
    if len(pts) == 1:
        v = pts[0][1][key]
        return v["mean"], v["sem"]
    e = np.array([p[0] for p in pts])
    m = np.array([p[1][key]["mean"] for p in pts])
    s = np.array([np.nan_to_num(p[1][key]["sem"], nan=0.0) for p in pts])
    # trapezoid weights over the measured span (the spectrum is flat)
    w = np.zeros(len(e))
    w[:-1] += np.diff(e) / 2
    w[1:] += np.diff(e) / 2
    w /= w.sum()
    return float(w @ m), float(np.sqrt((w**2) @ (s**2)))
