"""Naive and physics-aware precision recipes.

Physics recipe (int8), for any generator and any backend. ``Tuner.physics_int8`` runs it:
steps 1 to 4 up to the range estimator per unit are in that method; the later steps (the
estimator per unit, 5, 6, 7) are functions in :mod:`caloquant.precision.tuner_steps` that it
calls in that order; 8 and 9 are ``Tuner`` methods here. Each trial is a
:class:`~caloquant.precision.trial.Trial`.

1. *Units*: the places where the backend can switch int8 on or off (for OpenVINO/NNCF the
   ops that receive int8 quantizers by default, e.g. convolutions, but also upsampling
   nodes whose input quantizer feeds the next convolution).
2. *Sensitivity*: each unit alone in int8, everything else float; physics on paired latents.
3. *Greedy accumulation*: first every unit that passed alone, at once (one trial; it often
   passes); then (all of them where that failed) units from least to most sensitive are
   switched to int8 one by one; a unit stays int8 only if the whole configuration still meets
   the tolerance.
4. *Calibration*: the accepted set is re-tried with every range estimator, re-admitting
   rejected units where a better calibration allows it; then (where the backend can mix them)
   each rejected unit is re-tried with a range estimator of its own
   (``tuner_steps.per_unit_calibration``).
5. *Equalized graphs* (:mod:`caloquant.precision.equalize`): the same function with the
   ranges of the convolution inputs moved into the weights; rejected units are re-tried on
   each such graph, and a graph that admits more int8 units becomes the working graph
   (``tuner_steps.equalized``).
6. *Quantization-aware fine-tuning* (:mod:`caloquant.precision.qat`, where the backend states
   its int8 scheme): for each rejected unit, least sensitive first, the working graph is
   fine-tuned against the fp32 model with the accepted units and that one in int8, starting
   from the range estimator under which that unit did best (per-unit calibration); the unit is
   accepted if the engine's real int8 model of the fine-tuned weights meets the tolerance, and
   the fine-tuned graph becomes the working graph (weights trained for exactly the
   configuration that is checked; ``tuner_steps.finetuned``).
7. *Float precision* (``tuner_steps.reduced_float``): the accepted set with bf16 or fp16
   instead of fp32 for the float remainder (where the backend supports it). Where that fails
   and the engine can split its float part (``float_split``; ``tuner_steps.split_float_part``),
   the reduced precision runs up to a cut and fp32 from there: cut points from the last to the
   first (most reduced precision first), at each the accepted int8 units with the split float
   part, then the split float part alone (no int8: on the CERN 3DGAN int8 on the dense layer
   and bf16 add up to a failure, while bf16 up to conv4 passes, and is the faster of the two,
   docs/findings.md 11); the first cut that passes ends the search for that precision. The
   physics check decides per CPU (bf16 Conv3D is wrong on the Intel AMX class, findings 1), so
   the split found is the tuning CPU's.
0. *Candidate zero* (``Tuner.exact_candidate``): the engine's fp32 model of the rewritten
   graph, exact to float rounding. It is in every final race, and is the answer wherever no
   reduced precision beats it.
8. *Speed is measured*, never assumed (``Tuner.best``, :mod:`caloquant.precision.choice`):
   every configuration that meets the tolerance is timed (batch, threads as configured); the
   fastest ones race the exact model in paired interleaved rounds, and a reduced-precision
   candidate wins only if its speed ratio to the exact model lies beyond the tie band with
   confidence (``QuantizeConfig.race``; more rounds while that is open). The manifest's
   ``race`` records the ratios, their intervals, the host load and the decision in words.
   A float precision the engine executes as another one already tried (bf16 as fp32 without
   bf16 arithmetic, fp16 as bf16 without fp16 arithmetic) is not trialled at all
   (``skipped_precisions``).
9. *Confirmation*: "meets the tolerance" means every deviation plus ``margin_sigma`` standard
   errors is within it (a 200-shower point's error is of the order of the tolerance), and the
   choice must pass again on a second, independent set of latents; where it does not, the next
   candidate in order of preference is confirmed instead (``Tuner.confirm``).

Every trial (configuration, physics numbers, speed, time) goes into the tuning log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from caloquant.precision import tuner_steps as steps
from caloquant.precision.backends import Backend
from caloquant.precision.choice import decision, ranked_candidates
from caloquant.precision.config import QuantizeConfig
from caloquant.precision.evaluation import (
    EvalSet,
    badness,
    passes,
    point_badness,
    run_batched,
    within_without_margin,
)
from caloquant.precision.trial import Trial
from caloquant.precision.tuner_steps import QatFn
from caloquant.runtime import cpu_identity, fast_kernels
from caloquant.timing import throughput

log = logging.getLogger(__name__)


class Tuner:
    def __init__(
        self,
        backend: Backend,
        evalset: EvalSet,
        calib: np.ndarray,
        cfg: QuantizeConfig,
        graphs: dict[str, Callable[[], Backend | None]] | None = None,
        confirm_set: Callable[[], EvalSet] | None = None,
        qat: QatFn | None = None,
    ) -> None:
        """``graphs``: other graphs of the same function (same unit names), by name, each built
        on demand as a backend (or None when it cannot be built exactly); the physics recipe
        tries them on the units it had to reject.
        ``confirm_set``: builds a second, independent evaluation set on which the choice must
        pass again before it is returned (built once, when first needed).
        ``qat``: (graph to start from, name of the new graph, int8 units, calibration, minutes
        (0: the QAT settings decide), seconds left of the tuning budget) -> the backend of the
        fine-tuned graph (None when the fine-tuning diverged) and what the fine-tuning did."""
        self.backend, self.ev, self.calib, self.cfg = backend, evalset, calib, cfg
        self.qat = qat
        self.qat_info: list[dict[str, Any]] | None = None
        # graph -> the engine's bias correction, where not its default
        self.bias_correction: dict[str, str] = {}
        self.confirm_set = confirm_set
        self._confirm_ev: EvalSet | None = None
        self.graph, self.graphs = "original", graphs or {}
        self.caps = backend.capabilities
        self.trials: list[Trial] = []
        self.step = ""  # the technique being tried (recorded on every trial)
        self.bench_batch = evalset.latents[: cfg.batch]
        self.t0 = time.perf_counter()
        self.exact: Trial | None = None  # candidate zero (physics int8 search)
        self.race_info: dict[str, Any] | None = None
        self.skipped_precisions: list[dict[str, str]] = []
        self.search: dict[str, Any] | None = None  # what the int8 search admitted
        self._executes_as: dict[str, str] = {}
        self.cpu = cpu_identity()
        self.kernels = fast_kernels(self.cpu["flags"])  # type: ignore[arg-type]

    # -- one trial -------------------------------------------------------------------------
    def evaluate(
        self, name: str, build: Callable[[], Any], config: dict[str, Any], timed: bool = False
    ) -> Trial:
        t = time.perf_counter()
        model = build()
        score = self.score(model, self.ev)
        trial = Trial(
            name,
            config,
            score,
            passes(score, self.cfg.tolerance),
            badness(score, self.cfg.tolerance),
            model=model,
            step=self.step,
        )
        if timed or trial.passes:
            trial.speed = throughput(model, self.bench_batch, self.cfg.timing)
        trial.seconds = time.perf_counter() - t
        self.trials.append(trial)
        sp = f", {trial.speed['showers_per_s']:.0f} showers/s" if trial.speed else ""
        ext = score.get("extended")
        more = (
            f" (+{ext['showers_added_per_point']} showers at {ext['points_gev']} GeV)"
            if "extended" in score
            else ""
        )
        log.info(
            "  %s %s: worst |Ecal ratio - 1| %.4f, worst moment shift %.4f%s%s",
            "PASS" if trial.passes else "fail",
            name,
            score["worst_ecal_rel"],
            score["worst_moment_shift"],
            more,
            sp,
        )
        return trial

    def score(self, model: Any, ev: EvalSet) -> dict[str, Any]:
        """Physics of ``model`` on ``ev``; a candidate whose deviations are within the tolerance
        but not with the error margin is scored again with ``extend_factor`` times more showers
        at the points that fail (the same latents first, then an independent stream)."""
        out = run_batched(model, ev.latents, 100)
        score = ev.score(out)
        tol, k = self.cfg.tolerance, self.cfg.extend_factor
        if (
            k
            and ev.fp32 is not None
            and not passes(score, tol)
            and within_without_margin(score, tol)
        ):
            pts = tuple(p["energy_gev"] for p in score["points"] if point_badness(p, tol) > 1.0)
            n = k * int(np.count_nonzero(ev.energies == ev.points[0]))
            big = ev.extended(pts, n)
            score = big.score(
                np.concatenate([out, run_batched(model, big.latents[len(ev.latents) :], 100)])
            )
            score["extended"] = {"points_gev": list(pts), "showers_added_per_point": n}
        return score

    def int8(
        self,
        name: str,
        units: list[str],
        calibration: str,
        float_precision: str,
        timed: bool = False,
        graph: tuple[str, Backend] | None = None,
        f32_from: str | None = None,
    ) -> Trial:
        gname, be = graph or (self.graph, self.backend)
        bc = self.bias_correction.get(gname)
        cfg = (
            {
                "precision": "int8",
                "int8_units": list(units),
                "calibration": calibration,
                "float_precision": float_precision,
                "graph": gname,
            }
            | ({"bias_correction": bc} if bc else {})
            | ({"f32_from": self.short(f32_from)} if f32_from else {})
        )
        return self.evaluate(
            name if gname == "original" else f"[{gname}] {name}",
            lambda: be.int8_model(
                self.calib, list(units), calibration, float_precision, bc, f32_from=f32_from
            ),
            cfg,
            timed,
        )

    def short(self, unit: str) -> str:
        return self.backend.unit_label(unit)

    def budget_left_s(self) -> float:
        return self.cfg.time_budget_s - (time.perf_counter() - self.t0)

    def out_of_time(self) -> bool:
        return self.budget_left_s() < 0

    def begin_step(self, technique: str, msg: str, *args: Any) -> None:
        """The technique the next trials belong to (recorded on each), logged."""
        self.step = technique
        log.info(msg, *args)

    # -- recipes ---------------------------------------------------------------------------
    def run(self) -> Trial:
        """The configured recipe: naive, the physics int8 search, or one float precision."""
        if self.cfg.recipe == "naive":
            return self.naive()
        if self.cfg.searches_int8:
            return self.physics_int8()
        return self.float(self.cfg.precision)

    def naive(self) -> Trial:
        if self.cfg.precision == "int8":
            return self.int8(
                "naive int8 (all units, min-max)",
                self.backend.units(self.calib),
                "minmax",
                "fp32",
                timed=True,
            )
        return self.float(self.cfg.precision)

    def float(self, precision: str) -> Trial:
        return self.evaluate(
            f"{precision} (all layers)",
            lambda: self.backend.float_model(precision),
            {"precision": precision},
            timed=True,
        )

    def physics_int8(self) -> Trial:
        self.exact_candidate()
        units = self.backend.units(self.calib)
        cal0 = self.cfg.calibration
        log.info(
            "units: %d places where int8 can be switched: %s",
            len(units),
            ", ".join(map(self.short, units)),
        )
        self.begin_step("sensitivity", "1. sensitivity: one unit in int8 at a time")
        sens: dict[str, float] = {}
        passed_alone: set[str] = set()
        for u in units:  # units not reached within the time budget count as most sensitive
            if self.out_of_time():
                sens[u] = float("inf")
                continue
            t = self.int8(f"only {self.short(u)}", [u], cal0, "fp32")
            sens[u] = t.badness
            if t.passes:
                passed_alone.add(u)
        order = sorted(units, key=lambda u: sens[u])
        accepted: list[str] = []
        best_cal = cal0
        alone = [u for u in order if u in passed_alone]
        if len(alone) > 1 and not self.out_of_time():
            # one trial instead of one per unit when the units do not add up to a failure (the
            # Conv2D model trained here: all 29 units pass alone and together, 29 trials saved)
            self.begin_step(
                "greedy accumulation",
                "2. every unit that passed alone, at once (%d units)",
                len(alone),
            )
            if self.int8(f"all {len(alone)} units that passed alone", alone, cal0, "fp32").passes:
                accepted = list(alone)
        self.begin_step(
            "greedy accumulation",
            "2. greedy accumulation, least sensitive first%s",
            " (the rest)" if accepted else "",
        )
        for u in order:
            if u in accepted:
                continue
            if self.out_of_time():
                break
            t = self.int8(
                f"+{self.short(u)} -> {{{', '.join(self.short(x) for x in accepted + [u])}}}",
                accepted + [u],
                cal0,
                "fp32",
            )
            if t.passes:
                accepted.append(u)
        self.begin_step(
            "range estimators",
            "3. calibration: other range estimators, re-admitting rejected units",
        )
        for cal in self.caps.calibrations:
            if cal == cal0 or self.out_of_time():
                continue
            acc = list(accepted)
            base = self.int8(f"{cal}: {{{', '.join(map(self.short, acc))}}}", acc, cal, "fp32")
            if not base.passes:
                continue
            for u in order:
                if u in acc or self.out_of_time():
                    continue
                t = self.int8(f"{cal}: +{self.short(u)}", acc + [u], cal, "fp32")
                if t.passes:
                    acc.append(u)
            if len(acc) > len(accepted):
                accepted, best_cal = acc, cal
        # steps 4 (second half) to 7: caloquant.precision.tuner_steps
        accepted, best_cal = steps.per_unit_calibration(self, order, accepted, best_cal)
        accepted, best_cal = steps.equalized(self, order, accepted, best_cal)
        accepted, best_cal = steps.finetuned(self, order, accepted, best_cal)
        self.search = {
            "int8_units": [self.short(u) for u in accepted],
            "float_units": [self.short(u) for u in units if u not in accepted],
            "calibration": best_cal,
            "graph": self.graph,
        }
        steps.reduced_float(self, accepted, best_cal)
        return self.best()

    def exact_candidate(self) -> None:
        """Candidate zero: the engine's fp32 model of the graph the search starts from (the
        rewritten graph, the same function as the original to float rounding). It needs no
        physics margin, and every reduced-precision candidate must beat it in the final race
        (:meth:`best`): on a CPU without fast int8 or bf16 kernels it is the answer."""
        self.begin_step(
            "exact engine model", "0. candidate zero: the engine's fp32 model of [%s]", self.graph
        )
        self.exact = self.evaluate(
            "fp32 engine model (exact)",
            lambda: self.backend.float_model("fp32"),
            {"precision": "fp32", "float_precision": "fp32", "graph": self.graph, "exact": True},
            timed=True,
        )

    def executes_as(self, precision: str) -> str:
        """The precision the engine executes a float ``precision`` as on this CPU (bf16 as fp32
        without bf16 arithmetic, fp16 as bf16 without fp16 arithmetic): the engine's own answer."""
        if precision not in self._executes_as:
            self._executes_as[precision] = self.backend.float_model(precision).executed_precision()
        return self._executes_as[precision]

    def skip_precision(self, precision: str, executes_as: str) -> None:
        """``precision`` is not trialled: the engine runs it as ``executes_as``, already tried."""
        why = (
            f"the engine executes {precision} as {executes_as} on this CPU "
            f"({self.cpu['cpu_class']}: {precision} arithmetic "
            f"{self.kernels.get(precision, 'unknown')}); {executes_as} is already tried"
        )
        self.skipped_precisions.append(
            {"precision": precision, "executes_as": executes_as, "reason": why}
        )
        log.info("  %s: not tried, %s", precision, why)

    def best(self) -> Trial:
        """The choice. Without a race (one passing trial, or no exact candidate): that trial.
        With the exact engine model (physics int8 search): the final race
        (:func:`~caloquant.precision.choice.ranked_candidates`); a
        reduced-precision candidate is chosen only if it is faster than the exact model beyond
        the tie band with confidence ('faster'); among those, the ones within SPEED_TIE of the
        fastest ratio, the one with the most int8 units (smaller file), then a bf16 float part,
        then the earliest. It must pass again on independent latents; otherwise the next one
        is confirmed; the exact model is the answer when no candidate is faster or none is
        confirmed (a reduced precision does not pay on this CPU: the manifest's ``race`` says
        why)."""
        ok = [t for t in self.trials if t.passes and t.speed and not t.config.get("external")]
        if not ok:
            return min(
                (t for t in self.trials if not t.config.get("external")), key=lambda t: t.badness
            )
        ranked = ranked_candidates(self, ok)
        if self.confirm_set is not None:
            fallback = [self.exact] if self.exact in ok else ranked  # nothing confirmed
            ranked = next((ranked[i:] for i, t in enumerate(ranked) if self.confirm(t)), fallback)
        choice = ranked[0]
        if self.exact is not None:  # the physics int8 search: say what was chosen and why
            info = self.race_info or {"reference": self.exact.name, "candidates": []}
            self.race_info = info | decision(self, choice)
        return choice

    def confirm(self, trial: Trial) -> bool:
        """The same physics check on the second latent set; the result goes into the trial."""
        if self._confirm_ev is None:
            self._confirm_ev = self.confirm_set()  # type: ignore[misc]
            log.info(
                "8. confirmation on %d independent paired showers", len(self._confirm_ev.latents)
            )
        score = self.score(trial.model, self._confirm_ev)
        ok = passes(score, self.cfg.tolerance)
        trial.confirmation = {
            "passes": ok,
            "badness": badness(score, self.cfg.tolerance),
            "physics": {k: v for k, v in score.items() if k != "points"},
            "points": score.get("points", []),
        }
        log.info(
            "  %s %s on the second set: worst |Ecal ratio - 1| %.4f, worst moment shift %.4f",
            "CONFIRMED" if ok else "NOT confirmed",
            trial.name,
            score["worst_ecal_rel"],
            score["worst_moment_shift"],
        )
        return ok
