"""Input adapter for the physics metrics: a shower file (streamed in chunks) or in-memory arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from caloquant.data import check_chunk, open_showers
from caloquant.errors import CaloquantError
from caloquant.options import as_float, check_energy, check_float, check_seed

# A sample: a path to a shower file (either format), or (showers (N, X, Y, Z) in GeV,
# energies (N,) in GeV).
Source = Union[str, os.PathLike, tuple[np.ndarray, np.ndarray]]


@dataclass
class Sample:
    name: str
    grid: tuple[int, ...]
    energies: np.ndarray
    chunks: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]]
    close: Callable[[], None] = lambda: None

    @property
    def n(self) -> int:
        return int(self.energies.shape[0])


def as_sample(src: Source, name: str) -> Sample:
    """Wrap a file path or a (showers, energies) pair; arrays are checked for NaN/Inf and
    negatives."""
    if isinstance(src, tuple):
        s, e = (
            np.asarray(src[0], dtype=np.float32),
            np.asarray(src[1], dtype=np.float64).reshape(-1),
        )
        if s.ndim != 4 or s.shape[0] != e.shape[0]:
            raise CaloquantError(
                f"{name}: showers {s.shape} and energies {e.shape} "
                "do not form a sample (N, X, Y, Z) + (N,)"
            )
        check_chunk(s, e, name)

        def chunks(c: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for i in range(0, len(e), c):
                yield s[i : i + c], e[i : i + c]

        return Sample(name, tuple(s.shape[1:]), e, chunks)
    reader = open_showers(Path(src))
    return Sample(
        str(src), reader.grid, reader.energies(), lambda c: reader.iter_chunks(c), reader.close
    )


def check_threshold(value: float, name: str) -> float:
    """A cell-energy threshold must be a finite number >= 0 (GeV)."""
    v = as_float(value, name)
    if not np.isfinite(v) or v < 0:
        raise CaloquantError(f"{name} must be a finite energy >= 0 GeV, got {value}")
    return v


def check_options(
    hit_threshold: float,
    zero_threshold: float,
    seed: int,
    metric_points: Sequence[float],
    metric_half_width: float,
    bins: str = "auto",
) -> tuple[float, float, int, tuple[tuple[float, ...], float]]:
    """The options of a validation, checked before any shower is read (one-line errors naming
    the flags): the thresholds, the seed, the optimisation metric's energy windows and the
    syntax of ``bins`` (``--bins``; the number of bins depends on the energies read)."""
    from caloquant.physics.bins import parse_bins

    parse_bins(bins, np.ones(1))
    points = tuple(check_energy(p, "--metric-points") for p in metric_points)
    if not points:
        raise CaloquantError("--metric-points needs at least one energy (GeV)")
    half = check_float(metric_half_width, "--metric-points half-width (GeV)", positive=True)
    return (
        check_threshold(hit_threshold, "--hit-threshold"),
        check_threshold(zero_threshold, "--zero-threshold"),
        check_seed(seed),
        (points, half),
    )
