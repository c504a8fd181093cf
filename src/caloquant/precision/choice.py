"""The tuner's final choice (step 8 of :mod:`caloquant.precision.tuner`): the race of the
exact engine model (candidate zero) against the passing reduced-precision candidates, and the
decision in words. Functions of the tuner (its ``exact``, ``cfg``, ``bench_batch``, ``cpu``,
``kernels`` and ``race_info``), as in :mod:`caloquant.precision.tuner_steps`."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from caloquant.precision.trial import Trial
from caloquant.timing import load_snapshot, race as timing_race

log = logging.getLogger(__name__)
# the passing candidates fastest in their single timing that race the exact engine model (one
# timing on a loaded 2-core host is noisy: the same model measured 232 and 926 showers/s in one
# run; a 30 % band around the fastest single timing once left the later choice out of the race)
RACE_FIELD = 4
SPEED_TIE = 0.10  # 'faster' candidates within 10 % of the best ratio are equally fast


def final_race(tuner: Any, ok: list[Trial]) -> list[Trial]:
    """The final race: the exact engine model against the ``RACE_FIELD`` passing candidates
    fastest in their single timings, in paired interleaved rounds
    (:func:`caloquant.timing.race`: a single timing per trial taken minutes apart is too
    noisy, the same configuration measured 530 and 790 showers/s in one run on a shared
    2-core machine). Each candidate gets the race's median speed, its per-round speed
    ratios to the exact model, their interval and a verdict; the race goes to
    ``race_info`` (the manifest's ``race``). Returns the field, the exact model first."""
    exact = tuner.exact
    assert exact is not None and exact.speed is not None
    others = sorted(
        (t for t in ok if t is not exact),
        key=lambda t: -t.speed["showers_per_s"],  # type: ignore[index]
    )
    field = [exact] + others[:RACE_FIELD]
    # within what is left of the tuning budget (at least 15 s: the decision needs its rounds)
    rc = replace(
        tuner.cfg.race, budget_s=min(tuner.cfg.race.budget_s, max(tuner.budget_left_s(), 15.0))
    )
    log.info(
        "7. final race: the exact engine model and %d passing candidates, paired "
        "interleaved rounds (%d to %d, up to %.0f s; tie band +-%.0f %%)",
        len(field) - 1,
        rc.min_rounds,
        rc.max_rounds,
        rc.budget_s,
        100 * rc.tie_band,
    )
    res = timing_race(
        {str(i): t.model for i, t in enumerate(field)},
        "0",
        tuner.bench_batch,
        tuner.cfg.timing,
        rc,
    )
    rows = []
    for i, t in enumerate(field):
        r = res["models"][str(i)]
        t.speed = dict(
            t.speed or {},
            showers_per_s=r["showers_per_s"],
            ms_per_shower=1000.0 / r["showers_per_s"],
            race=r["rounds"],
        )
        row = {"name": t.name, "showers_per_s_rounds": r["rounds"]}
        if i:
            t.speed |= {"ratio_to_exact": r.get("ratio"), "verdict": r["verdict"]}
            row |= {
                k: r[k] for k in ("ratio", "ratio_interval", "ratio_rounds", "verdict") if k in r
            }
            log.info(
                "  %s: %.0f showers/s, %.3fx the exact model [%.3f, %.3f]: %s",
                t.name,
                r["showers_per_s"],
                r.get("ratio", float("nan")),
                *r.get("ratio_interval", [float("nan")] * 2),
                r["verdict"],
            )
        else:
            log.info("  %s: %.0f showers/s", t.name, r["showers_per_s"])
        rows.append(row)
    tuner.race_info = {
        "reference": exact.name,
        "candidates": rows,
        "rounds": res["rounds"],
        "seconds": res["seconds"],
        "host_load": {
            "other_load_pct": res["other_load_pct"],
            "loadavg_1m_before": (res["load_before"]["loadavg_1_5_15"] or [None])[0],
            "loadavg_1m_after": (load_snapshot()["loadavg_1_5_15"] or [None])[0],
        },
        "config": rc.to_dict(),
        "cpu_class": tuner.cpu["cpu_class"],
        "kernels": tuner.kernels,
    }
    return field


def decision(tuner: Any, choice: Trial) -> dict[str, str]:
    """The race's outcome in words: which model, and where it is the exact one, why no
    reduced precision pays on this CPU."""
    info = tuner.race_info or {}
    if choice is not tuner.exact:
        c = next((r for r in info.get("candidates", []) if r["name"] == choice.name), None)
        if c is None or "ratio_interval" not in c:  # no race: the exact model failed
            return {
                "decision": "reduced precision",
                "why": "the exact engine model did not meet the tolerance (no race)",
            }
        lo, hi = c["ratio_interval"]
        return {
            "decision": "reduced precision",
            "why": (
                f"{choice.name} is {c['ratio']:.2f}x the exact fp32 engine model "
                f"({100 * info['config']['confidence']:.0f} % interval {lo:.2f}-{hi:.2f}, "
                f"{info['rounds']} paired rounds), beyond the "
                f"{100 * info['config']['tie_band']:.0f} % tie band"
            ),
        }
    cands = [r for r in info.get("candidates", []) if "ratio" in r]
    if not cands:
        return {
            "decision": "exact model",
            "why": "no reduced-precision candidate met the tolerance",
        }
    conf, band = 100 * info["config"]["confidence"], 100 * info["config"]["tie_band"]
    faster = [r for r in cands if r["verdict"] == "faster"]
    if faster:
        return {
            "decision": "exact model",
            "why": (
                "the reduced-precision candidates faster than the exact fp32 engine model ("
                + ", ".join(f"{r['name']} {r['ratio']:.2f}x" for r in faster)
                + ") did not meet the tolerance again on the independent confirmation set"
            ),
        }
    best = max(cands, key=lambda r: r["ratio"])
    lo, hi = best["ratio_interval"]
    k = tuner.kernels
    return {
        "decision": "exact model",
        "why": (
            f"no reduced-precision candidate is faster than the exact fp32 engine model beyond "
            f"the {band:.0f} % tie band with {conf:.0f} % confidence (the best, {best['name']}: "
            f"{best['ratio']:.2f}x, interval {lo:.2f}-{hi:.2f}, {info['rounds']} paired "
            f"rounds): reduced precision does not pay on this CPU ({tuner.cpu['cpu_class']}: "
            f"int8 {k['int8']}; bf16 {k['bf16']}; fp16 {k['fp16']})"
        ),
    }


def ranked_candidates(tuner: Any, ok: list[Trial]) -> list[Trial]:
    """The passing trials in order of preference (see ``Tuner.best``): without the exact model
    among them (or with nothing else), by single timing; otherwise the final race, the 'faster'
    candidates (ratios within SPEED_TIE of the best tied: most int8 units, then a bf16 float
    part, then the earliest), and the exact model last."""
    exact = tuner.exact
    if exact is None or exact not in ok or len(ok) == 1:
        return sorted(ok, key=lambda t: -t.speed["showers_per_s"])  # type: ignore[index]
    field = final_race(tuner, ok)
    faster = [t for t in field[1:] if t.speed["verdict"] == "faster"]  # type: ignore[index]
    top = max((t.speed["ratio_to_exact"] for t in faster), default=0.0)  # type: ignore[index]
    near = [t for t in faster if t.speed["ratio_to_exact"] >= (1 - SPEED_TIE) * top]  # type: ignore[index]
    ranked = sorted(
        near,
        key=lambda t: (
            len(t.config.get("int8_units", [])),
            t.config.get("float_precision") == "bf16",
            -tuner.trials.index(t),
        ),
        reverse=True,
    )
    ranked += sorted(
        (t for t in faster if t not in near),
        key=lambda t: -t.speed["ratio_to_exact"],  # type: ignore[index]
    )
    return ranked + [exact]
