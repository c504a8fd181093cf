"""The later steps of the physics int8 recipe (steps 4 to 7 of the description in
:mod:`caloquant.precision.tuner`, called from ``Tuner.physics_int8``): a range estimator per
unit, equalized graphs, quantization-aware fine-tuning, the reduced float remainder and the
split float part. Each is a function of the tuner, using only its public attributes and methods
(the :class:`TunerLike` protocol), so this module does not import the tuner."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from caloquant.precision.backends import Backend, Capabilities
from caloquant.precision.config import (
    QuantizeConfig,
    parse_calibration,
    per_unit_calibration as calibration_spec,
)
from caloquant.precision.trial import Trial

log = logging.getLogger(__name__)
# (graph to start from, name of the new graph, int8 units, calibration, minutes, seconds left)
# -> the fine-tuned graph's backend (None: diverged) and what the fine-tuning did
QatFn = Callable[[str, str, list[str], str, float, float], tuple[Backend | None, dict[str, Any]]]


class TunerLike(Protocol):
    """What the steps use of :class:`caloquant.precision.tuner.Tuner`."""

    backend: Backend  # the working graph's backend
    graph: str  # the working graph's name
    graphs: dict[str, Callable[[], Backend | None]]
    caps: Capabilities
    cfg: QuantizeConfig
    calib: np.ndarray
    trials: list[Trial]
    qat: QatFn | None
    qat_info: list[dict[str, Any]] | None
    bias_correction: dict[str, str]

    def evaluate(
        self, name: str, build: Callable[[], Any], config: dict[str, Any], timed: bool = False
    ) -> Trial: ...

    def int8(
        self,
        name: str,
        units: list[str],
        calibration: str,
        float_precision: str,
        timed: bool = False,
        graph: tuple[str, Backend] | None = None,
        f32_from: str | None = None,
    ) -> Trial: ...

    def short(self, unit: str) -> str: ...

    def budget_left_s(self) -> float: ...

    def out_of_time(self) -> bool: ...

    def begin_step(self, technique: str, msg: str, *args: Any) -> None: ...

    def executes_as(self, precision: str) -> str: ...

    def skip_precision(self, precision: str, executes_as: str) -> None: ...


def per_unit_calibration(
    tuner: TunerLike, order: list[str], accepted: list[str], cal: str
) -> tuple[list[str], str]:
    """Step 4, second half: re-try each rejected unit with a range estimator of its own, the
    accepted units keeping theirs (where the backend can mix them): the best estimator differs
    per unit (CERN 3DGAN: conv2's input is 7.8 % off with min-max and 1.3 % with percentile
    ranges, while percentile ranges on the dense and conv1 inputs fail the tolerance)."""
    rejected = [u for u in order if u not in accepted]
    if not (tuner.caps.per_unit_calibration and rejected) or tuner.out_of_time():
        return accepted, cal
    tuner.begin_step(
        "range estimator per unit",
        "3b. a range estimator per unit: re-trying %s",
        ", ".join(map(tuner.short, rejected)),
    )
    default, over = parse_calibration(cal)
    acc = list(accepted)
    for u in rejected:
        for est in tuner.caps.calibrations:
            if est == over.get(tuner.short(u), default) or tuner.out_of_time():
                continue
            spec = calibration_spec(default, over | {tuner.short(u): est})
            if tuner.int8(f"{spec}: +{tuner.short(u)}", acc + [u], spec, "fp32").passes:
                acc.append(u)
                over[tuner.short(u)] = est
                break
    return acc, calibration_spec(default, over)


def equalized(
    tuner: TunerLike, order: list[str], accepted: list[str], cal: str
) -> tuple[list[str], str]:
    """Step 5: re-try the rejected units (least sensitive first) on each equalized graph with
    the calibration found so far; the graph that admits most units becomes the working graph."""
    rejected = [u for u in order if u not in accepted]
    if not (tuner.graphs and rejected):
        return accepted, cal
    tuner.begin_step(
        "exact equalization",
        "4. equalized graphs: re-trying %s",
        ", ".join(map(tuner.short, rejected)),
    )
    best: tuple[list[str], str, Backend] | None = None
    for gname, make in tuner.graphs.items():
        if tuner.out_of_time():
            break
        be = make()
        if be is None:  # the graph could not be built exactly
            continue
        acc = list(accepted)
        for u in rejected:
            if tuner.out_of_time():
                break
            if tuner.int8(
                f"{cal}: +{tuner.short(u)}", acc + [u], cal, "fp32", graph=(gname, be)
            ).passes:
                acc.append(u)
        if len(acc) > len(best[0] if best else accepted):
            best = (acc, gname, be)
    if best is None:
        return accepted, cal
    acc, tuner.graph, tuner.backend = best
    log.info("  working graph: %s (int8: %s)", tuner.graph, ", ".join(map(tuner.short, acc)))
    return acc, cal


def finetuned(
    tuner: TunerLike, order: list[str], accepted: list[str], cal: str
) -> tuple[list[str], str]:
    """Step 6, QAT, one rejected unit at a time (least sensitive first): the working graph is
    fine-tuned with the accepted units and that one in int8, and the unit stays int8 if the
    engine's int8 model of the fine-tuned weights passes; the next unit starts from there.
    Each unit starts from the range estimator under which it did best so far (per-unit
    calibration: on the CERN 3DGAN conv2's input is 7.8 % off with min-max ranges and 1.3 %
    with percentile ones); the int8 check then uses that estimator for every unit, so an
    accepted unit carries its calibration into the working set. Each unit gets an equal
    share of what is left of the QAT budget."""
    rejected = [u for u in order if u not in accepted]
    if not (tuner.qat and tuner.caps.qat and rejected) or tuner.out_of_time():
        return accepted, cal
    tuner.begin_step(
        "quantization-aware fine-tuning",
        "5. quantization-aware fine-tuning of [%s], one rejected unit at a time",
        tuner.graph,
    )
    acc = list(accepted)
    t0 = time.perf_counter()
    budget = 60 * tuner.cfg.qat.minutes
    tuner.qat_info = []
    for i, u in enumerate(rejected):
        if tuner.out_of_time() or (budget > 0 and time.perf_counter() - t0 >= budget):
            break
        share = (
            (budget - (time.perf_counter() - t0)) / (len(rejected) - i) / 60 if budget > 0 else 0.0
        )
        gname = f"{tuner.graph}+qat:{tuner.short(u)}"
        cal_u = best_calibration(tuner, acc + [u], cal)
        be, info = tuner.qat(tuner.graph, gname, acc + [u], cal_u, share, tuner.budget_left_s())
        tuner.qat_info.append(info | {"graph": gname, "unit": tuner.short(u), "calibration": cal_u})
        if be is None:
            continue
        tuner.bias_correction[gname] = "none"  # the fine-tuning learned its biases
        if tuner.int8(
            f"{cal_u}: +{tuner.short(u)}", acc + [u], cal_u, "fp32", graph=(gname, be)
        ).passes:
            acc.append(u)
            cal = cal_u
            tuner.graph, tuner.backend = gname, be
            log.info(
                "  working graph: %s (int8: %s, %s ranges)",
                gname,
                ", ".join(map(tuner.short, acc)),
                cal,
            )
    return acc, cal


def best_calibration(tuner: TunerLike, units: list[str], default: str) -> str:
    """The range estimator whose trial of exactly these int8 units on the working graph did
    best (lowest badness); ``default`` where there was no such trial."""
    tried = [
        t
        for t in tuner.trials
        if set(t.config.get("int8_units", ())) == set(units)
        and t.config.get("graph") == tuner.graph
        and t.config.get("float_precision") == "fp32"
    ]
    return min(tried, key=lambda t: t.badness).config["calibration"] if tried else default


def reduced_float(tuner: TunerLike, accepted: list[str], cal: str) -> None:
    """Step 7: the accepted int8 units (with the range estimators chosen for them) and each
    reduced float precision the backend offers for the float remainder; the precisions that
    fail go on to :func:`split_float_part`. A precision the engine executes as one already
    tried (fp32 by every trial so far; bf16 runs as fp32 without bf16 arithmetic, fp16 as
    bf16 without fp16 arithmetic) is not trialled: it would time and report the same model
    under another name (``TunerLike.skip_precision``)."""
    if not tuner.caps.float_remainders or tuner.out_of_time():
        return
    tried, todo = {"fp32"}, []
    for fprec in tuner.caps.float_remainders:
        ex = tuner.executes_as(fprec)
        if ex in tried:
            tuner.skip_precision(fprec, ex)
        else:
            tried.add(ex)
            todo.append(fprec)
    if not todo:
        return
    tuner.begin_step(
        "reduced float remainder",
        "6. float remainder in reduced precision (%s)",
        ", ".join(todo),
    )
    failed = []
    for fprec in todo:
        if tuner.out_of_time():
            break
        if not tuner.int8(
            f"{cal}: {{{', '.join(map(tuner.short, accepted))}}} + {fprec} rest",
            accepted,
            cal,
            fprec,
        ).passes:
            failed.append(fprec)
    split_float_part(tuner, failed, accepted, cal)


def split_float_part(
    tuner: TunerLike, precisions: list[str], accepted: list[str], cal: str
) -> None:
    """Step 7, second half (logged as 6b): the reduced float ``precisions`` that failed as the
    whole float remainder, run up to a cut and in fp32 from there (each executes as a precision
    of its own: :func:`reduced_float` skipped the others)."""
    if not (tuner.caps.float_split and precisions) or tuner.out_of_time():
        return
    points = tuner.backend.split_points(tuner.calib)
    if not points:
        return
    tuner.begin_step(
        "split float part",
        "6b. reduced float precision up to a cut, fp32 from there (cuts: %s)",
        ", ".join(map(tuner.short, points)),
    )
    for fprec in precisions:
        for cut in reversed(points):
            if tuner.out_of_time():
                return
            where = f"{fprec} up to {tuner.short(cut)}, fp32 from there"
            if (
                accepted
                and tuner.int8(
                    f"{cal}: {{{', '.join(map(tuner.short, accepted))}}} + {where}",
                    accepted,
                    cal,
                    fprec,
                    f32_from=cut,
                ).passes
            ):
                break
            if tuner.evaluate(
                f"{where} (no int8)",
                lambda: tuner.backend.float_model(fprec, f32_from=cut),
                {
                    "precision": fprec,
                    "float_precision": fprec,
                    "f32_from": tuner.short(cut),
                    "graph": tuner.graph,
                },
            ).passes:
                break
