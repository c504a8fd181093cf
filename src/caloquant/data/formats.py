"""Shower HDF5 files: the 3DGAN layout and the CaloChallenge layout.

Inside caloquant showers are always float32 arrays of shape (N, X, Y, Z) in GeV and
incident energies are float64 arrays of shape (N,) in GeV. The two on-disk layouts are:

* ``3dgan``: dataset ``ECAL`` (N, X, Y, Z) in GeV and ``energy`` (N,) in GeV. Older
  files carry ``target`` (N, k) with the incident energy in column 1 instead of ``energy``.
* ``calochallenge``: ``incident_energies`` (N, 1) in MeV and ``showers`` (N, n_voxels)
  in MeV. The voxel grid is taken from the ``grid_shape`` attribute when present, else a
  cube is assumed when n_voxels is a perfect cube, else it must be given.

Reads are chunked (a file is never loaded whole) and every chunk is checked for NaN/Inf,
negative cells and non-positive energies. Writes are compressed (gzip by default, LZ4 or Zstd
through hdf5plugin on request), chunked, carry provenance attributes, and are atomic; the
compression and the write run on a background thread so that they overlap with inference.
An optional int64 ``event_id`` dataset numbers the showers.

A directory holding a sharded dataset (``manifest.json`` + shard files, written by
``caloquant generate``) opens through :func:`open_showers` as one sample; see
:mod:`caloquant.data.sharded`.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import h5py
import hdf5plugin  # noqa: F401 - registers the LZ4 / Zstd HDF5 filters so that readers can decode them
import numpy as np

from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path

Format = Literal["3dgan", "calochallenge"]
FORMATS: tuple[str, ...] = ("3dgan", "calochallenge")
MEV_PER_GEV = 1000.0
# Target size of one HDF5 chunk on write (bytes); a few showers of 25^3 float32.
_CHUNK_BYTES = 1 << 20
# Compression choices on write. gzip (deflate + shuffle) is readable by any HDF5 reader; lz4
# and zstd are 4-6x cheaper to write on calorimeter showers (mostly empty cells; see
# docs/generate.md) but a reader needs the filter: `import hdf5plugin` (caloquant.data does).
COMPRESSIONS: tuple[str, ...] = ("gzip", "lz4", "zstd", "none")


def compression_options(compression: int | str) -> dict[str, Any]:
    """h5py dataset-creation keywords for a compression choice.

    ``gzip[:LEVEL]`` (default level 4, with byte shuffle; an int is a gzip level, as before),
    ``lz4``, ``zstd[:LEVEL]`` (default level 1; no shuffle: on showers that are ~90 % empty
    cells the plain codec compresses better), or ``none``.
    """
    if isinstance(compression, int) and not isinstance(compression, bool):
        name, level = "gzip", compression
    else:
        name, _, lv = str(compression).partition(":")
        try:
            level = int(lv) if lv else None
        except ValueError:
            raise CaloquantError(f"compression level must be an integer, got '{compression}'") from None
    if name not in COMPRESSIONS or (level is not None and name in ("lz4", "none")):
        raise CaloquantError(f"unknown compression '{compression}' (choose from gzip[:LEVEL], lz4, zstd[:LEVEL], none)")
    if name == "gzip":
        level = 4 if level is None else level
        if not 0 <= level <= 9:
            raise CaloquantError(f"gzip level must be 0-9, got {level}")
        return {"compression": "gzip", "compression_opts": level, "shuffle": True}
    if name == "zstd":
        level = 1 if level is None else level
        if not 1 <= level <= 22:
            raise CaloquantError(f"zstd level must be 1-22, got {level}")
        return dict(hdf5plugin.Zstd(clevel=level))
    if name == "lz4":
        return dict(hdf5plugin.LZ4())
    return {}


def _open_h5(path: str | os.PathLike[str]) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: file not found")
    if p.is_dir():
        raise CaloquantError(f"{p}: is a directory, expected an HDF5 file or a sharded dataset (no manifest.json)")
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


def check_chunk(showers: np.ndarray, energies: np.ndarray, where: str) -> None:
    """Refuse NaN/Inf or negative cells and non-finite or non-positive energies."""
    if not np.all(np.isfinite(energies)):
        raise CaloquantError(f"{where}: incident energy is NaN or Inf")
    if np.any(energies <= 0):
        raise CaloquantError(f"{where}: incident energy is zero or negative (min {energies.min():g} GeV)")
    if not showers.size:
        return
    # two reductions and no temporary array: min and max propagate NaN, and +-Inf shows in one of them
    lo, hi = showers.min(), showers.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CaloquantError(f"{where}: shower contains NaN or Inf cells")
    if lo < 0:
        raise CaloquantError(f"{where}: shower contains negative cell energies (min {lo:g} GeV)")


@dataclass
class ShowerReader:
    """Chunked reader over one shower file in either layout (energies in GeV)."""

    path: Path
    format: Format
    n: int
    grid: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    _h5: h5py.File | None = field(default=None, repr=False)
    _scale: float = field(default=1.0, repr=False)

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> ShowerReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
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

    def _read_energies(self, start: int, stop: int) -> np.ndarray:
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
        """int64 event ids of rows [start, stop): the ``event_id`` dataset, else the row numbers."""
        stop = self.n if stop is None else min(stop, self.n)
        h5 = self._file
        if "event_id" in h5:
            return np.asarray(h5["event_id"][start:stop], dtype=np.int64)
        return np.arange(start, stop, dtype=np.int64)

    def energies(self) -> np.ndarray:
        """All incident energies (GeV), shape (N,). Small: one float per shower."""
        e = self._read_energies(0, self.n)
        if not np.all(np.isfinite(e)):
            raise CaloquantError(f"{self.path}: incident energy is NaN or Inf")
        if np.any(e <= 0):
            raise CaloquantError(f"{self.path}: incident energy is zero or negative (min {e.min():g} GeV)")
        return e

    def read(self, start: int = 0, stop: int | None = None, validate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Showers (GeV) and energies (GeV) of rows [start, stop)."""
        stop = self.n if stop is None else min(stop, self.n)
        s, e = self._read_showers(start, stop), self._read_energies(start, stop)
        if validate:
            check_chunk(s, e, f"{self.path} rows {start}-{stop}")
        return s, e

    def iter_chunks(self, chunk: int = 1024, validate: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (showers, energies) blocks of at most ``chunk`` rows, in file order."""
        if chunk < 1:
            raise CaloquantError(f"chunk size must be positive, got {chunk}")
        for start in range(0, self.n, chunk):
            yield self.read(start, min(start + chunk, self.n), validate=validate)


def open_showers(path: str | os.PathLike[str], grid: tuple[int, ...] | None = None) -> ShowerReader:
    """Open a shower file of either layout, checking keys, shapes and dtypes up front.

    A directory with a sharded-dataset ``manifest.json`` opens as one sample
    (:func:`caloquant.data.sharded.open_sharded`).
    """
    p = Path(path)
    if p.is_dir():
        from caloquant.data.sharded import is_sharded, open_sharded

        if is_sharded(p):
            return open_sharded(p)
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
        raise CaloquantError(f"{h5.filename}: {fmt} file lacks the '{key}' dataset (found {', '.join(sorted(h5.keys()))})")
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
            raise CaloquantError(f"{p}: 'energy' has shape {en.shape}, expected ({n},) to match 'ECAL'")
    elif "target" in h5:
        tg = _need(h5, "target", "3DGAN")
        if tg.ndim != 2 or tg.shape[0] != n or tg.shape[1] < 2:
            raise CaloquantError(f"{p}: 'target' has shape {tg.shape}, expected ({n}, k>=2) with Ep in column 1")
    else:
        raise CaloquantError(f"{p}: 3DGAN file lacks the 'energy' dataset (or 'target'); found {', '.join(sorted(h5.keys()))}")
    return ShowerReader(p, "3dgan", n, tuple(int(d) for d in ecal.shape[1:]), _attrs(h5), h5)


def _open_calochallenge(p: Path, h5: h5py.File, grid: tuple[int, ...] | None) -> ShowerReader:
    sh = _need(h5, "showers", "CaloChallenge")
    ie = _need(h5, "incident_energies", "CaloChallenge")
    if sh.ndim != 2:
        raise CaloquantError(f"{p}: 'showers' has shape {sh.shape}, expected (N, n_voxels)")
    n, nvox = sh.shape
    if ie.shape not in ((n, 1), (n,)):
        raise CaloquantError(f"{p}: 'incident_energies' has shape {ie.shape}, expected ({n}, 1) to match 'showers'")
    attrs = _attrs(h5)
    if grid is None and "grid_shape" in attrs:
        grid = tuple(int(g) for g in attrs["grid_shape"])
    if grid is None:
        side = _cube_side(nvox)
        if side is None:
            raise CaloquantError(f"{p}: cannot infer the voxel grid of {nvox} voxels (not a cube); give the grid shape")
        grid = (side, side, side)
    if int(np.prod(grid)) != nvox:
        raise CaloquantError(f"{p}: grid {grid} has {int(np.prod(grid))} voxels but 'showers' has {nvox}")
    return ShowerReader(p, "calochallenge", n, tuple(grid), attrs, h5, MEV_PER_GEV)


def provenance(**kw: Any) -> dict[str, Any]:
    """Provenance attributes for a file written now (None values are dropped)."""
    from caloquant import __version__

    out = {"caloquant_version": __version__, "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    out.update({k: v for k, v in kw.items() if v is not None})
    return out


class ShowerWriter:
    """Append showers chunk by chunk to a new file; it appears under its name only on success.

    >>> with ShowerWriter("out.h5", grid=(25, 25, 25), attrs=provenance(model="m")) as w:
    ...     w.append(showers_gev, energies_gev)

    ``append`` checks a block and hands a copy of it to a writer thread, which compresses and
    writes it while the caller computes the next block (h5py releases the GIL during a write,
    and so do the inference engines), so writing overlaps with inference. At most
    ``queue_depth`` blocks wait; an error on the writer thread is raised by the next
    ``append`` or on leaving the ``with`` block. ``background=False`` writes in ``append``.
    ``first_event_id`` adds an int64 ``event_id`` dataset numbering the rows from that value.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: tuple[int, ...],
        fmt: Format = "3dgan",
        attrs: dict[str, Any] | None = None,
        expected_n: int | None = None,
        compression: int | str = 4,
        first_event_id: int | None = None,
        background: bool = True,
        queue_depth: int = 2,
    ) -> None:
        if fmt not in FORMATS:
            raise CaloquantError(f"unknown shower format '{fmt}' (choose from {', '.join(FORMATS)})")
        self.path, self.grid, self.fmt = Path(path), tuple(grid), fmt
        self.attrs = dict(attrs or {})
        self.expected_n, self.compression = expected_n, compression
        self._filters = compression_options(compression)
        self.first_event_id = first_event_id
        self.background, self.queue_depth = background, max(1, queue_depth)
        self.n = 0  # rows accepted by append (written, or waiting on the writer thread)
        self._ctx: Any = None
        self._h5: h5py.File | None = None
        self._rows = 1
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray, int] | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._abort = False

    def __enter__(self) -> ShowerWriter:
        self._ctx = atomic_path(self.path, suffix=".h5")
        tmp = self._ctx.__enter__()
        self._h5 = h5py.File(tmp, "w")
        nvox = int(np.prod(self.grid))
        per_shower = nvox * 4
        self._rows = rows = max(1, min(_CHUNK_BYTES // per_shower, self.expected_n or 1 << 30))
        f = self._filters
        if self.fmt == "3dgan":
            self._h5.create_dataset("ECAL", shape=(0, *self.grid), maxshape=(None, *self.grid), dtype="f4", chunks=(rows, *self.grid), **f)
            self._h5.create_dataset("energy", shape=(0,), maxshape=(None,), dtype="f4", chunks=(max(rows, 1024),), **f)
            units = {"ECAL": "GeV", "energy": "GeV"}
        else:
            self._h5.create_dataset("showers", shape=(0, nvox), maxshape=(None, nvox), dtype="f4", chunks=(rows, nvox), **f)
            self._h5.create_dataset("incident_energies", shape=(0, 1), maxshape=(None, 1), dtype="f4", chunks=(max(rows, 1024), 1), **f)
            units = {"showers": "MeV", "incident_energies": "MeV"}
            self._h5.attrs["grid_shape"] = np.asarray(self.grid, dtype=np.int64)
        if self.first_event_id is not None:
            self._h5.create_dataset("event_id", shape=(0,), maxshape=(None,), dtype="i8", chunks=(max(rows, 1024),), **f)
        for k, u in units.items():
            self._h5[k].attrs["units"] = u
        for k, v in self.attrs.items():
            self._h5.attrs[k] = v if not isinstance(v, dict) else str(v)
        if self.background:
            self._queue = queue.Queue(maxsize=self.queue_depth)
            self._thread = threading.Thread(target=self._drain, name=f"ShowerWriter({self.path.name})", daemon=True)
            self._thread.start()
        return self

    def append(self, showers: np.ndarray, energies: np.ndarray) -> None:
        """Append a block: showers (n, *grid) GeV, energies (n,) GeV."""
        assert self._h5 is not None, "use ShowerWriter as a context manager"
        if self._error is not None:
            raise self._error
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        shape = np.shape(showers)
        if tuple(shape[1:]) != self.grid or shape[0] != energies.shape[0]:
            raise CaloquantError(f"{self.path}: cannot append showers {shape} with energies {energies.shape} to grid {self.grid}")
        # a copy: the caller may reuse its buffer (engines hand out views of their output tensors)
        showers = np.array(showers, dtype=np.float32) if self.background else np.asarray(showers, dtype=np.float32)
        check_chunk(showers, energies, str(self.path))
        k, n0 = showers.shape[0], self.n
        self.n += k
        if self._queue is None:
            self._write(showers, energies, n0)
            return
        while True:  # put with a timeout, so that a failed writer thread cannot block us forever
            try:
                self._queue.put((showers, energies.copy(), n0), timeout=0.5)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error from None

    def _drain(self) -> None:
        """Writer thread: write queued blocks in order until the end marker (None)."""
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None and not self._abort:
                try:
                    self._write(*item)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _write(self, showers: np.ndarray, energies: np.ndarray, n0: int) -> None:
        """Resize and write one block, one HDF5 chunk's worth of rows per call (each call
        compresses whole chunks and releases the GIL)."""
        h5 = self._h5
        assert h5 is not None
        k = showers.shape[0]
        names = ("ECAL", "energy") if self.fmt == "3dgan" else ("showers", "incident_energies")
        for name in names + (("event_id",) if self.first_event_id is not None else ()):
            h5[name].resize(n0 + k, axis=0)
        for a in range(0, k, self._rows):
            if self._abort:
                return
            b = min(k, a + self._rows)
            if self.fmt == "3dgan":
                h5["ECAL"][n0 + a : n0 + b] = showers[a:b]
            else:
                h5["showers"][n0 + a : n0 + b] = showers[a:b].reshape(b - a, -1) * np.float32(MEV_PER_GEV)
        if self.fmt == "3dgan":
            h5["energy"][n0:] = energies
        else:
            h5["incident_energies"][n0:] = (energies * MEV_PER_GEV).reshape(-1, 1)
        if self.first_event_id is not None:
            h5["event_id"][n0:] = np.arange(self.first_event_id + n0, self.first_event_id + n0 + k, dtype=np.int64)

    def _stop_writer(self, abort: bool) -> None:
        if self._thread is None or self._queue is None:
            return
        self._abort = self._abort or abort
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._thread = None

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        assert self._h5 is not None and self._ctx is not None
        try:
            self._stop_writer(abort=et is not None)
            if et is None and self._error is not None:
                raise self._error
            if et is None and self.expected_n is not None and self.n != self.expected_n:
                raise CaloquantError(f"{self.path}: wrote {self.n} showers, expected {self.expected_n}")
            if et is None:
                self._h5.attrs["n_showers"] = self.n
        except BaseException as exc:
            self._h5.close()
            self._h5 = None
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)  # deletes the temporary file
            raise
        self._h5.close()
        self._h5 = None
        # the atomic context renames on success and deletes the temp file on failure
        self._ctx.__exit__(et, ev, tb)


def write_showers(
    path: str | os.PathLike[str],
    showers: np.ndarray,
    energies: np.ndarray,
    fmt: Format = "3dgan",
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a whole in-memory sample (GeV) in the chosen layout, atomically."""
    showers = np.asarray(showers)
    if showers.ndim < 2:
        raise CaloquantError(f"showers must have shape (N, X, Y, Z), got {showers.shape}")
    with ShowerWriter(path, showers.shape[1:], fmt, attrs, expected_n=showers.shape[0]) as w:
        w.append(showers, energies)
    return Path(path)


def read_showers(path: str | os.PathLike[str], max_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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
        for s, e in r.iter_chunks(chunk):
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
            "ecal_over_ep": {"mean": float(mean), "std": std, "min": float(rmin), "max": float(rmax)},
            "hit_fraction_mean": occ / r.n,
            "attrs": r.attrs,
        }
