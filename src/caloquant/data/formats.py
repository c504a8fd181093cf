"""Shower HDF5 files: the 3DGAN layout and the CaloChallenge layout, and their reader.

Inside caloquant showers are always float32 arrays of shape (N, X, Y, Z) in GeV and
incident energies are float64 arrays of shape (N,) in GeV. The two on-disk layouts are:

* ``3dgan``: dataset ``ECAL`` (N, X, Y, Z) in GeV and ``energy`` (N,) in GeV. Older
  files carry ``target`` (N, k) with the incident energy in column 1 instead of ``energy``.
* ``calochallenge``: ``incident_energies`` (N, 1) in MeV and ``showers`` (N, n_voxels)
  in MeV. The voxel grid is taken from the ``grid_shape`` attribute when present, else a
  cube is assumed when n_voxels is a perfect cube, else it must be given.

Reads are chunked (a file is never loaded whole) and every chunk is checked for NaN/Inf,
negative cells and non-positive energies (:mod:`caloquant.data.checks`). An optional int64
``event_id`` dataset numbers the showers. Writing is :mod:`caloquant.data.writers`.

This module knows single files only: a directory holding a sharded dataset is
:mod:`caloquant.data.sharded`, and :func:`caloquant.data.source.open_showers` opens either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import h5py
import hdf5plugin  # noqa: F401 - registers the LZ4 / Zstd HDF5 filters, so that reads decode them
import numpy as np

from caloquant.data.checks import check_chunk, check_energies
from caloquant.errors import CaloquantError

Format = Literal["3dgan", "calochallenge"]
FORMATS: tuple[str, ...] = ("3dgan", "calochallenge")
MEV_PER_GEV = 1000.0


def check_format(fmt: Any, flag: str = "--format") -> Format:
    """A shower file format: one of ``FORMATS`` (the one check, for every command and writer)."""
    if fmt not in FORMATS:
        raise CaloquantError(f"{flag} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt  # type: ignore[no-any-return]


def row_blocks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive blocks of at most ``chunk`` of ``n`` rows; the one place
    that refuses a bad chunk size, for the file reader and the sharded reader alike."""
    if chunk < 1:
        raise CaloquantError(f"chunk size must be positive, got {chunk}")
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


def _open_h5(path: str | os.PathLike[str]) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: file not found")
    if p.is_dir():
        raise CaloquantError(
            f"{p}: is a directory, expected an HDF5 file or a sharded dataset (no manifest.json)"
        )
    if not h5py.is_hdf5(p):
        raise CaloquantError(f"{p}: not an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as exc:  # truncated or otherwise damaged file
        msg = str(exc).split("(")[-1].rstrip(")") if "(" in str(exc) else str(exc)
        raise CaloquantError(f"{p}: unreadable HDF5 file ({msg})") from None


def _cube_side(n_voxels: int) -> int | None:
    side = round(n_voxels ** (1.0 / 3.0))
    for s in (side - 1, side, side + 1):
        if s > 0 and s**3 == n_voxels:
            return s
    return None


def detect_format(h5: h5py.File) -> Format:
    """Which layout an open file has, or a one-line error naming the keys it lacks."""
    keys = set(h5.keys())
    if "ECAL" in keys:
        return "3dgan"
    if "showers" in keys or "incident_energies" in keys:
        return "calochallenge"
    found = ", ".join(sorted(keys)) or "no datasets"
    raise CaloquantError(
        f"{h5.filename}: unknown shower format (found {found}; expected 'ECAL' + 'energy' "
        "for 3DGAN or 'showers' + 'incident_energies' for CaloChallenge)"
    )


@dataclass
class ShowerReader:
    """Chunked reader over one shower file in either layout (energies in GeV)."""

    path: Path
    format: Format
    n: int
    grid: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    _h5: h5py.File | None = field(default=None, repr=False)

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> ShowerReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    # -- access ----------------------------------------------------------------------
    @property
    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise CaloquantError(f"{self.path}: file already closed")
        return self._h5

    def read_energies(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Incident energies (GeV) of rows [start, stop), unchecked: a caller that assembles
        several files (the sharded reader) checks the whole and names the whole in an error."""
        stop = self.n if stop is None else min(stop, self.n)
        h5 = self._file
        if self.format == "3dgan":
            if "energy" in h5:
                e = h5["energy"][start:stop]
            else:
                e = h5["target"][start:stop, 1]
            return np.asarray(e, dtype=np.float64).reshape(-1)
        e = h5["incident_energies"][start:stop]
        return np.asarray(e, dtype=np.float64).reshape(-1) / MEV_PER_GEV

    def _read_showers(self, start: int, stop: int) -> np.ndarray:
        h5 = self._file
        if self.format == "3dgan":
            s = np.asarray(h5["ECAL"][start:stop], dtype=np.float32)
        else:
            s = np.asarray(h5["showers"][start:stop], dtype=np.float32) / np.float32(MEV_PER_GEV)
        return s.reshape((stop - start, *self.grid))

    def event_ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int64 event ids of rows [start, stop): the ``event_id`` dataset, else the row
        numbers."""
        stop = self.n if stop is None else min(stop, self.n)
        h5 = self._file
        if "event_id" in h5:
            return np.asarray(h5["event_id"][start:stop], dtype=np.int64)
        return np.arange(start, stop, dtype=np.int64)

    def energies(self) -> np.ndarray:
        """All incident energies (GeV), shape (N,). Small: one float per shower."""
        e = self.read_energies(0, self.n)
        check_energies(e, str(self.path))
        return e

    def read(
        self, start: int = 0, stop: int | None = None, validate: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Showers (GeV) and energies (GeV) of rows [start, stop)."""
        stop = self.n if stop is None else min(stop, self.n)
        s, e = self._read_showers(start, stop), self.read_energies(start, stop)
        if validate:
            check_chunk(s, e, f"{self.path} rows {start}-{stop}")
        return s, e

    def iter_chunks(
        self, chunk: int = 1024, validate: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (showers, energies) blocks of at most ``chunk`` rows, in file order."""
        for start, stop in row_blocks(self.n, chunk):
            yield self.read(start, stop, validate=validate)


def open_shower_file(
    path: str | os.PathLike[str], grid: tuple[int, ...] | None = None
) -> ShowerReader:
    """Open one shower file of either layout, checking keys, shapes and dtypes up front.

    Files only; :func:`caloquant.data.open_showers` also opens sharded-dataset directories.
    """
    p = Path(path)
    h5 = _open_h5(p)
    try:
        fmt = detect_format(h5)
        if fmt == "3dgan":
            reader = _open_3dgan(p, h5)
        else:
            reader = _open_calochallenge(p, h5, grid)
    except BaseException:
        h5.close()
        raise
    return reader


def _need(h5: h5py.File, key: str, fmt: str) -> h5py.Dataset:
    if key not in h5:
        found = ", ".join(sorted(h5.keys()))
        raise CaloquantError(f"{h5.filename}: {fmt} file lacks the '{key}' dataset (found {found})")
    obj = h5[key]
    if not isinstance(obj, h5py.Dataset):
        raise CaloquantError(f"{h5.filename}: '{key}' is a group, expected a dataset")
    if obj.dtype.kind not in "fiu":
        raise CaloquantError(f"{h5.filename}: '{key}' has dtype {obj.dtype}, expected numbers")
    return obj


def _attrs(h5: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in h5.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _open_3dgan(p: Path, h5: h5py.File) -> ShowerReader:
    ecal = _need(h5, "ECAL", "3DGAN")
    if ecal.ndim != 4:
        raise CaloquantError(f"{p}: 'ECAL' has shape {ecal.shape}, expected (N, X, Y, Z)")
    n = ecal.shape[0]
    if "energy" in h5:
        en = _need(h5, "energy", "3DGAN")
        if en.shape not in ((n,), (n, 1)):
            raise CaloquantError(
                f"{p}: 'energy' has shape {en.shape}, expected ({n},) to match 'ECAL'"
            )
    elif "target" in h5:
        tg = _need(h5, "target", "3DGAN")
        if tg.ndim != 2 or tg.shape[0] != n or tg.shape[1] < 2:
            raise CaloquantError(
                f"{p}: 'target' has shape {tg.shape}, expected ({n}, k>=2) with Ep in column 1"
            )
    else:
        found = ", ".join(sorted(h5.keys()))
        raise CaloquantError(
            f"{p}: 3DGAN file lacks the 'energy' dataset (or 'target'); found {found}"
        )
    return ShowerReader(p, "3dgan", n, tuple(int(d) for d in ecal.shape[1:]), _attrs(h5), h5)


def _open_calochallenge(p: Path, h5: h5py.File, grid: tuple[int, ...] | None) -> ShowerReader:
    sh = _need(h5, "showers", "CaloChallenge")
    ie = _need(h5, "incident_energies", "CaloChallenge")
    if sh.ndim != 2:
        raise CaloquantError(f"{p}: 'showers' has shape {sh.shape}, expected (N, n_voxels)")
    n, nvox = sh.shape
    if ie.shape not in ((n, 1), (n,)):
        raise CaloquantError(
            f"{p}: 'incident_energies' has shape {ie.shape}, expected ({n}, 1) to match 'showers'"
        )
    attrs = _attrs(h5)
    if grid is None and "grid_shape" in attrs:
        grid = tuple(int(g) for g in attrs["grid_shape"])
    if grid is None:
        side = _cube_side(nvox)
        if side is None:
            raise CaloquantError(
                f"{p}: cannot infer the voxel grid of {nvox} voxels (not a cube); "
                "record it in the file's 'grid_shape' attribute (X, Y, Z), as caloquant's "
                "writer does"
            )
        grid = (side, side, side)
    if int(np.prod(grid)) != nvox:
        raise CaloquantError(
            f"{p}: grid {grid} has {int(np.prod(grid))} voxels but 'showers' has {nvox}"
        )
    return ShowerReader(p, "calochallenge", n, tuple(grid), attrs, h5)
