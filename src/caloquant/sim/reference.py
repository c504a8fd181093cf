"""Geant4 reference sets: named, seeded, sharded, resumable, checksummed.

A set is a list of shards (one HDF5 file each, ``shard_0000.h5`` ...) with their own seeds,
so production can stop and resume at any time and shards can be made on several machines.
``produce_set`` skips shards that already exist (and, inside a shard, reuses finished chunks).
The compact set ``package`` (100 showers at each of 100, 200, 300, 400, 500 GeV) ships inside
caloquant in a sparse form (:func:`load_packaged_reference`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.fileio import atomic_path, file_sha256, write_json
from caloquant.options import check_int


@dataclass(frozen=True)
class SetSpec:
    """``shards`` files of ``per_shard`` showers; energies fixed points or flat in a range."""

    shards: int
    per_shard: int
    seed: int
    energy_range: tuple[float, float] | None = None
    points: tuple[float, ...] | None = None
    doc: str = ""
    engine: str = "geant4"

    def energies(self, shard: int) -> np.ndarray:
        from caloquant.sim.run import draw_energies

        if self.points is not None:  # one energy point per shard
            return np.full(self.per_shard, self.points[shard % len(self.points)])
        return draw_energies(self.per_shard, self.seed + shard, energy_range=self.energy_range)


SETS: dict[str, SetSpec] = {
    "package": SetSpec(
        5,
        100,
        1000,
        points=(100.0, 200.0, 300.0, 400.0, 500.0),
        doc="100 showers at each of 100-500 GeV (one shard per 100 showers), "
        "shipped sparse in the package",
    ),
    # train and heldout grew from 50 and 10 shards (issue 23): the first shards keep their seeds
    "train": SetSpec(
        150,
        100,
        10_000,
        energy_range=(100.0, 500.0),
        doc="15,000 showers flat in 100-500 GeV for training",
    ),
    "heldout": SetSpec(
        20,
        100,
        20_000,
        energy_range=(100.0, 500.0),
        doc="2,000 held-out showers flat in 100-500 GeV, "
        "never used for training or epoch selection",
    ),
    "flat2000": SetSpec(
        20,
        100,
        30_000,
        energy_range=(100.0, 500.0),
        doc="2,000 showers flat in 100-500 GeV for tuning and study",
    ),
    "fixed": SetSpec(
        6,
        100,
        50_000,
        points=(100.0, 300.0, 500.0),
        doc="200 showers at each of 100, 300 and 500 GeV (one point per shard): the fixed-energy "
        "acceptance of a trained model, never used for training or epoch selection",
    ),
    "train-gflash": SetSpec(
        50,
        100,
        40_000,
        energy_range=(100.0, 500.0),
        engine="gflash",
        doc="5,000 showers flat in 100-500 GeV from GFlash fitted to Geant4 (the shipped fit): "
        "the training top-up to 10,000",
    ),
}


def produce_set(
    name: str,
    out_dir: str | Path,
    workers: int = 1,
    max_shards: int | None = None,
    log: Callable[[str], None] | None = None,
    engine: str | None = None,
    folder: str | None = None,
) -> dict[str, Any]:
    """Make the missing shards of set ``name`` under ``out_dir/(folder or name)`` and write its
    manifest.

    ``engine`` overrides the set's own engine (the GFlash fallback of a Geant4 set)."""
    from caloquant.sim.run import SimConfig, simulate

    if name not in SETS:
        raise CaloquantError(f"unknown reference set '{name}' (choose from {', '.join(SETS)})")
    spec = SETS[name]
    engine = engine or spec.engine
    d = Path(out_dir) / (folder or name)
    d.mkdir(parents=True, exist_ok=True)
    made = 0
    for k in range(spec.shards):
        path = d / f"shard_{k:04d}.h5"
        if path.exists():
            continue
        if max_shards is not None and made >= max_shards:
            break
        res = simulate(
            path,
            spec.energies(k),
            SimConfig(engine=engine, seed=spec.seed + k),
            workers=workers,
        )
        made += 1
        if log:
            log(
                f"{name} shard {k + 1}/{spec.shards}: {res['n']} showers, "
                f"{res['cpu_s_per_shower']:.2f} CPU s/shower"
            )
    return write_manifest(name, d)


def write_manifest(name: str, d: Path) -> dict[str, Any]:
    import h5py

    spec = SETS[name]
    shards = []
    for path in sorted(d.glob("shard_*.h5")):
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
            n = int(h5["energy"].shape[0])
            # the file's checksum changes with its creation time; the showers' does not
            content = hashlib.sha256(np.ascontiguousarray(h5["ECAL"][:]).tobytes()).hexdigest()
        shards.append(
            {
                "file": path.name,
                "n": n,
                "sha256": file_sha256(path),
                "ecal_sha256": content,
                "seed": int(attrs.get("seed", -1)),
                "engine": attrs.get("engine"),
                "geometry_hash": attrs.get("geometry_hash"),
                "physics_list": attrs.get("physics_list"),
            }
        )
    man = {
        "set": name,
        "doc": spec.doc,
        "complete": len(shards) == spec.shards,
        "shards_done": len(shards),
        "shards_total": spec.shards,
        "showers": sum(s["n"] for s in shards),
        "shards": shards,
    }
    write_json(d / "manifest.json", man)
    return man


def set_files(name: str, out_dir: str | Path) -> list[Path]:
    return sorted((Path(out_dir) / name).glob("shard_*.h5"))


def read_reference_set(
    folder: str | Path, n: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Showers, incident energies and each read shard's seed of a reference set's folder: its
    first ``n`` showers in shard-name order (reading stops there), or all. The folder's
    manifest.json is a reference-set manifest, not a sharded-dataset one, so the shard files
    are read one by one."""
    from caloquant.data import open_showers

    if n is not None:
        n = check_int(n, "n (showers to read)", 1)
    files = sorted(Path(folder).glob("shard_*.h5"))
    if not files:
        raise CaloquantError(f"{folder}: no shard_*.h5 files of a reference set")
    showers, energies, seeds = [], [], []
    for f in files:
        if n is not None and sum(map(len, energies)) >= n:
            break
        with open_showers(f) as r:
            s, e = r.read()
            seeds.append(int(r.attrs.get("seed", -1)))
        showers.append(s)
        energies.append(e)
    return np.concatenate(showers)[:n], np.concatenate(energies)[:n], seeds


# ---- the compact reference shipped in the package -----------------------------------------
PACKAGED = "data/g4_reference.npz"


def pack_reference(
    files: list[Path], out: str | Path, cell_cut_gev: float = 1e-6
) -> dict[str, Any]:
    """Store showers sparsely (flat cell index uint16, value float32 per non-zero cell) plus the
    per-shower sums and the first file's attributes, compressed."""
    import h5py

    from caloquant.data import read_showers

    idx, val, counts, energies, sums = [], [], [], [], []
    attrs: dict[str, Any] = {}
    for f in files:
        s, e = read_showers(f)
        with h5py.File(f, "r") as h5:
            sums.append(
                np.stack(
                    [
                        h5[k][:]
                        for k in ("e_silicon", "e_silicon_outside_grid", "e_absorber", "e_escaped")
                    ],
                    1,
                )
            )
            if not attrs:
                attrs = {
                    k: (
                        v.decode()
                        if isinstance(v, bytes)
                        else (v.item() if hasattr(v, "item") else v)
                    )
                    for k, v in h5.attrs.items()
                }
        flat = s.reshape(len(s), -1)
        for row in flat:
            nz = np.flatnonzero(row >= cell_cut_gev)
            idx.append(nz.astype(np.uint16))
            val.append(row[nz].astype(np.float32))
            counts.append(len(nz))
        energies.append(e)
    grid = s.shape[1:]
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                index=np.concatenate(idx),
                value=np.concatenate(val),
                counts=np.asarray(counts, dtype=np.int32),
                energy=np.concatenate(energies),
                sums=np.concatenate(sums),
                grid=np.asarray(grid),
                attrs=json.dumps(attrs, default=str),
            )
    return {"showers": int(len(counts)), "bytes": Path(out).stat().st_size}


def load_packed(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Dense showers (N, X, Y, Z) GeV, energies (N,) GeV and metadata of a packed reference."""
    with np.load(path, allow_pickle=False) as z:
        grid = tuple(int(g) for g in z["grid"])
        counts = z["counts"]
        n = len(counts)
        dense = np.zeros((n, int(np.prod(grid))), dtype=np.float32)
        rows = np.repeat(np.arange(n), counts)
        dense[rows, z["index"].astype(np.int64)] = z["value"]
        energies, meta = _packed_header(z)
        meta["sums"] = z["sums"]
        return dense.reshape(n, *grid), energies, meta


def read_packed_header(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Energies (N,) GeV and metadata of a packed reference, without expanding its showers."""
    with np.load(path, allow_pickle=False) as z:
        return _packed_header(z)


def _packed_header(z: Any) -> tuple[np.ndarray, dict[str, Any]]:
    return z["energy"].astype(np.float64), json.loads(str(z["attrs"]))


def packaged_reference_path() -> Path | None:
    p = resources.files("caloquant.sim").joinpath(PACKAGED)
    return Path(str(p)) if p.is_file() else None


def load_packaged_reference() -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The compact Geant4 reference shipped with caloquant (100 showers at each of 100-500 GeV)."""
    p = packaged_reference_path()
    if p is None:
        raise CaloquantError(
            "this caloquant has no packaged Geant4 reference "
            "(run benchmarks/make_reference_sets.py)"
        )
    return load_packed(p)


def default_data_dir() -> Path:
    import os

    from caloquant.fileio import cache_root

    return (
        Path(os.environ["CALOQUANT_DATA"])
        if os.environ.get("CALOQUANT_DATA")
        else cache_root() / "reference"
    )


def write_packaged_reference(path: str | Path) -> Path:
    """The Geant4 reference shipped with caloquant as one shower file (atomically), with its
    provenance."""
    from caloquant.data import write_showers

    s, e, meta = load_packaged_reference()
    attrs = {k: v for k, v in meta.items() if k != "sums" and isinstance(v, (str, int, float))}
    return write_showers(path, s, e, attrs=attrs | {"source": "caloquant packaged reference"})


def reference_set(
    name: str = "heldout",
    data_dir: str | Path | None = None,
    produce: bool = True,
    workers: int = 1,
    max_shards: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A named Geant4 reference set as a list of shower files, produced (resumably) when missing.

    ``package`` is served from the compact copy shipped in caloquant. When the Geant4 engine
    cannot run here (no cached helper and no headers or compiler), the set is made with the
    GFlash engine (fitted to Geant4) in ``<name>-gflash`` and the result says so
    (``engine``, ``fallback``, and a line through ``log``).
    """
    from caloquant.sim.helper import helper_status

    d = Path(data_dir) if data_dir is not None else default_data_dir()
    say = log or (lambda m: None)
    if name == "package" and packaged_reference_path() is not None and not set_files("package", d):
        path = write_packaged_reference(d / "package" / "shard_0000.h5")
        return {
            "name": name,
            "files": [path],
            "engine": "geant4",
            "fallback": False,
            "complete": True,
        }
    engine, folder = (SETS[name].engine if name in SETS else "geant4"), name
    st = helper_status() if engine == "geant4" else {"ready": True}
    if not st["ready"]:
        engine, folder = "gflash", f"{name}-gflash"
        say(
            f"Geant4 engine unavailable ({st.get('reason')}): "
            f"reference set '{name}' made with the GFlash engine (fitted to Geant4) instead"
        )
    if produce:
        if name not in SETS:
            raise CaloquantError(f"unknown reference set '{name}' (choose from {', '.join(SETS)})")
        produce_set(
            name, d, workers=workers, max_shards=max_shards, log=say, engine=engine, folder=folder
        )
    files = sorted((d / folder).glob("shard_*.h5"))
    return {
        "name": name,
        "files": files,
        "engine": engine,
        "fallback": engine != "geant4",
        "complete": len(files) == SETS[name].shards if name in SETS else bool(files),
    }


def packaged_points(energies: np.ndarray, geometry_hash: str) -> dict[str, Any] | None:
    """The Geant4 showers shipped in the package (100 per point, default geometry), when they
    cover ``energies`` (fixed points, at most as many showers per point as shipped): a
    per-energy reference is then real Geant4 on every machine and costs no simulation. The
    showers are expanded only by :func:`write_packaged_points`."""
    path = packaged_reference_path()
    if path is None:
        return None
    e, meta = read_packed_header(path)
    if meta.get("geometry_hash") != geometry_hash or meta.get("engine") != "geant4":
        return None
    pts, need = np.unique(energies, return_counts=True)
    have = dict(zip(*np.unique(e, return_counts=True)))
    if any(have.get(p, 0) < k for p, k in zip(pts, need)):
        return None
    return {"path": path, "sha256": file_sha256(path)[:16], "energies": e, "meta": meta}


def write_packaged_points(
    packed: dict[str, Any], energies: np.ndarray, say: Callable[[str], None]
) -> dict[str, Any]:
    """The first k shipped showers at each point, in the order of ``energies``, as a shower
    file in the per-user data cache (written once)."""
    from caloquant.data import write_showers

    take = np.concatenate(
        [
            np.flatnonzero(packed["energies"] == p)[:k]
            for p, k in zip(*np.unique(energies, return_counts=True))
        ]
    )
    meta = packed["meta"]
    attrs = {k: v for k, v in meta.items() if isinstance(v, (str, int, float))}
    key = hashlib.sha256(json.dumps(energies.tolist()).encode()).hexdigest()[:16]
    cache = default_data_dir() / "run" / f"points-packaged-{packed['sha256']}-{key}.h5"
    if not cache.exists():
        write_showers(
            cache,
            load_packed(packed["path"])[0][take],
            packed["energies"][take],
            attrs=attrs | {"source": f"caloquant packaged Geant4 reference {packed['path'].name}"},
        )
    say(
        f"reference points: {len(take)} Geant4 showers shipped with caloquant "
        f"({meta.get('physics_list')}, "
        f"Geant4 {meta.get('geant4_version')}) -> {cache}"
    )
    return {
        "path": str(cache),
        "engine": "geant4",
        "n": int(len(take)),
        "cached": True,
        "packaged": True,
        "_outputs": [cache],
    }
