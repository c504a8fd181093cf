"""Shard producers: what makes the showers of one shard.

A producer is a small picklable description, built on the client (cheap: it reads what it
needs to describe the run, never loads an engine) and sent to the workers with every task;
on a worker, :meth:`ShardProducer.batches` loads the engine once per worker thread and
yields (showers GeV, energies GeV) blocks for a shard's energies and seed.

* :class:`ModelProducer`: a caloquant checkpoint (.pt) or a ``quantize`` artifact directory,
  loaded on the worker through the public loaders (``caloquant.precision.load_artifact``,
  which runs an artifact's self-check, or ``caloquant.models.load_checkpoint``).
* engines (``geant4``, ``gflash``): through ``caloquant.sim`` when that package is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from caloquant.errors import CaloquantError

ENGINES: tuple[str, ...] = ("geant4", "gflash")


class ShardProducer(Protocol):
    """What ``generate`` needs from a source of showers."""

    grid: tuple[int, ...]
    energy_range_gev: tuple[float, float]

    def identity(self) -> dict[str, Any]:
        """JSON data that decides the showers (same identity + seed -> same showers)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Identity plus provenance for the manifest (kind, path, precision, backend, ...)."""
        ...

    def batches(self, energies: np.ndarray, seed: int, threads: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """On a worker: showers for ``energies`` from the random stream ``seed``."""
        ...


def model_sha256(path: str | os.PathLike[str]) -> str:
    """Content hash of a checkpoint file, or of every file of an artifact directory (relative
    names and contents), so that a run is tied to the model's bytes, not to its path."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


# one loaded engine per worker thread (a Dask worker may run several tasks at once; an engine
# object is not assumed to be thread safe); replaced when another model is asked for
_LOADED = threading.local()


@dataclass(frozen=True)
class ModelProducer:
    """Showers from a generative model: a checkpoint (.pt) or a quantize artifact directory."""

    path: str
    sha256: str
    spec: dict[str, Any]
    precision: str
    backend: str
    batch: int = 64
    grid: tuple[int, ...] = field(default=())
    energy_range_gev: tuple[float, float] = field(default=(0.0, 0.0))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], batch: int = 64) -> ModelProducer:
        """Describe a model on the client without loading its engine."""
        from caloquant.models import ModelSpec, load_checkpoint
        from caloquant.precision import is_artifact

        p = Path(path).resolve()
        if batch < 1:
            raise CaloquantError(f"batch size must be positive, got {batch}")
        if not p.exists():
            raise CaloquantError(f"{path}: model not found")
        if p.is_dir():
            if not is_artifact(p):
                raise CaloquantError(f"{path}: not a checkpoint file or a quantize artifact directory")
            # the artifact's manifest (docs/precision.md) says what it is; its engine is loaded
            # (and self-checked) only on the workers
            try:
                m = json.loads((p / "manifest.json").read_text())
                spec = ModelSpec.from_dict(m["spec"])
                precision, backend = str(m["precision"]), str(m["backend"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise CaloquantError(f"{path}: malformed artifact manifest ({exc!r})") from None
        else:
            spec = load_checkpoint(p).spec
            precision, backend = "fp32", "torch"
        return cls(str(p), model_sha256(p), spec.to_dict(), precision, backend, batch,
                   tuple(spec.grid), tuple(spec.energy_range_gev))  # type: ignore[arg-type]

    def identity(self) -> dict[str, Any]:
        return {"kind": "model", "sha256": self.sha256, "batch": self.batch}

    def describe(self) -> dict[str, Any]:
        return {"kind": "model", "path": self.path, "sha256": self.sha256, "arch": self.spec["arch"],
                "precision": self.precision, "backend": self.backend, "batch": self.batch,
                "valid_energy_gev": list(self.energy_range_gev)}

    def _generator(self, threads: int) -> Any:
        key = (self.path, self.sha256, threads)
        if getattr(_LOADED, "key", None) != key:
            _LOADED.key, _LOADED.gen = None, None  # free the previous engine first
            if model_sha256(self.path) != self.sha256:
                raise CaloquantError(f"{self.path} on worker host {socket.gethostname()} differs from the client's model "
                                     "(sha256); workers need the same model at the same path")
            if Path(self.path).is_dir():
                from caloquant.precision import load_artifact

                gen = load_artifact(self.path, threads)
            else:
                from caloquant.models import TorchGenerator, load_checkpoint

                ckpt = load_checkpoint(self.path)
                gen = TorchGenerator(ckpt.spec, ckpt.generator.eval(), threads)
            _LOADED.key, _LOADED.gen = key, gen
        return _LOADED.gen

    def batches(self, energies: np.ndarray, seed: int, threads: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from caloquant.models import generate_batches

        yield from generate_batches(self._generator(threads), energies, seed, batch=self.batch)


def engine_producer(name: str, batch: int = 64) -> ShardProducer:
    """A Monte Carlo engine as a producer (needs the ``caloquant.sim`` package)."""
    if name not in ENGINES:
        raise CaloquantError(f"unknown engine '{name}' (choose from {', '.join(ENGINES)})")
    if importlib.util.find_spec("caloquant.sim") is None:
        raise CaloquantError(f"engine {name} not available: caloquant.sim not installed")
    raise CaloquantError(f"engine {name} not available: caloquant.sim has no shard producer for it yet")


def producer_for(model: str | os.PathLike[str] | None = None, engine: str | None = None, batch: int = 64) -> ShardProducer:
    """The producer for ``--model MODEL_OR_ARTIFACT`` or ``--engine NAME`` (exactly one)."""
    if (model is None) == (engine is None):
        raise CaloquantError("give exactly one of model (a checkpoint or artifact) or engine (geant4 or gflash)")
    if model is not None:
        return ModelProducer.from_path(model, batch)
    assert engine is not None
    return engine_producer(engine, batch)
