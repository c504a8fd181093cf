"""Sharded shower datasets: a directory of 3DGAN-format shard files and one ``manifest.json``.

Written by ``caloquant generate`` (:mod:`caloquant.distributed`), read here as one sample::

    OUT_DIR/manifest.json        {"caloquant_sharded": 1, "complete": true, "n": N,
                                  "grid": [...],
                                  "shards": [{"index", "path", "n", "sha256",
                                              "event_id": [first, stop]}, ...],
                                  ... run parameters, model or engine, precision, versions}
    OUT_DIR/shard-00000.h5       3DGAN layout (ECAL, energy) + int64 event_id
    OUT_DIR/shard-00001.h5       ...

Shard ``i`` holds the consecutive event ids ``[first_i, first_i + n_i)``; the shards tile
``[0, N)`` without gaps or overlaps, so event ids are unique over the whole dataset. The
manifest's checksums (sha256 of each shard file) make a damaged or foreign shard detectable.

This module builds on :mod:`caloquant.data.formats` (each shard is read by a file reader) and
is not imported by it: :func:`caloquant.data.source.open_showers` chooses between the two.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from caloquant.data.checks import check_chunk, check_energies
from caloquant.data.formats import Format, ShowerReader, open_shower_file, row_blocks
from caloquant.errors import CaloquantError, reason
from caloquant.fileio import file_sha256

SHARD_MANIFEST = "manifest.json"
SHARDED_VERSION = 1


def shard_name(index: int, n_shards: int) -> str:
    """File name of shard ``index`` (zero-padded so that names sort in shard order)."""
    return f"shard-{index:0{max(5, len(str(max(n_shards - 1, 0))))}d}.h5"


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """True for a directory whose manifest.json is a sharded-dataset manifest (a quantize
    artifact directory also has a manifest.json, of another kind)."""
    mf = Path(path) / SHARD_MANIFEST
    if not mf.is_file():
        return False
    try:
        return "caloquant_sharded" in json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
        return False


def read_shard_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a sharded dataset directory, with its shard list checked for
    consistency. (A quantize artifact's manifest.json is another format, read by
    :func:`caloquant.precision.read_manifest`.)"""
    d = Path(path)
    mf = d / SHARD_MANIFEST
    if not mf.is_file():
        raise CaloquantError(f"{d}: not a sharded dataset (no {SHARD_MANIFEST})")
    try:
        m = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise CaloquantError(f"{mf}: corrupt or unreadable manifest ({reason(exc)})") from None
    if not isinstance(m, dict) or "caloquant_sharded" not in m:
        raise CaloquantError(f"{mf}: not a sharded-dataset manifest (no 'caloquant_sharded' key)")
    if m["caloquant_sharded"] != SHARDED_VERSION:
        raise CaloquantError(
            f"{mf}: sharded-dataset version {m['caloquant_sharded']} is not supported "
            f"(expected {SHARDED_VERSION})"
        )
    try:
        shards = sorted(m["shards"], key=lambda s: int(s["index"]))
        for s in shards:
            rel = Path(s["path"])
            if rel.is_absolute() or ".." in rel.parts:
                raise CaloquantError(
                    f"{mf}: shard path '{s['path']}' must be relative to the dataset directory"
                )
            if int(s["n"]) < 1 or int(s["event_id"][1]) - int(s["event_id"][0]) != int(s["n"]):
                raise CaloquantError(
                    f"{mf}: shard {s['index']} lists n={s['n']} but event ids {s['event_id']}"
                )
            if not isinstance(s["sha256"], str) or len(s["sha256"]) != 64:
                raise CaloquantError(f"{mf}: shard {s['index']} has no valid sha256")
        int(m["n"]), int(m["n_shards"]), tuple(int(g) for g in m["grid"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CaloquantError(f"{mf}: malformed manifest ({exc!r})") from None
    m["shards"] = shards
    return m


def verify_shards(
    path: str | os.PathLike[str], shards: list[dict[str, Any]], threads: int = 4
) -> list[bool]:
    """For each shard entry: does its file exist with the recorded sha256? (hashed in threads;
    hashlib releases the GIL on large buffers)."""
    d = Path(path)

    def ok(s: dict[str, Any]) -> bool:
        f = d / s["path"]
        return f.is_file() and file_sha256(f) == s["sha256"]

    with ThreadPoolExecutor(max(1, threads)) as ex:
        return list(ex.map(ok, shards))


@dataclass
class ShardedReader:
    """A sharded dataset read as one sample: the interface of a shower source
    (:class:`caloquant.data.source.ShowerSource`: ``n``, ``grid``, ``read``, ``iter_chunks``,
    ``energies``, ``event_ids``) over all shards in order.

    It holds file readers rather than being one: it has no HDF5 file of its own, only
    shard files, opened on demand, at most ``max_open`` at a time."""

    path: Path
    n: int
    grid: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    max_open: int = 4
    # shards are written in the 3DGAN layout only (each one is checked when opened)
    format: Format = field(default="3dgan", init=False)
    _starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64), repr=False)
    _readers: OrderedDict[int, ShowerReader] = field(default_factory=OrderedDict, repr=False)

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.manifest["shards"])

    def __enter__(self) -> ShardedReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        while self._readers:
            self._readers.popitem()[1].close()

    def _shard(self, i: int) -> ShowerReader:
        r = self._readers.get(i)
        if r is not None:
            self._readers.move_to_end(i)
            return r
        entry = self.manifest["shards"][i]
        f = self.path / entry["path"]
        r = open_shower_file(f)
        want = (int(entry["n"]), self.grid, "3dgan", int(entry["event_id"][0]))
        got = (r.n, r.grid, r.format, int(r.event_ids(0, 1)[0]) if r.n else -1)
        if got != want:
            r.close()
            raise CaloquantError(
                f"{f}: shard does not match the manifest "
                f"(n, grid, format, first event id: {got}, expected {want})"
            )
        self._readers[i] = r
        if len(self._readers) > self.max_open:
            self._readers.popitem(last=False)[1].close()
        return r

    def _spans(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """(shard, local start, local stop) covering global rows [start, stop)."""
        out = []
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        while start < stop:
            a = start - int(self._starts[i])
            b = min(stop, int(self._starts[i + 1])) - int(self._starts[i])
            out.append((i, a, b))
            start += b - a
            i += 1
        return out

    def read(
        self, start: int = 0, stop: int | None = None, validate: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Showers (GeV) and energies (GeV) of rows [start, stop), across shard boundaries."""
        stop = self.n if stop is None else min(stop, self.n)
        spans = self._spans(start, stop)
        parts = [self._shard(i).read(a, b, validate=False) for i, a, b in spans]
        if not parts:
            return np.zeros((0, *self.grid), np.float32), np.zeros(0, np.float64)
        s = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        e = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        if validate:
            check_chunk(s, e, f"{self.path} rows {start}-{stop}")
        return s, e

    def iter_chunks(
        self, chunk: int = 1024, validate: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (showers, energies) blocks of at most ``chunk`` rows, in event-id order."""
        for start, stop in row_blocks(self.n, chunk):
            yield self.read(start, stop, validate=validate)

    def read_energies(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Incident energies (GeV) of rows [start, stop), unchecked (see ``energies``)."""
        stop = self.n if stop is None else min(stop, self.n)
        spans = self._spans(start, stop)
        parts = [self._shard(i).read_energies(a, b) for i, a, b in spans]
        return np.concatenate(parts) if parts else np.zeros(0, np.float64)

    def energies(self) -> np.ndarray:
        """All incident energies (GeV), shape (N,), checked as one: an error names the
        dataset directory, not one shard of it."""
        e = self.read_energies(0, self.n)
        check_energies(e, str(self.path))
        return e

    def event_ids(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int64 event ids of rows [start, stop), as recorded in the shard files."""
        stop = self.n if stop is None else min(stop, self.n)
        parts = [self._shard(i).event_ids(a, b) for i, a, b in self._spans(start, stop)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def open_sharded(
    path: str | os.PathLike[str], allow_incomplete: bool = False, verify: bool = False
) -> ShardedReader:
    """Open a sharded dataset directory as one sample.

    An interrupted run (manifest ``complete`` false) is refused unless ``allow_incomplete``,
    then its complete shards are read. ``verify`` checks every shard's sha256 first (reads
    every byte once).
    """
    d = Path(path)
    m = read_shard_manifest(d)
    shards = m["shards"]
    if not m.get("complete", False) and not allow_incomplete:
        raise CaloquantError(
            f"{d}: incomplete sharded dataset ({len(shards)} of {m['n_shards']} shards); "
            "finish it with `caloquant generate ... --resume`"
        )
    missing = [s["path"] for s in shards if not (d / s["path"]).is_file()]
    if missing:
        raise CaloquantError(
            f"{d}: {len(missing)} shard file(s) listed in the manifest are missing "
            f"(first: {missing[0]})"
        )
    if verify:
        bad = [s["path"] for s, ok in zip(shards, verify_shards(d, shards)) if not ok]
        if bad:
            raise CaloquantError(
                f"{d}: {len(bad)} shard(s) fail their sha256 checksum (first: {bad[0]})"
            )
    if m.get("complete", False):
        ids = [(int(s["event_id"][0]), int(s["event_id"][1])) for s in shards]
        tiled = [i[0] for i in ids] == [0] + [i[1] for i in ids[:-1]]
        if not tiled or sum(int(s["n"]) for s in shards) != int(m["n"]):
            raise CaloquantError(
                f"{d}: shards do not tile event ids 0-{m['n']} (gap, overlap or wrong count)"
            )
    n = sum(int(s["n"]) for s in shards)
    starts = np.concatenate([[0], np.cumsum([int(s["n"]) for s in shards])]).astype(np.int64)
    attrs = {k: v for k, v in m.items() if k != "shards" and not isinstance(v, (dict, list))}
    attrs |= {
        f"{k}_{kk}": vv
        for k, v in m.items()
        if isinstance(v, dict)
        for kk, vv in v.items()
        if not isinstance(vv, (dict, list)) and k in ("producer", "energies")
    }
    grid = tuple(int(g) for g in m["grid"])
    return ShardedReader(d, n, grid, attrs, manifest=m, _starts=starts)
