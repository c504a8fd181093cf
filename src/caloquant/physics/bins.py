"""Incident-energy bins for validation: "all" plus configurable ranges or fixed points.

Bin specifications (``--bins``):

* ``auto`` (default): the paper's style, 50 GeV bins 100-150, ..., 450-500 GeV, when every
  energy lies in 100-500 GeV; fixed-energy points (+-5 GeV, as the authors' analysis) when
  the sample has at most 12 distinct energies; otherwise 8 equal-width bins over the range.
* ``paper``: 100-150, ..., 450-500 GeV.
* ``edges:100,200,350,500``: consecutive ranges between the given edges (GeV).
* ``width:50``: equal-width bins of 50 GeV covering the reference's range.
* ``points:100,200,300`` or ``points:100,200,300/2``: Ep +- 5 GeV (or +- 2 GeV) windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caloquant.errors import CaloquantError


@dataclass(frozen=True)
class EnergyBin:
    label: str
    lo_gev: float
    hi_gev: float
    inclusive_hi: bool = False

    def mask(self, energies: np.ndarray) -> np.ndarray:
        upper = energies <= self.hi_gev if self.inclusive_hi else energies < self.hi_gev
        return (energies >= self.lo_gev) & upper


MAX_BINS = 10_000  # energy bins of one validation (each needs showers of both samples)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _ranges(edges: list[float]) -> list[EnergyBin]:
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise CaloquantError(f"bin edges must be at least two increasing numbers, got {edges}")
    return [
        EnergyBin(f"{_fmt(a)}-{_fmt(b)}", a, b, inclusive_hi=(i == len(edges) - 2))
        for i, (a, b) in enumerate(zip(edges, edges[1:]))
    ]


def _points(points: list[float], half: float) -> list[EnergyBin]:
    return [
        EnergyBin(f"{_fmt(p)}+-{_fmt(half)}", p - half, p + half, inclusive_hi=True) for p in points
    ]


PAPER_EDGES = [100.0 + 50.0 * i for i in range(9)]


def parse_points(text: str, default_half: float = 5.0) -> tuple[list[float], float]:
    """``"100,200"`` or ``"100,200/2"`` -> ([100.0, 200.0], half-width); ValueError if malformed."""
    pts, _, half = text.partition("/")
    h = float(half) if half else default_half
    if not h > 0:
        raise ValueError(f"half-width must be > 0, got {half}")
    return [float(x) for x in pts.split(",")], h


def parse_bins(spec: str, energies: np.ndarray) -> list[EnergyBin]:
    """Bins for ``spec``, always preceded by the "all" bin covering every shower."""
    e = np.asarray(energies, dtype=np.float64)
    all_bin = EnergyBin("all", -np.inf, np.inf, inclusive_hi=True)
    kind, _, arg = spec.partition(":")
    try:
        if kind == "auto":
            uniq = np.unique(np.round(e, 3))
            if uniq.size <= 12:
                bins = _points([float(u) for u in uniq], 5.0)
            elif e.min() >= 100.0 and e.max() <= 500.0:
                bins = _ranges(PAPER_EDGES)
            else:
                bins = _ranges(list(np.linspace(np.floor(e.min()), np.ceil(e.max()), 9)))
        elif kind == "paper":
            bins = _ranges(PAPER_EDGES)
        elif kind == "edges":
            bins = _ranges([float(x) for x in arg.split(",")])
        elif kind == "width":
            w = float(arg)
            if not (w > 0 and np.isfinite(w)):
                raise ValueError
            lo, hi = np.floor(e.min() / w) * w, np.ceil(e.max() / w) * w
            if (hi - lo) / w > MAX_BINS:
                raise CaloquantError(
                    f"--bins {spec} makes {(hi - lo) / w:,.0f} bins over {lo:g} to {hi:g} GeV, "
                    f"more than {MAX_BINS:,}: use a wider width"
                )
            bins = _ranges(list(np.arange(lo, hi + w / 2, w)) if hi > lo else [lo, lo + w])
        elif kind == "points":
            bins = _points(*parse_points(arg))
        else:
            raise CaloquantError(
                f"unknown --bins spec '{spec}' (use auto, paper, edges:..., width:W, points:...)"
            )
    except ValueError:
        raise CaloquantError(f"malformed --bins spec '{spec}'") from None
    if len(bins) > MAX_BINS:
        raise CaloquantError(
            f"--bins {spec[:40]!r} makes {len(bins):,} bins, more than {MAX_BINS:,}"
        )
    return [all_bin, *bins]
