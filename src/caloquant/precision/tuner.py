"""Naive and physics-aware precision recipes.

Physics recipe (int8), for any generator and any backend:

1. *Units*: the places where the backend can switch int8 on or off (for OpenVINO/NNCF the
   ops that receive int8 quantizers by default, e.g. convolutions, but also upsampling
   nodes whose input quantizer feeds the next convolution).
2. *Sensitivity*: each unit alone in int8, everything else float; physics on paired latents.
3. *Greedy accumulation*: units from least to most sensitive are switched to int8 one by one;
   a unit stays int8 only if the whole configuration still meets the tolerance.
4. *Calibration and float precision*: the accepted set is re-tried with every range estimator
   (re-admitting rejected units where a better calibration allows it) and with bf16 or fp16
   instead of fp32 for the float remainder (where the backend supports it).
5. *Speed is measured*, never assumed: every configuration that meets the tolerance is timed
   (batch, threads as configured) and the fastest one wins.

Every trial (configuration, physics numbers, speed, time) goes into the tuning log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caloquant.precision.config import CALIBRATIONS, QuantizeConfig
from caloquant.precision.evaluation import EvalSet, badness, passes, run_batched, throughput

Log = Callable[[str], None]
SPEED_TIE = 0.10  # candidates within 10 % of the fastest are treated as equally fast


@dataclass
class Trial:
    name: str
    config: dict[str, Any]
    score: dict[str, Any]
    passes: bool
    badness: float
    speed: dict[str, float] | None = None
    seconds: float = 0.0
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "passes": self.passes, "badness": self.badness,
                "physics": {k: v for k, v in self.score.items() if k != "points"}, "points": self.score.get("points", []),
                "speed": self.speed, "seconds": round(self.seconds, 2)}


class Tuner:
    def __init__(self, backend: Any, evalset: EvalSet, calib: np.ndarray, cfg: QuantizeConfig, log: Log) -> None:
        self.backend, self.ev, self.calib, self.cfg, self.log = backend, evalset, calib, cfg, log
        self.trials: list[Trial] = []
        self.bench_batch = evalset.latents[: cfg.batch]
        self.t0 = time.perf_counter()

    # -- one trial -------------------------------------------------------------------------
    def evaluate(self, name: str, build: Callable[[], Any], config: dict[str, Any], timed: bool = False) -> Trial:
        t = time.perf_counter()
        model = build()
        score = self.ev.score(run_batched(model, self.ev.latents, 100))
        trial = Trial(name, config, score, passes(score, self.cfg.tolerance), badness(score, self.cfg.tolerance), model=model)
        if timed or trial.passes:
            trial.speed = throughput(model, self.bench_batch)
        trial.seconds = time.perf_counter() - t
        self.trials.append(trial)
        sp = f", {trial.speed['showers_per_s']:.0f} showers/s" if trial.speed else ""
        self.log(f"  {'PASS' if trial.passes else 'fail'} {name}: worst |Ecal ratio - 1| {score['worst_ecal_rel']:.4f}, "
                 f"worst moment shift {score['worst_moment_shift']:.4f}{sp}")
        return trial

    def int8(self, name: str, units: list[str], calibration: str, float_precision: str, timed: bool = False) -> Trial:
        cfg = {"precision": "int8", "int8_units": list(units), "calibration": calibration, "float_precision": float_precision}
        return self.evaluate(name, lambda: self.backend.int8_model(self.calib, list(units), calibration, float_precision), cfg, timed)

    def out_of_time(self) -> bool:
        return time.perf_counter() - self.t0 > self.cfg.time_budget_s

    # -- recipes ---------------------------------------------------------------------------
    def naive(self) -> Trial:
        if self.cfg.precision == "int8":
            return self.int8("naive int8 (all units, min-max)", self.backend.units(self.calib), "minmax", "fp32", timed=True)
        return self.float(self.cfg.precision)

    def float(self, precision: str) -> Trial:
        return self.evaluate(f"{precision} (all layers)", lambda: self.backend.float_model(precision),
                             {"precision": precision}, timed=True)

    def physics_int8(self) -> Trial:
        units = self.backend.units(self.calib)
        cal0 = self.cfg.calibration
        self.log(f"[bold]units[/]: {len(units)} places where int8 can be switched: {', '.join(map(_short, units))}")
        self.log("[bold]1. sensitivity[/]: one unit in int8 at a time")
        sens: dict[str, float] = {}
        for u in units:  # units not reached within the time budget count as most sensitive
            sens[u] = float("inf") if self.out_of_time() else self.int8(f"only {_short(u)}", [u], cal0, "fp32").badness
        order = sorted(units, key=lambda u: sens[u])
        self.log("[bold]2. greedy accumulation[/], least sensitive first")
        accepted: list[str] = []
        best_cal = cal0
        for u in order:
            if self.out_of_time():
                break
            t = self.int8(f"+{_short(u)} -> {{{', '.join(_short(x) for x in accepted + [u])}}}", accepted + [u], cal0, "fp32")
            if t.passes:
                accepted.append(u)
        self.log("[bold]3. calibration[/]: other range estimators, re-admitting rejected units")
        for cal in CALIBRATIONS:
            if cal == cal0 or self.out_of_time() or self.backend.name == "torch":
                continue
            acc = list(accepted)
            base = self.int8(f"{cal}: {{{', '.join(map(_short, acc))}}}", acc, cal, "fp32")
            if not base.passes:
                continue
            for u in order:
                if u in acc or self.out_of_time():
                    continue
                t = self.int8(f"{cal}: +{_short(u)}", acc + [u], cal, "fp32")
                if t.passes:
                    acc.append(u)
            if len(acc) > len(accepted):
                accepted, best_cal = acc, cal
        if self.backend.name == "openvino":
            self.log("[bold]4. float remainder in reduced precision[/] (bf16, fp16), each calibration")
            for fprec in ("bf16", "fp16"):
                for cal in CALIBRATIONS:
                    if self.out_of_time():
                        break
                    self.int8(f"{cal}: {{{', '.join(map(_short, accepted))}}} + {fprec} rest", accepted, cal, fprec)
        return self.best()

    def head_to_head(self) -> list[Trial]:
        """Other tools at the same tolerance, for comparison (never chosen): the backend's float
        model and, on OpenVINO, NNCF's quantize_with_accuracy_control driven by our physics metric
        (metric = 1 - badness, so fp32 scores 1 and max_drop 1 is exactly our tolerance)."""
        out = [self.evaluate(f"{self.backend.name} fp32 (reference speed)", lambda: self.backend.float_model("fp32"),
                             {"precision": "fp32", "external": True}, timed=True)]
        if self.backend.name == "openvino":
            self.log("[bold]head to head[/]: NNCF quantize_with_accuracy_control at the same tolerance")
            tol = self.cfg.tolerance

            def metric(showers: np.ndarray) -> float:
                return 1.0 - min(badness(self.ev.score(showers), tol), 1e6)

            out.append(self.evaluate("NNCF quantize_with_accuracy_control",
                                     lambda: self.backend.accuracy_control(self.calib, self.ev.latents, metric, 1.0),
                                     {"precision": "int8", "external": True, "tool": "nncf.quantize_with_accuracy_control"},
                                     timed=True))
        return out

    def best(self) -> Trial:
        """The fastest passing trial, chosen reproducibly: among the trials within
        SPEED_TIE of the measured best, the one with the most int8 units, then a bf16 float
        part, then the earliest. Timing noise (a few %) cannot flip the choice unless two
        candidates differ by about SPEED_TIE."""
        ok = [t for t in self.trials if t.passes and t.speed and not t.config.get("external")]
        if not ok:
            return min((t for t in self.trials if not t.config.get("external")), key=lambda t: t.badness)
        top = max(t.speed["showers_per_s"] for t in ok)  # type: ignore[index]
        near = [t for t in ok if t.speed["showers_per_s"] >= (1 - SPEED_TIE) * top]  # type: ignore[index]
        return max(near, key=lambda t: (len(t.config.get("int8_units", [])), t.config.get("float_precision") == "bf16",
                                        -self.trials.index(t)))


def _short(unit: str) -> str:
    from caloquant.precision.backends.openvino_backend import short_name

    return short_name(unit)
