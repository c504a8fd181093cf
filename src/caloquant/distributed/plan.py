"""The plan of a sharded run: shard boundaries, per-shard seeds, the run's identity, and the
output directory's state (new, resumable, or someone else's).

Everything here is a pure function of the run parameters, never of the cluster: shard ``i``
always holds rows ``[i*S, min((i+1)*S, N))`` (event ids alike) and draws its energies and
noise from the ``i``-th child of ``SeedSequence(seed)``. So the dataset does not depend on the
number of workers, on the order in which shards finish, or on how often a run was resumed.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.data import (
    SHARD_MANIFEST,
    SHARDED_VERSION,
    is_sharded,
    read_shard_manifest,
    shard_name,
)
from caloquant.errors import CaloquantError


def shard_seed(seed: int, index: int) -> int:
    """Seed of shard ``index``: 128 bits of the ``index``-th spawned child of SeedSequence(seed)
    (numpy's recipe for independent parallel streams)."""
    child = np.random.SeedSequence(seed, spawn_key=(index,))
    return int.from_bytes(child.generate_state(4, np.uint32).tobytes(), "little")


@dataclass(frozen=True)
class Shard:
    index: int
    start: int  # first event id
    n: int
    path: str  # relative to the output directory

    @property
    def event_ids(self) -> tuple[int, int]:
        return self.start, self.start + self.n


MAX_SHARDS = 1_000_000  # per run: the manifest lists every shard


def plan_shards(n: int, shard_size: int) -> list[Shard]:
    """The shards of ``n`` showers (both positive: checked by ``GenerateConfig``)."""
    k = -(-n // shard_size)
    if k > MAX_SHARDS:
        raise CaloquantError(
            f"{n:,} showers in shards of {shard_size:,} make {k:,} shards, more than "
            f"{MAX_SHARDS:,} per run: raise --shard-size or split the run"
        )
    return [
        Shard(i, i * shard_size, min(shard_size, n - i * shard_size), shard_name(i, k))
        for i in range(k)
    ]


def run_id(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of the packages that make or write showers, in this process."""
    out = {"python": platform.python_version()}
    for pkg in (
        "caloquant",
        "numpy",
        "torch",
        "h5py",
        "hdf5plugin",
        "dask",
        "distributed",
        "openvino",
        "onnxruntime",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    import h5py

    out["hdf5"] = h5py.version.hdf5_version
    return out


_LABELS = {
    "producer": "model or engine",
    "seed": "seed",
    "n": "number of showers",
    "shard_size": "shard size",
    "energies": "energies",
    "compression": "compression",
    "format": "format",
}


def _producer(p: Any) -> str:
    """A run's producer identity in words (a model by its weights, an engine by name)."""
    if not isinstance(p, dict):
        return str(p)
    if p.get("kind") == "model":
        return f"a model with weights sha256 {str(p.get('sha256'))[:12]} at batch {p.get('batch')}"
    if p.get("kind") == "engine":
        return f"the {p.get('engine')} engine (configuration {str(p.get('config_sha256'))[:12]})"
    return json.dumps(p, sort_keys=True)


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two run identities, as "LABEL: THEIRS there, OURS here"."""
    for k in _LABELS:
        if old.get(k) != new.get(k):
            a, b = old.get(k), new.get(k)
            if k == "producer":
                if isinstance(a, dict) and isinstance(b, dict) and a.get("kind") == b.get("kind"):
                    if a.get("batch") != b.get("batch") and a.get("sha256") == b.get("sha256"):
                        return f"--batch: {a.get('batch')} there, {b.get('batch')} here"
                a, b = _producer(a), _producer(b)
            elif isinstance(a, dict) and isinstance(b, dict):
                sub = next((kk for kk in sorted(set(a) | set(b)) if a.get(kk) != b.get(kk)), "")
                a = f"{sub}={a[sub]}" if sub in a else f"no {sub}"
                b = f"{sub}={b[sub]}" if sub in b else f"no {sub}"
            return f"{_LABELS[k]}: {a} there, {b} here"
    return "run identity differs"


def check_out_dir(out: Path, identity: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """Read-only look at the output directory. Returns the manifest of the run to resume, None
    for a new run; refuses another run's directory, a finished or started run without
    ``resume``, and a directory with other files in it."""
    if not out.exists():
        if resume:
            raise CaloquantError(f"{out}: nothing to resume (directory does not exist)")
        return None
    if not out.is_dir():
        raise CaloquantError(f"{out}: exists and is not a directory")
    if not (out / SHARD_MANIFEST).exists():
        if any(out.iterdir()):
            raise CaloquantError(
                f"{out}: exists, is not empty and holds no sharded-dataset "
                "manifest; refusing to write into it"
            )
        if resume:
            raise CaloquantError(f"{out}: nothing to resume (no {SHARD_MANIFEST})")
        return None
    if not is_sharded(out):
        raise CaloquantError(
            f"{out}: its {SHARD_MANIFEST} is not a sharded-dataset manifest; "
            "refusing to write into it"
        )
    m = read_shard_manifest(out)
    old = m.get("identity", {})
    if old != identity:
        raise CaloquantError(
            f"{out}: holds another run ({_difference(old, identity)}); choose another directory"
        )
    if not resume:
        state = (
            "a finished"
            if m.get("complete")
            else f"an interrupted ({len(m['shards'])} of {m['n_shards']} shards)"
        )
        raise CaloquantError(
            f"{out}: holds {state} run of this configuration; pass resume "
            "(--resume) to continue or check it"
        )
    return m


def manifest(
    identity: dict[str, Any],
    shards_planned: int,
    producer: dict[str, Any],
    grid: tuple[int, ...],
    done: list[dict[str, Any]],
    complete: bool,
    created_utc: str,
    updated_utc: str,
    worker_versions: list[dict[str, str]],
) -> dict[str, Any]:
    """The manifest.json of a sharded dataset (format in caloquant.data.sharded)."""
    return {
        "caloquant_sharded": SHARDED_VERSION,
        "complete": complete,
        "run_id": run_id(identity),
        "n": identity["n"],
        "n_done": sum(int(s["n"]) for s in done),
        "n_shards": shards_planned,
        "shard_size": identity["shard_size"],
        "seed": identity["seed"],
        "format": identity["format"],
        "compression": identity["compression"],
        "grid": list(grid),
        "energies": identity["energies"],
        "producer": producer,
        "precision": producer.get("precision"),
        "seeding": producer.get("seeding"),
        "identity": identity,
        "versions": versions(),
        "worker_versions": worker_versions,
        "created_utc": created_utc,
        "updated_utc": updated_utc,
        "shards": sorted(done, key=lambda s: int(s["index"])),
    }
