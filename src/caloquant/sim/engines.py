"""Simulation engines and what configures them: ``SimConfig`` (checked on construction, what
the engine needs on this machine by ``SimConfig.check``) and the worker side of a run (one
engine per worker process, built by ``init_worker``).
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.options import (
    check_energies as checked_energies,
    check_int,
    check_seed,
    check_showers,
)
from caloquant.sim.geant4 import Gun, Physics
from caloquant.sim.geometry import Geometry, load_geometry

ENGINES = ("geant4", "gflash")


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines the showers of a run (besides the energies); the values are
    checked on construction, what the engine needs on this machine by :meth:`check`."""

    engine: str = "geant4"
    geometry: Geometry = field(default_factory=load_geometry)
    physics: Physics = field(default_factory=Physics)
    gun: Gun = field(default_factory=Gun)
    seed: int = 0
    gflash: dict[str, float] | None = None  # GFlash constants; None = the shipped fit
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise CaloquantError(
                f"--engine must be one of {', '.join(ENGINES)}, got '{self.engine}'"
            )
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.engine == "gflash":
            if self.gun.position_sigma_mm > 0 or self.gun.angle_sigma_mrad > 0:
                raise CaloquantError(
                    "the GFlash engine has no gun smearing (--smear-position, --smear-angle: "
                    "use the Geant4 engine)"
                )
            if self.physics.list != "em-analytic":
                raise CaloquantError(
                    "physics lists (--physics) apply to the Geant4 engine only, not to GFlash"
                )
        if self.chunk_size is not None:
            check_int(self.chunk_size, "chunk size", 1)

    def check(self) -> None:
        """What the engine needs here, before any worker starts: Geant4's data sets (standard
        physics) and every material of the geometry (GFlash: its constants)."""
        if self.engine == "geant4":
            from caloquant.sim.geant4 import check_materials

            self.physics.check()
            check_materials(self.geometry)
        else:
            from caloquant.sim.geometry import effective_medium

            effective_medium(self.geometry)

    @property
    def chunk(self) -> int:
        return self.chunk_size or (10 if self.engine == "geant4" else 500)

    def key(self, energies: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {
                    "engine": self.engine,
                    "geometry": self.geometry.hash,
                    "physics": self.physics.to_dict(),
                    "gun": vars(self.gun) | {},
                    "seed": self.seed,
                    "chunk": self.chunk,
                    "gflash": self.gflash if self.engine == "gflash" else None,
                },
                sort_keys=True,
                default=str,
            ).encode()
        )
        h.update(np.ascontiguousarray(energies, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def check_energies(energies: np.ndarray) -> np.ndarray:
    """Energies (GeV) the engines take: numbers, 0 < E <= 10 TeV, at most
    ``MAX_SHOWERS_PER_CALL`` of them."""
    e = checked_energies(energies, "energies (--energies)")
    check_showers(len(e), "number of showers (--n)")
    return e


# ---- worker side -----------------------------------------------------------------------
_ENGINE: Any = None
_INIT_ERROR: str | None = None


def init_worker(cfg: SimConfig, log: str | None) -> None:
    """Build the engine once per worker process (Geant4: one run manager per process); the
    initializer of every process pool that simulates (here and in :mod:`caloquant.sim.timing`).
    A one-line error is kept and raised by the first task, so that the parent prints it (an
    initializer that raises only breaks the pool)."""
    global _ENGINE, _INIT_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        _ENGINE = make_engine(cfg, log)
    except CaloquantError as exc:
        _INIT_ERROR = str(exc)


def worker_engine() -> Any:
    """The engine :func:`init_worker` built in this worker process."""
    if _INIT_ERROR is not None:
        raise CaloquantError(_INIT_ERROR)
    if _ENGINE is None:
        raise CaloquantError("no simulation engine in this process (init_worker was not run)")
    return _ENGINE


def make_engine(cfg: SimConfig, log: str | None = None) -> Any:
    if cfg.engine == "geant4":
        from caloquant.sim.geant4 import Session, redirect_output

        redirect_output(log)
        return _Geant4Engine(Session(cfg.geometry, cfg.physics, cfg.gun), cfg.seed)
    from caloquant.sim.gflash import GFlash

    return _GFlashEngine(GFlash(cfg.geometry, cfg.gflash, particle=cfg.gun.particle), cfg.seed)


class _Geant4Engine:
    def __init__(self, session: Any, seed: int) -> None:
        self.session, self.seed = session, seed

    def run(
        self, chunk_index: int, start: int, energies: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from caloquant.sim.geant4 import shower_seeds

        return self.session.run(
            energies, shower_seeds(self.seed, np.arange(start, start + len(energies)))
        )


class _GFlashEngine:
    def __init__(self, gf: Any, seed: int) -> None:
        self.gf, self.seed = gf, seed

    def run(
        self, chunk_index: int, start: int, energies: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, chunk_index, 0x6F1A5]))
        )
        return self.gf.simulate(energies, rng)


def work_chunk(
    chunk_index: int, start: int, energies: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, float]:
    """A worker's task: one chunk of showers, with the CPU time it took."""
    t0 = time.process_time()
    cells, sums = worker_engine().run(chunk_index, start, energies)
    return chunk_index, cells, sums, time.process_time() - t0
