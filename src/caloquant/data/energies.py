"""Incident energies of a run: one fixed value, uniform in a range, or given explicitly.

Shared by every stage that makes showers (``sample``, ``simulate``); torch-free so that
fast engines do not pay for importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.options import (
    MAX_BATCH,
    check_energies,
    check_energy,
    check_int,
    check_seed,
    check_showers,
    parse_energy_range,
)


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (energies may be a big array)
class Energies:
    """The incident energies of one ``sample`` or ``simulate`` call, as asked: ``n`` showers
    (``--n``, at most ``MAX_SHOWERS_PER_CALL``), ``seed`` (``--seed``), and exactly one of
    ``energy`` (``--energy``), ``energy_range`` (``--energy-range``: "LO:HI" or a pair, GeV)
    or ``energies`` (``--energies``: one per shower; ``n`` None takes their number).

    Every value is checked on construction (one-line errors naming the flag), before anything
    is drawn; :meth:`values` draws them (the same seed gives the same energies everywhere)."""

    n: int | None
    seed: int = 0
    energy: float | None = None
    energy_range: tuple[float, float] | str | None = None
    energies: Any = None

    def __post_init__(self) -> None:
        given = [
            f
            for f, v in (("--energy", self.energy), ("--energy-range", self.energy_range))
            if v is not None
        ] + (["--energies"] if self.energies is not None else [])
        if len(given) != 1:
            raise CaloquantError(
                "give exactly one of --energy, --energy-range or --energies"
                + (f" (got {' and '.join(given)})" if given else "")
            )
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.energies is not None:
            if self.n is not None:
                check_showers(self.n)
            e = check_energies(self.energies, n=self.n)
            check_showers(len(e), "--energies (its number of values)")
            e.flags.writeable = False
            object.__setattr__(self, "energies", e)
            object.__setattr__(self, "n", len(e))
            return
        if self.n is None:
            raise CaloquantError("give the number of showers (--n), or --energies to fix it")
        object.__setattr__(self, "n", check_showers(self.n))
        if self.energy is not None:
            object.__setattr__(self, "energy", check_energy(self.energy))
        else:
            object.__setattr__(self, "energy_range", parse_energy_range(self.energy_range))

    def values(self) -> np.ndarray:
        """The ``n`` energies (GeV, float64)."""
        assert self.n is not None
        return _draw(self.n, self.seed, self.energy, self.energy_range, self.energies)  # type: ignore[arg-type]


@dataclass(frozen=True, eq=False)
class SampleConfig(Energies):
    """The options of one ``sample`` call (``caloquant sample`` and ``cq.Model.sample``): the
    :class:`Energies` plus ``batch`` (``--batch``, showers per model call) and ``fmt``
    (``--format`` of the file the command line writes), all checked on construction."""

    batch: int = 64
    fmt: str = "3dgan"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "batch", check_int(self.batch, "--batch", 1, MAX_BATCH))
        from caloquant.data.formats import check_format  # HDF5: not for every Energies

        check_format(self.fmt)


def _draw(
    n: int,
    seed: int,
    energy: float | None,
    energy_range: tuple[float, float] | None,
    energies: np.ndarray | None,
) -> np.ndarray:
    if energies is not None:
        return np.array(energies, dtype=np.float64)
    if energy is not None:
        return np.full(n, float(energy))
    assert energy_range is not None
    lo, hi = energy_range
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed).spawn(2)[0]))
    return rng.uniform(lo, hi, size=n)


def energies_for(
    n: int,
    seed: int,
    energy: float | None = None,
    energy_range: tuple[float, float] | None = None,
    energies: np.ndarray | None = None,
) -> np.ndarray:
    """Incident energies (GeV): one fixed value, uniform in a range, or given explicitly, checked
    by :class:`Energies`; ``seed`` may be wider than ``--seed`` (``generate`` draws a shard's
    energies from its 128-bit shard seed, derived from a checked ``--seed``)."""
    spec = Energies(n, 0, energy, energy_range, energies)
    seed = check_int(seed, "seed", 0)
    return _draw(spec.n, seed, spec.energy, spec.energy_range, spec.energies)  # type: ignore[arg-type]
