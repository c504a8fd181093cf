"""Per-epoch physics validation and best-epoch selection.

At each epoch's end the generator, converted to a GeV checkpoint, draws one shower per
validation shower (same incident energies, a fixed noise seed, so epochs differ only by their
weights). The validation set is at most ``val_n`` held-out showers spread evenly over the
held-out rows. Two metrics compare the samples (``epoch_metrics``): the selection metric (per
energy bin, pulls of the mean response and the resolution, and of the mean shower moments,
against their statistical errors) selects the epoch; the authors' optimisation metric is
computed on the showers inside its windows and recorded beside it (``authors_metric``). Every
epoch's record (``validation.json``, ``last.pt``'s history) holds both, and ``metric``, the value
the run selects by. The lowest wins; ties keep the earlier epoch; the first epoch is selected
whatever its metric, so a model is always written.

**Too little validation data.** A bin of the selection metric needs ``MIN_PER_BIN`` showers
(below 10 the spread of a bin, with an error ~1/sqrt(2(n-1)) = 24 % at 10, says little). Bins
with fewer are merged with their smaller neighbour until each has enough (empty bins first,
silently: a gap in the energies is no fallback); when even one bin of all the showers has too
few, the run selects the last epoch. Either fallback, and an authors' metric that cannot be
computed (fewer than 2 showers in a window), is logged once with the counts, and recorded
(``config.json`` and ``validation.json``: ``plan``; ``summary.json``: ``selected_by``). A run
started by a caloquant that selected by the authors' metric keeps selecting by it when resumed:
its first epochs have no selection metric to compare with.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.models import ModelSpec, TorchGenerator, generate_batches
from caloquant.train.data import FileRows, load_rows
from caloquant.train.epoch_metrics import (
    AUTHORS_POINTS_GEV,
    BIN_WIDTH_GEV,
    HALF_WIDTH_GEV,
    Summary,
    authors_metric,
    bin_index,
    bin_labels,
    in_windows,
    merge_bins,
    metric_points,
    natural_edges,
    selection_metric,
    summarise,
)

__all__ = [
    "AUTHORS_POINTS_GEV",
    "HALF_WIDTH_GEV",
    "SelectionPlan",
    "ValidationSet",
    "in_windows",
    "metric_points",
    "plan_selection",
    "score",
]

VALIDATION_NOISE_SEED = 12345  # the same latent vectors every epoch
MIN_PER_BIN = 10
BY_SELECTION, BY_AUTHORS, BY_LAST = "selection_metric", "authors_metric", "last_epoch"
RULES = {
    BY_SELECTION: "selection metric (energy + shape pulls, epoch_metrics.py), lower is better",
    BY_AUTHORS: "the authors' optimisation metric (physics.md 2.6), lower is better",
    BY_LAST: "the last epoch (too little validation data for the selection metric)",
}


@dataclass(frozen=True)
class SelectionPlan:
    """How a run selects, decided once from the validation energies."""

    n: int
    edges: tuple[float, ...] = ()  # the selection metric's energy bins (epoch_metrics.bin_index)
    labels: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()
    authors_points: tuple[float, ...] = ()  # () = the authors' metric is not computed
    rule: str = BY_LAST
    notes: tuple[str, ...] = ()  # said once in the log: fallbacks and why

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule_meaning": RULES[self.rule]}


def plan_selection(energies: np.ndarray) -> SelectionPlan:
    """Bins of the selection metric, points of the authors' metric, the rule and its notes."""
    e = np.asarray(energies, dtype=np.float64)
    notes: list[str] = []
    try:
        points: tuple[float, ...] = tuple(metric_points(e))
    except CaloquantError as exc:
        points = ()
        notes.append(f"the authors' metric is not computed ({exc})")
    if e.size == 0:
        last = (
            "selection: the validation set is empty, so the selection falls back to the last epoch"
        )
        return SelectionPlan(0, notes=(last,))
    edges, fixed = natural_edges(e)
    counts = np.bincount(bin_index(e, edges), minlength=len(edges) - 1).tolist()
    edges, counts = merge_bins(edges, counts, 1)  # empty bins: a gap in the energies
    what = (
        f"{len(counts)} bins (one per energy)"
        if fixed
        else f"{len(counts)} bins over {edges[0]:g}-{edges[-1]:g} GeV ({BIN_WIDTH_GEV:g} GeV wide)"
    )
    head = (
        f"selection: the validation set has {e.size} showers, {min(counts)}-{max(counts)} per "
        f"bin in {what}; the selection metric needs at least {MIN_PER_BIN} per bin"
    )
    new_edges, new_counts = merge_bins(edges, counts, MIN_PER_BIN)
    if new_counts[0] < MIN_PER_BIN:
        notes.insert(0, f"{head}, so the selection falls back to the last epoch")
        return SelectionPlan(e.size, authors_points=points, notes=tuple(notes))
    labels = bin_labels(e, new_edges, fixed)
    if len(new_counts) < len(counts):
        merged = ", ".join(f"{lab}: {c}" for lab, c in zip(labels, new_counts))
        notes.insert(0, f"{head}, so it falls back to {len(new_counts)} coarser bin(s) ({merged})")
    return SelectionPlan(
        e.size,
        tuple(new_edges),
        tuple(labels),
        tuple(new_counts),
        points,
        BY_SELECTION,
        tuple(notes),
    )


def selection_rule(plan: SelectionPlan, history: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The rule a run selects by and the lines to log: the plan's, except that a resumed run
    whose epochs were scored by the authors' metric alone keeps selecting by it."""
    if any("authors_metric" not in h for h in history):
        for h in history:
            h.setdefault("authors_metric", h.get("metric"))
        note = (
            "selection: this run's first epochs were scored by the authors' metric alone, "
            "so it keeps selecting by it"
        )
        return BY_AUTHORS, [*plan.notes, note]
    if plan.rule == BY_SELECTION and any(
        "hits" not in b.get("pull_shape", {"hits": None})
        for h in history
        for b in h.get("bins", [])
    ):
        # scored before the shape term had the hit count: not comparable with the epochs to come
        for h in history:
            h["selected"] = False
        note = (
            "selection: this run's earlier epochs were scored without the hit count; the "
            "selection starts afresh with the next epoch"
        )
        return plan.rule, [*plan.notes, note]
    return plan.rule, list(plan.notes)


def score(
    ref: tuple[np.ndarray, np.ndarray],
    cand: tuple[np.ndarray, np.ndarray],
    plan: SelectionPlan | None = None,
) -> dict[str, Any]:
    """Both metrics of a candidate sample against a reference sample (showers, energies GeV),
    in the plan of the reference's energies unless one is given; None where not computed."""
    plan = plan or plan_selection(ref[1])
    out: dict[str, Any] = {"selection_metric": None, "authors_metric": None}
    if plan.edges:
        out |= selection_metric(summarise(*ref), summarise(*cand), plan.edges, plan.labels)
    if plan.authors_points:
        out |= authors_metric(ref, cand, list(plan.authors_points))
    return out


# -- the run's validation set and epochs ----------------------------------------------------
@dataclass
class ValidationSet:
    """The validation showers as the epochs need them: every energy (one generated shower
    each), the reference's per-shower summary, and the cells of the showers inside the
    authors' windows (the only reference cells an epoch needs again)."""

    energies: np.ndarray
    ref: Summary
    window_rows: np.ndarray
    window_showers: np.ndarray
    plan: SelectionPlan


def load_validation(parts: list[FileRows], val_n: int) -> ValidationSet:
    """At most ``val_n`` held-out showers spread evenly over ``parts``, and the plan."""
    if sum(p.stop - p.start for p in parts) == 0:
        e = np.empty(0)
        return ValidationSet(e, summarise(e, e), e.astype(np.int64), e, plan_selection(e))
    showers, energies = load_rows(parts, val_n)
    plan = plan_selection(energies)
    points = list(plan.authors_points)
    rows = np.flatnonzero(in_windows(energies, points)) if points else np.empty(0, np.int64)
    return ValidationSet(energies, summarise(showers, energies), rows, showers[rows], plan)


def validate_epoch(
    spec: ModelSpec, generator: nn.Module, val: ValidationSet, rule: str, batch: int = 128
) -> dict[str, Any]:
    """Generate the validation energies with a GeV generator (eval mode) and score both
    metrics; ``metric`` is the value ``rule`` selects by (None for the last epoch)."""
    t = time.perf_counter()
    record: dict[str, Any] = {"metric": None, "selection_metric": None, "authors_metric": None}
    if val.energies.size:
        gen = TorchGenerator(spec, generator.eval())
        parts, window, finite, ecal, pos = [], [], True, 0.0, 0
        for s, e in generate_batches(gen, val.energies, VALIDATION_NOISE_SEED, batch=batch):
            finite = finite and bool(np.all(np.isfinite(s)))
            ecal += float(s.sum(dtype=np.float64))
            parts.append(summarise(s, e))
            rows = val.window_rows[(val.window_rows >= pos) & (val.window_rows < pos + len(e))]
            window.append(s[rows - pos])  # only the cells the authors' metric needs
            pos += len(e)
        if not finite:
            record["note"] = "generated showers contain NaN or Inf"
            record["selection_metric"] = record["authors_metric"] = float("inf")
        else:
            cand = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            plan, e_win = val.plan, val.energies[val.window_rows]
            if plan.edges:
                record |= selection_metric(val.ref, cand, plan.edges, plan.labels)
            if plan.authors_points:
                record |= authors_metric(
                    (val.window_showers, e_win),
                    (np.concatenate(window), e_win),
                    list(plan.authors_points),
                )
        # total ECAL of the generated sample over the reference's: the energy scale at a glance
        record["ecal_ratio"] = ecal / max(float(np.nansum(val.ref["r"] * val.energies)), 1e-12)
    if rule != BY_LAST:
        record["metric"] = float("inf") if record[rule] is None else record[rule]
    record["seconds"] = time.perf_counter() - t
    return record


def choose(history: list[dict[str, Any]], record: dict[str, Any], rule: str) -> bool:
    """Mark ``record["selected"]`` (and unmark the epoch it replaces): the last epoch, or the
    lowest metric (ties keep the earlier epoch; the first epoch is always selected)."""
    prev = [h for h in history if h.get("selected")]
    record["selected"] = rule == BY_LAST or not prev or record["metric"] < prev[-1]["metric"]
    if record["selected"]:
        for h in history:
            h["selected"] = False
    return bool(record["selected"])


def validation_json(
    history: list[dict[str, Any]], plan: SelectionPlan, rule: str
) -> dict[str, Any]:
    """The content of ``validation.json``."""
    selected = [h["epoch"] for h in history if h.get("selected")]
    return {
        "selected_by": rule,
        "metric": RULES[rule],
        "selected_epoch": selected[-1] if selected else None,
        "plan": plan.to_dict(),
        "epochs": history,
    }


def _fmt(x: float | None) -> str:
    return "not computed" if x is None else f"{x:.4g}"


def epoch_line(record: dict[str, Any]) -> str:
    """The log line of one validated epoch."""
    text = f"epoch {record['epoch']}: selection metric {_fmt(record.get('selection_metric'))}"
    if record.get("bins"):
        ratios = [b["response_ratio"] for b in record["bins"]]
        text += (
            f" (energy {_fmt(record['energy'])}, shape {_fmt(record['shape'])}; "
            f"response ratio {min(ratios):.3f}-{max(ratios):.3f})"
        )
    text += f", authors' metric {_fmt(record.get('authors_metric'))}"
    return text + ("  (selected)" if record.get("selected") else "")


def selected_by(rule: str, best: dict[str, Any] | None) -> str:
    """What selected the epoch, for the user: 'selection metric 3.21', 'the last epoch (...)'."""
    if best is None:
        return "no epoch validated"
    if rule == BY_LAST:
        return RULES[BY_LAST]
    name = "selection metric" if rule == BY_SELECTION else "the authors' optimisation metric"
    return f"{name} {_fmt(best['metric'])}"
