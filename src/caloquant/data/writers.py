"""Writing shower files: compression choices, provenance attributes, the streaming writer.

Writes are compressed (gzip by default, LZ4 or Zstd through hdf5plugin on request), chunked,
carry provenance attributes, and are atomic (:func:`caloquant.fileio.atomic_path`); the
compression and the write run on a background thread so that they overlap with inference.
The layouts written are those of :mod:`caloquant.data.formats`, which reads them back.
"""

from __future__ import annotations

import datetime as _dt
import os
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from caloquant.data.checks import check_chunk
from caloquant.data.formats import MEV_PER_GEV, Format, check_format
from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path

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
            raise CaloquantError(
                f"compression level must be an integer, got '{compression}'"
            ) from None
    if name not in COMPRESSIONS or (level is not None and name in ("lz4", "none")):
        raise CaloquantError(
            f"unknown compression '{compression}' "
            "(choose from gzip[:LEVEL], lz4, zstd[:LEVEL], none)"
        )
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


def provenance(**kw: Any) -> dict[str, Any]:
    """Provenance attributes for a file written now (None values are dropped)."""
    from caloquant.version import __version__

    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    out = {"caloquant_version": __version__, "created_utc": now}
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
        check_format(fmt)
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
        self._h5 = h5 = h5py.File(tmp, "w")
        grid, nvox = self.grid, int(np.prod(self.grid))
        per_shower = nvox * 4
        self._rows = rows = max(1, min(_CHUNK_BYTES // per_shower, self.expected_n or 1 << 30))
        erows = max(rows, 1024)  # energies and event ids: one number per shower
        f = self._filters
        if self.fmt == "3dgan":
            h5.create_dataset(
                "ECAL",
                shape=(0, *grid),
                maxshape=(None, *grid),
                dtype="f4",
                chunks=(rows, *grid),
                **f,
            )
            h5.create_dataset(
                "energy", shape=(0,), maxshape=(None,), dtype="f4", chunks=(erows,), **f
            )
            units = {"ECAL": "GeV", "energy": "GeV"}
        else:
            h5.create_dataset(
                "showers",
                shape=(0, nvox),
                maxshape=(None, nvox),
                dtype="f4",
                chunks=(rows, nvox),
                **f,
            )
            h5.create_dataset(
                "incident_energies",
                shape=(0, 1),
                maxshape=(None, 1),
                dtype="f4",
                chunks=(erows, 1),
                **f,
            )
            units = {"showers": "MeV", "incident_energies": "MeV"}
            h5.attrs["grid_shape"] = np.asarray(grid, dtype=np.int64)
        if self.first_event_id is not None:
            h5.create_dataset(
                "event_id", shape=(0,), maxshape=(None,), dtype="i8", chunks=(erows,), **f
            )
        for k, u in units.items():
            h5[k].attrs["units"] = u
        for k, v in self.attrs.items():
            h5.attrs[k] = v if not isinstance(v, dict) else str(v)
        if self.background:
            self._queue = queue.Queue(maxsize=self.queue_depth)
            self._thread = threading.Thread(
                target=self._drain, name=f"ShowerWriter({self.path.name})", daemon=True
            )
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
            raise CaloquantError(
                f"{self.path}: cannot append showers {shape} with energies {energies.shape} "
                f"to grid {self.grid}"
            )
        # a copy: the caller may reuse its buffer (engines hand out views of their output
        # tensors)
        if self.background:
            showers = np.array(showers, dtype=np.float32)
        else:
            showers = np.asarray(showers, dtype=np.float32)
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
                cells = showers[a:b].reshape(b - a, -1) * np.float32(MEV_PER_GEV)
                h5["showers"][n0 + a : n0 + b] = cells
        if self.fmt == "3dgan":
            h5["energy"][n0:] = energies
        else:
            h5["incident_energies"][n0:] = (energies * MEV_PER_GEV).reshape(-1, 1)
        if self.first_event_id is not None:
            first = self.first_event_id + n0
            h5["event_id"][n0:] = np.arange(first, first + k, dtype=np.int64)

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

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._h5 is not None and self._ctx is not None
        try:
            self._stop_writer(abort=et is not None)
            if et is None and self._error is not None:
                raise self._error
            if et is None and self.expected_n is not None and self.n != self.expected_n:
                raise CaloquantError(
                    f"{self.path}: wrote {self.n} showers, expected {self.expected_n}"
                )
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
