"""What a ``generate`` run makes: every option with its default, checked before any work.

In the spirit of the other stages' config objects (``QuantizeConfig``, ``TrainConfig``,
``SimConfig``, ``BenchConfig``): a :class:`GenerateConfig` says *what* to make,
:func:`caloquant.distributed.generate` makes it. The command line reads its defaults from
here, so a default lives in one place.

This module stays light (no Dask, no HDF5 at import): the command line imports it to build
its options, and every command pays for what it imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    MAX_RETRIES,
    MAX_SHOWERS_PER_CALL,
    MAX_THREADS,
    MAX_WORKERS,
    as_int,
    check_energies,
    check_int,
    check_seconds,
    check_seed,
    parse_energy_range,
)

ENGINES: tuple[str, ...] = ("geant4", "gflash")
MAX_SHOWERS_PER_RUN = 1_000_000_000  # and at most MAX_SHARDS shards (distributed.plan)


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (energies may be a big array)
class GenerateConfig:
    """One ``generate`` run (see :func:`caloquant.distributed.generate`).

    * ``n`` showers, in shards of ``shard_size`` (None: the producer's default, 1000 for
      models, 20 for Geant4, 500 for GFlash);
    * ``model`` (a built-in name, checkpoint or quantize artifact directory; None and no
      engine: the built-in ``cern-3dgan``) or ``engine`` (``geant4``, ``gflash``; its
      geometry, physics and gun from ``engine_config``, a ``caloquant.sim.SimConfig`` whose
      seed is replaced by ``seed``);
    * ``energy_range`` (LO, HI) GeV drawn uniformly per shard, or ``energies``: one per
      shower (kept as a read-only float64 copy);
    * ``scheduler``: the address of an existing Dask scheduler (tcp:// or tls://;
      ``security`` from :func:`caloquant.distributed.security_from`, default: Dask's
      configuration), else a local cluster of ``workers`` processes (None: cores // 2,
      engines: cores) with ``threads`` engine threads each (None: cores // workers, engines:
      1; on a remote cluster: the host's cores divided by its task slots);
    * ``retries``: re-runs of a shard whose task raised; ``connect_timeout``: seconds to
      reach the scheduler.

    A bad value raises :class:`CaloquantError` naming the option (``--shard-size``: the
    command line's name for ``shard_size``), so that the command line can print it as is.
    Checks that need the model (its valid energy range) happen when the run starts.
    """

    n: int
    model: str | Path | None = None
    engine: str | None = None
    energy_range: tuple[float, float] | str | None = None  # "LO:HI" is parsed (the CLI)
    energies: np.ndarray | None = None
    shard_size: int | None = None
    seed: int = 0
    scheduler: str | None = None
    workers: int | None = None
    threads: int | None = None
    security: Any = None  # a distributed.Security
    resume: bool = False
    batch: int = 64
    compression: str = "lz4"
    allow_extrapolation: bool = False
    engine_config: Any = None  # a caloquant.sim.SimConfig
    connect_timeout: float = 10.0
    retries: int = 2

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option ``name`` (what the command line shows and uses)."""
        f = cls.__dataclass_fields__[name]
        if f.default is dataclasses.MISSING:
            raise KeyError(f"{name} has no default")
        return f.default

    def __post_init__(self) -> None:
        n = as_int(self.n, "number of showers (--n)")
        if n < 1:
            raise CaloquantError(f"number of showers (--n) must be positive, got {n}")
        if n > MAX_SHOWERS_PER_RUN:
            raise CaloquantError(
                f"number of showers (--n) must be at most {MAX_SHOWERS_PER_RUN:,} per run, "
                f"got {n} (split the production into several runs)"
            )
        object.__setattr__(self, "n", n)
        for name, flag, lo, hi in (
            ("shard_size", "shard size (--shard-size)", 1, MAX_SHOWERS_PER_CALL),
            ("workers", "workers (--workers)", 1, MAX_WORKERS),
            ("threads", "threads (--threads)", 1, MAX_THREADS),
            ("batch", "batch size (--batch)", 1, MAX_BATCH),
            ("retries", "retries (--retries)", 0, MAX_RETRIES),
        ):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), flag, lo, hi))
        object.__setattr__(self, "seed", check_seed(self.seed, "seed (--seed)"))
        object.__setattr__(
            self,
            "connect_timeout",
            check_seconds(self.connect_timeout, "connect timeout (--connect-timeout)"),
        )
        checks = [
            (
                self.model is None or self.engine is None,
                (
                    "give exactly one of --model (a name, checkpoint or artifact) or --engine "
                    "(geant4 or gflash)"
                ),
            ),
            (
                self.engine is None or self.engine in ENGINES,
                f"unknown engine '{self.engine}' (--engine: choose from {', '.join(ENGINES)})",
            ),
            (
                self.scheduler is None or self.workers is None,
                (
                    "workers (--workers) applies to the local cluster; with a scheduler "
                    "(--scheduler), the cluster has its own workers"
                ),
            ),
            (
                (self.energy_range is None) != (self.energies is None),
                ("give exactly one of --energy-range (LO:HI, GeV) or --energies (one per shower)"),
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise CaloquantError(msg)
        from caloquant.data import compression_options  # HDF5: imported when a run is set up

        try:
            compression_options(self.compression)
        except CaloquantError as exc:
            raise CaloquantError(f"compression (--compression): {exc}") from None
        if self.energy_range is not None:
            object.__setattr__(self, "energy_range", self._checked_range(self.energy_range))
        else:
            object.__setattr__(self, "energies", self._checked_energies(self.energies))

    @staticmethod
    def _checked_range(energy_range: Any) -> tuple[float, float]:
        return parse_energy_range(energy_range, "energy range (--energy-range)")

    def _checked_energies(self, energies: Any) -> np.ndarray:
        """A read-only float64 copy: the config is frozen, and the caller's array stays theirs."""
        e = check_energies(energies, "energies (--energies)", n=self.n)
        e.flags.writeable = False
        return e
