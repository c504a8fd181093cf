"""Training data streamed from HDF5 files larger than memory, shuffled by chunks.

An epoch's order is a pure function of (seed, epoch): the training rows are cut into blocks of
``block`` consecutive rows (contiguous reads, cheap for chunked gzip HDF5), the blocks are
shuffled, consecutive groups of blocks form windows of about ``shuffle_buffer`` showers, and
the rows of each window are shuffled. Only the window being served is in memory (two when a
batch spans a window boundary, plus the block being read). Because the
order is recomputed from the seed, the loader's whole state is (epoch, batch index): a resumed
run continues at exactly the next shower.

Batches are global: batch b of an epoch is the rows at order positions [b*B, (b+1)*B); with
N processes, rank r takes the r-th slice of B/N rows, so N processes see, together, exactly the
batches one process would see. A final partial batch is dropped.

Hold-out for validation (without a separate file): the last ``val_fraction`` of the rows of
every training file; these rows are never trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.data import open_showers
from caloquant.errors import CaloquantError

BLOCK_ROWS = 64  # rows read per contiguous block


@dataclass(frozen=True)
class FileRows:
    path: str
    n_total: int  # showers in the file
    start: int  # first training row
    stop: int  # one past the last training row


def scan_files(files: list[str], grid: tuple[int, ...]) -> list[int]:
    """Open every file once (keys, shapes, grid, non-empty); return the shower counts."""
    counts = []
    for f in files:
        with open_showers(f) as r:
            if r.n == 0:
                raise CaloquantError(f"{f}: file holds no showers")
            if r.grid != tuple(grid):
                raise CaloquantError(
                    f"{f}: showers have grid {r.grid}, the model needs {tuple(grid)}"
                )
            counts.append(r.n)
    return counts


def split_rows(
    files: list[str], counts: list[int], val_fraction: float | None
) -> tuple[list[FileRows], list[FileRows]]:
    """Training rows and held-out rows of each file (no hold-out when ``val_fraction`` is None)."""
    train, held = [], []
    for f, n in zip(files, counts):
        n_val = 0 if val_fraction is None else int(round(n * val_fraction))
        train.append(FileRows(f, n, 0, n - n_val))
        if n_val:
            held.append(FileRows(f, n, n - n_val, n))
    return train, held


def held_out_energies(parts: list[FileRows]) -> np.ndarray:
    """Incident energies (GeV) of the given rows, in order (one float per shower: small)."""
    out = []
    for p in parts:
        with open_showers(p.path) as r:
            out.append(r.energies()[p.start : p.stop])
    return np.concatenate(out) if out else np.empty(0)


def load_rows(
    parts: list[FileRows], max_n: int, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_n`` showers (GeV) spread evenly over the given rows (those where the mask
    ``keep`` over :func:`held_out_energies` is true), read file by file in bounded chunks."""
    total = sum(p.stop - p.start for p in parts)
    cand = np.arange(total) if keep is None else np.flatnonzero(keep)
    if cand.size == 0:
        raise CaloquantError(
            "the validation set is empty (no held-out showers, or none at the validation energies)"
        )
    take = cand[
        np.unique(np.linspace(0, cand.size - 1, min(max_n, cand.size)).round().astype(np.int64))
    ]
    showers, energies, offset = [], [], 0
    for p in parts:
        n = p.stop - p.start
        mine = take[(take >= offset) & (take < offset + n)] - offset + p.start
        offset += n
        if mine.size == 0:
            continue
        with open_showers(p.path) as r:
            for lo in range(int(mine[0]), int(mine[-1]) + 1, 1024):
                sel = mine[(mine >= lo) & (mine < lo + 1024)]
                if sel.size:
                    s, e = r.read(lo, min(lo + 1024, p.stop))
                    showers.append(s[sel - lo])
                    energies.append(e[sel - lo])
    return np.concatenate(showers), np.concatenate(energies)


class ShowerStream:
    """Shuffled, resumable, rank-sharded batches of (showers x cell_scale, energies GeV)."""

    def __init__(
        self,
        parts: list[FileRows],
        batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 2048,
        cell_scale: float = 1.0,
        cell_threshold: float = 0.0,
    ) -> None:
        if batch % world:
            raise CaloquantError(f"batch {batch} does not split evenly over {world} processes")
        self.parts, self.batch, self.seed = parts, batch, seed
        self.rank, self.world = rank, world
        self.cell_scale, self.cell_threshold = np.float32(cell_scale), cell_threshold
        self.blocks = [
            (i, a, min(a + BLOCK_ROWS, p.stop))
            for i, p in enumerate(parts)
            for a in range(p.start, p.stop, BLOCK_ROWS)
        ]
        self.n = sum(p.stop - p.start for p in parts)
        self.window_blocks = max(1, shuffle_buffer // BLOCK_ROWS)
        if self.n < batch:
            raise CaloquantError(
                f"the training data holds {self.n} showers (after the validation hold-out), "
                f"fewer than one batch of {batch}"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch

    def _order(self, epoch: int) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        """Windows (lists of block ids) and, per order position, its window and row in the
        window."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.blocks))
        windows = [
            perm[i : i + self.window_blocks].tolist()
            for i in range(0, len(perm), self.window_blocks)
        ]
        win_of, row_of = [], []
        for w, blocks in enumerate(windows):
            size = sum(self.blocks[b][2] - self.blocks[b][1] for b in blocks)
            win_of.append(np.full(size, w, np.int64))
            row_of.append(rng.permutation(size))
        return windows, np.concatenate(win_of), np.concatenate(row_of)

    def _load(self, blocks: list[int], readers: dict[int, object]) -> tuple[np.ndarray, np.ndarray]:
        """One window: its blocks read one by one into a preallocated array (one block in
        flight)."""
        for b in blocks:
            i = self.blocks[b][0]
            if i not in readers:
                readers[i] = open_showers(self.parts[i].path)
        sizes = [self.blocks[b][2] - self.blocks[b][1] for b in blocks]
        grid = readers[self.blocks[blocks[0]][0]].grid  # type: ignore[attr-defined]
        s = np.empty((sum(sizes), *grid), np.float32)
        e = np.empty(sum(sizes), np.float64)
        at = 0
        for b, k in zip(blocks, sizes):
            i, a, z = self.blocks[b]
            s[at : at + k], e[at : at + k] = readers[i].read(a, z)  # type: ignore[attr-defined]  # checks NaN/Inf, negatives
            at += k
        if self.cell_threshold > 0:
            s[s < self.cell_threshold] = 0.0
        if self.cell_scale != 1:
            s *= self.cell_scale
        return s, e

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's share of the epoch's batches, from batch ``start_batch`` on."""
        windows, win_of, row_of = self._order(epoch)
        share = self.batch // self.world
        readers: dict[int, object] = {}
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        try:
            for b in range(start_batch, self.batches_per_epoch):
                lo = b * self.batch + self.rank * share
                w, r = win_of[lo : lo + share], row_of[lo : lo + share]
                for old in [k for k in cache if k < w.min()]:
                    del cache[old]  # windows are consumed in order: free what is behind first
                for need in np.unique(w):
                    if need not in cache:
                        cache[int(need)] = self._load(windows[int(need)], readers)
                s = np.empty((share, *cache[int(w[0])][0].shape[1:]), np.float32)
                e = np.empty(share, np.float64)
                for need in np.unique(w):
                    at = w == need
                    s[at], e[at] = cache[int(need)][0][r[at]], cache[int(need)][1][r[at]]
                yield s, e
        finally:
            for rd in readers.values():
                rd.close()  # type: ignore[attr-defined]


def describe_files(parts: list[FileRows]) -> list[dict[str, object]]:
    """What the run was trained on (recorded in the run directory, checked on resume)."""
    return [{"path": p.path, "n": p.n_total, "train_rows": [p.start, p.stop]} for p in parts]


def data_sources(parts: list[FileRows]) -> dict[str, object]:
    """Where the training showers came from, from the files' own attributes: training rows per
    engine (``geant4``, ``gflash``, or ``unknown`` for files without caloquant provenance) and
    the geometry hashes and physics lists met. Shipped models record it (a model trained on
    another geometry is another model)."""
    per_engine: dict[str, int] = {}
    geometries: set[str] = set()
    physics: set[str] = set()
    for p in parts:
        with open_showers(p.path) as r:
            a = r.attrs
        engine = str(a.get("engine", "unknown"))
        per_engine[engine] = per_engine.get(engine, 0) + (p.stop - p.start)
        if "geometry_hash" in a:
            geometries.add(str(a["geometry_hash"]))
        if "physics_list" in a:
            physics.add(str(a["physics_list"]))
    return {
        "train_rows_per_engine": per_engine,
        "geometry_hashes": sorted(geometries),
        "physics_lists": sorted(physics),
    }


def declared_energy_range(parts: list[FileRows]) -> tuple[tuple[float, float], str] | None:
    """The incident-energy range the training files were made for, as their generator declared
    it (not the lowest and highest energies that happened to be drawn), and where it says so:
    per file, its ``energy_range_gev`` attribute, else the ``manifest.json`` beside it (a
    reference set of :mod:`caloquant.sim.reference`, by its name; a ``generate`` dataset drawn
    uniformly). The union over the files; None when a file declares nothing."""
    ranges, sources = [], []
    for path in dict.fromkeys(p.path for p in parts):
        found = _declared_range(path)
        if found is None:
            return None
        ranges.append(found[0])
        sources.append(found[1])
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return (lo, hi), "declared by the training data (" + "; ".join(dict.fromkeys(sources)) + ")"


def _range(v: Any) -> tuple[float, float] | None:
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if np.isfinite([lo, hi]).all() and 0 < lo < hi else None


def _declared_range(path: str) -> tuple[tuple[float, float], str] | None:
    with open_showers(path) as r:
        found = _range(r.attrs.get("energy_range_gev"))
    if found is not None:
        return found, "their energy_range_gev attribute"
    p = Path(path)
    mf = (p if p.is_dir() else p.parent) / "manifest.json"
    try:
        m = json.loads(mf.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    e = m.get("energies")
    if isinstance(e, dict) and e.get("kind") == "uniform":  # a `caloquant generate` dataset
        found = _range(e.get("range_gev"))
        return None if found is None else (found, f"{mf}: uniform energies")
    if isinstance(m.get("set"), str):  # a reference set: its definition declares the energies
        from caloquant.sim.reference import SETS

        spec = SETS.get(m["set"])
        if spec is not None:
            pts = spec.points or ()
            found = _range(spec.energy_range or (pts and (min(pts), max(pts))))
            if found is not None:
                return found, f"reference set '{m['set']}'"
    return None


def ecal_and_energy(
    parts: list[FileRows], threshold_gev: float, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Every training shower's ECAL sum (GeV, cells below ``threshold_gev`` dropped, as the
    loader does) and incident energy, read in bounded chunks (two floats per shower are kept)."""
    ecal, energies = [], []
    for p in parts:
        with open_showers(p.path) as r:
            for lo in range(p.start, p.stop, chunk):
                s, e = r.read(lo, min(lo + chunk, p.stop))
                ecal.append(
                    np.where(s < threshold_gev, 0.0, s)
                    .reshape(len(s), -1)
                    .sum(axis=1, dtype=np.float64)
                )
                energies.append(e)
    return np.concatenate(ecal), np.concatenate(energies)
