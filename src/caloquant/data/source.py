"""A shower source: one file or a sharded dataset directory, read the same way.

Every stage that takes showers (``inspect``, ``validate``, training, the physics metrics)
opens them with :func:`open_showers` and sees a :class:`ShowerSource`, whatever is on disk.
The choice between a file (:mod:`caloquant.data.formats`) and a sharded dataset
(:mod:`caloquant.data.sharded`) is made here and only here, so that neither of those two
modules needs the other's reader: sharded builds on formats, and this module on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np

from caloquant.data.formats import Format, open_shower_file
from caloquant.data.sharded import SHARD_MANIFEST, is_sharded, open_sharded, read_shard_manifest
from caloquant.errors import CaloquantError


class ShowerSource(Protocol):
    """What a reader of showers offers (:class:`~caloquant.data.formats.ShowerReader` for a
    file, :class:`~caloquant.data.sharded.ShardedReader` for a sharded dataset): rows in a
    fixed order, showers (N, *grid) float32 GeV and incident energies (N,) float64 GeV."""

    path: Path
    format: Format
    n: int
    grid: tuple[int, ...]
    attrs: dict[str, Any]

    def __enter__(self) -> Self: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def close(self) -> None: ...

    def read(
        self, start: int = 0, stop: int | None = None, validate: bool = True
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def iter_chunks(
        self, chunk: int = 1024, validate: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def read_energies(self, start: int = 0, stop: int | None = None) -> np.ndarray: ...

    def energies(self) -> np.ndarray: ...

    def event_ids(self, start: int = 0, stop: int | None = None) -> np.ndarray: ...


def open_showers(path: str | os.PathLike[str], grid: tuple[int, ...] | None = None) -> ShowerSource:
    """Open a shower file of either layout, checking keys, shapes and dtypes up front.

    A directory with a sharded-dataset ``manifest.json`` opens as one sample
    (:func:`caloquant.data.sharded.open_sharded`; ``grid`` is then the manifest's).
    """
    p = Path(path)
    if p.is_dir() and is_sharded(p):
        return open_sharded(p)
    if p.is_dir() and (p / SHARD_MANIFEST).is_file():
        read_shard_manifest(p)  # says why it is not one: corrupt, or another kind of manifest
    return open_shower_file(p, grid)


def read_showers(
    path: str | os.PathLike[str], max_n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a (small) file whole: showers (N, *grid) GeV and energies (N,) GeV."""
    with open_showers(path) as r:
        return r.read(0, r.n if max_n is None else min(max_n, r.n))


def summarize(path: str | os.PathLike[str], chunk: int = 1024) -> dict[str, Any]:
    """Streaming summary of a shower file: format, N, grid, energy range, Ecal/Ep statistics."""
    with open_showers(path) as r:
        if r.n == 0:
            raise CaloquantError(f"{path}: file holds no showers")
        ratio_sum = ratio_sq = 0.0
        rmin, rmax = np.inf, -np.inf
        emin, emax = np.inf, -np.inf
        ecal_sum = 0.0
        occ = 0.0
        whole = True  # every cell a whole number: integer counts rather than energies
        for s, e in r.iter_chunks(chunk):
            whole = whole and bool(np.all(s == np.rint(s)))
            ecal = s.reshape(len(s), -1).sum(axis=1, dtype=np.float64)
            ratio = ecal / e
            ratio_sum += ratio.sum()
            ratio_sq += (ratio**2).sum()
            rmin, rmax = min(rmin, ratio.min()), max(rmax, ratio.max())
            emin, emax = min(emin, e.min()), max(emax, e.max())
            ecal_sum += ecal.sum()
            occ += (s.reshape(len(s), -1) > 0).mean(axis=1).sum()
        mean = ratio_sum / r.n
        std = float(np.sqrt(max(ratio_sq / r.n - mean**2, 0.0)))
        return {
            "path": str(path),
            "format": r.format,
            "n": r.n,
            "grid": list(r.grid),
            "energy_gev": {"min": float(emin), "max": float(emax)},
            "ecal_gev_mean": ecal_sum / r.n,
            "ecal_over_ep": {
                "mean": float(mean),
                "std": std,
                "min": float(rmin),
                "max": float(rmax),
            },
            "hit_fraction_mean": occ / r.n,
            "attrs": r.attrs,
            "warnings": unit_warnings(float(mean), whole, r.format),
        }


def unit_warnings(ecal_over_ep: float, whole_cells: bool, fmt: str) -> list[str]:
    """What an impossible mean Ecal/Ep says about a file's units. A calorimeter cannot record
    more energy than the particle brought (Ecal/Ep <= 1; a sampling calorimeter sees ~1-30 %),
    so a larger ratio means the cells are not in the unit the format prescribes (GeV for
    3DGAN files, MeV for CaloChallenge ones, read as GeV here)."""
    if not ecal_over_ep > 1.0:
        return []
    unit = "GeV" if fmt == "3dgan" else "MeV"
    if whole_cells:
        guess = "every cell is a whole number: integer ADC counts (or another integer unit)"
    elif ecal_over_ep <= 1000.0:
        guess = (
            f"the cells seem to be in {'MeV' if unit == 'GeV' else 'keV'} "
            f"(Ecal/Ep would be {ecal_over_ep / 1000:.3g} in {unit})"
        )
    else:
        guess = "the cells are in an unknown unit"
    return [
        f"mean Ecal/Ep = {ecal_over_ep:.5g} is impossible for any calorimeter (the cells hold "
        f"more energy than the incident particle): the cells are not in {unit}; {guess}"
    ]
