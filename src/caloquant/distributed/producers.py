"""Shard producers: what makes the showers of one shard.

A producer is a small picklable description, built on the client (cheap: it reads what it
needs to describe the run, never loads an engine) and sent to the workers with every task;
on a worker, :meth:`ShardProducer.batches` loads the engine once and yields (showers GeV,
energies GeV) blocks for one shard (:class:`ShardWork`).

* :class:`ModelProducer`: a built-in model name, a caloquant checkpoint (.pt), a Keras 3DGAN
  file or a ``quantize`` artifact directory, loaded on the worker through ``caloquant.load``
  (an artifact runs its self-check canary on the worker's CPU first); noise from the shard's
  seed.
* :class:`EngineProducer`: the Monte Carlo engines of ``caloquant.sim`` (``geant4``,
  ``gflash``); Geant4 seeds every shower from (run seed, event id), GFlash every shard from
  (run seed, shard index), as ``caloquant simulate`` does.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from caloquant.distributed.config import ENGINES
from caloquant.errors import CaloquantError
from caloquant.fileio import content_sha256


@dataclass(frozen=True)
class ShardWork:
    """One shard as a producer sees it on a worker."""

    index: int
    start: int  # event id of the first shower
    energies: np.ndarray  # GeV, one per shower
    seed: int  # the shard's own seed (child ``index`` of SeedSequence(run seed))
    threads: int  # intra-op threads the engine may use


class ShardProducer(Protocol):
    """What ``generate`` needs from a source of showers."""

    grid: tuple[int, ...]
    energy_range_gev: tuple[float, float]
    engine_threads: int | None  # threads one task uses (None: as many as the worker can give)
    default_shard_size: int

    def identity(self) -> dict[str, Any]:
        """JSON data that decides the showers (same identity + seed -> same showers)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Identity plus provenance for the manifest (kind, path, precision, backend, ...)."""
        ...

    def batches(self, work: ShardWork) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """On a worker: the shard's showers, in blocks."""
        ...


# one loaded engine per worker thread (a Dask worker may run several tasks at once; an engine
# object is not assumed to be thread safe); replaced when another model is asked for
_LOADED = threading.local()


@dataclass(frozen=True)
class ModelProducer:
    """Showers from a generative model (its path resolved on the client: workers need the
    same path)."""

    path: str
    sha256: str
    spec: dict[str, Any]
    precision: str
    backend: str
    batch: int = 64
    grid: tuple[int, ...] = field(default=())
    energy_range_gev: tuple[float, float] = field(default=(0.0, 0.0))
    engine_threads: int | None = None
    default_shard_size: int = 1000

    @classmethod
    def from_path(cls, model: str | os.PathLike[str] | None, batch: int = 64) -> ModelProducer:
        """Describe a model (built-in name, checkpoint, Keras file or artifact) on the client
        without loading an inference engine."""
        from caloquant.models import ModelSpec, model_ref
        from caloquant.precision import read_manifest

        if batch < 1:
            raise CaloquantError(f"batch size must be positive, got {batch}")
        ref = model_ref(model)
        p = ref.path.resolve()
        if ref.kind == "artifact":
            # the artifact's manifest says what it is; its engine is loaded (and self-checked)
            # only on the workers
            m = read_manifest(p)
            spec = ModelSpec.from_dict(m["spec"])
            precision, backend = str(m.get("precision", "?")), str(m["backend"])
        else:
            spec, precision, backend = ref.float_checkpoint().spec, "fp32", "torch"
        return cls(
            str(p),
            content_sha256(p),
            spec.to_dict(),
            precision,
            backend,
            batch,
            tuple(spec.grid),
            tuple(spec.energy_range_gev),
        )  # type: ignore[arg-type]

    def identity(self) -> dict[str, Any]:
        return {"kind": "model", "sha256": self.sha256, "batch": self.batch}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "model",
            "path": self.path,
            "sha256": self.sha256,
            "arch": self.spec["arch"],
            "precision": self.precision,
            "backend": self.backend,
            "batch": self.batch,
            "valid_energy_gev": list(self.energy_range_gev),
            "seeding": "shard i: energies and noise from the i-th child of numpy "
            "SeedSequence(seed)",
        }

    def _generator(self, threads: int) -> Any:
        key = (self.path, self.sha256, threads)
        if getattr(_LOADED, "key", None) != key:
            _LOADED.key, _LOADED.gen = None, None  # free the previous engine first
            if content_sha256(self.path) != self.sha256:
                raise CaloquantError(
                    f"{self.path} on worker host {socket.gethostname()} differs "
                    "from the client's model (sha256); workers need the same "
                    "model at the same path"
                )
            from caloquant.models import model_ref
            from caloquant.precision import load_generator

            # an artifact runs its self-check on this worker's CPU
            gen = load_generator(model_ref(self.path), threads)[0]
            _LOADED.key, _LOADED.gen = key, gen
        return _LOADED.gen

    def batches(self, work: ShardWork) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from caloquant.models import generate_batches

        gen = self._generator(work.threads)
        yield from generate_batches(gen, work.energies, work.seed, batch=self.batch)


# Geant4 allows one run manager per process: one engine per worker process, used by one task
# at a time (a Dask worker with several task slots runs its engine shards one after another)
_ENGINE: dict[str, Any] = {}
_ENGINE_LOCK = threading.Lock()


@dataclass(frozen=True)
class EngineProducer:
    """Showers from a Monte Carlo engine of ``caloquant.sim`` (a ``SimConfig`` whose seed is
    the run's seed)."""

    config: Any  # caloquant.sim.SimConfig
    key: str
    geant4_version: str | None
    grid: tuple[int, ...] = field(default=())
    energy_range_gev: tuple[float, float] = field(default=(0.0, 0.0))
    engine_threads: int | None = 1  # Geant4 and the GFlash kernel run on one thread
    default_shard_size: int = 20

    @classmethod
    def from_config(cls, name: str, seed: int, config: Any = None) -> EngineProducer:
        if name not in ENGINES:
            raise CaloquantError(f"unknown engine '{name}' (choose from {', '.join(ENGINES)})")
        if importlib.util.find_spec("caloquant.sim") is None:
            raise CaloquantError(f"engine {name} not available: caloquant.sim not installed")
        import dataclasses

        from caloquant.sim import MAX_ENERGY_GEV, SimConfig

        cfg = dataclasses.replace(config or SimConfig(), engine=name, seed=int(seed))
        cfg.check()
        g4v = None
        if name == "geant4":
            from caloquant.sim import build_helper, geant4_version

            build_helper()  # compile the helper once here, not in every worker
            g4v = geant4_version()
        # the config's hash without energies (those are part of the run's identity separately)
        return cls(
            cfg,
            cfg.key(np.zeros(0)),
            g4v,
            tuple(cfg.geometry.grid),
            (1e-9, MAX_ENERGY_GEV),
            1,
            20 if name == "geant4" else 500,
        )

    def identity(self) -> dict[str, Any]:
        return {"kind": "engine", "engine": self.config.engine, "config_sha256": self.key}

    def describe(self) -> dict[str, Any]:
        c = self.config
        g4 = c.engine == "geant4"
        return {
            "kind": "engine",
            "engine": c.engine,
            "config_sha256": self.key,
            "precision": "Monte Carlo",
            "geometry": c.geometry.name,
            "geometry_hash": c.geometry.hash,
            "physics": c.physics.label if g4 else "gflash",
            "particle": c.gun.particle,
            "geant4_version": self.geant4_version,
            "units": "GeV deposited in silicon (not calibrated to the beam energy)",
            "seeding": "shard i: energies from the i-th child of numpy SeedSequence(seed); "
            "showers: "
            + ("each from (seed, event id)" if g4 else "each shard from (seed, shard index)"),
        }

    def batches(self, work: ShardWork) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from caloquant.sim import CELL_CUT_GEV, make_engine

        with _ENGINE_LOCK:
            if _ENGINE.get("key") != self.key:
                _ENGINE.clear()
                _ENGINE["engine"], _ENGINE["key"] = make_engine(self.config), self.key
            # one call per shard: GFlash draws a shard's randomness from (seed, shard index)
            cells, _ = _ENGINE["engine"].run(work.index, work.start, work.energies)
        yield np.where(cells < CELL_CUT_GEV, np.float32(0), cells), work.energies


def producer_for(
    model: str | os.PathLike[str] | None = None,
    engine: str | None = None,
    batch: int = 64,
    seed: int = 0,
    engine_config: Any = None,
) -> ShardProducer:
    """The producer for ``--model MODEL`` or ``--engine NAME`` (at most one; neither: the
    default built-in model)."""
    if model is not None and engine is not None:
        raise CaloquantError(
            "give exactly one of model (a name, checkpoint or artifact) or "
            "engine (geant4 or gflash)"
        )
    if engine is None:
        return ModelProducer.from_path(model, batch)
    return EngineProducer.from_config(engine, seed, engine_config)
