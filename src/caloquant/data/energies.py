"""Incident energies of a run: one fixed value, uniform in a range, or given explicitly.

Shared by every stage that makes showers (``sample``, ``simulate``); torch-free so that
fast engines do not pay for importing it.
"""

from __future__ import annotations

import numpy as np

from caloquant.errors import CaloquantError


def energies_for(
    n: int,
    seed: int,
    energy: float | None = None,
    energy_range: tuple[float, float] | None = None,
    energies: np.ndarray | None = None,
) -> np.ndarray:
    """Incident energies (GeV): one fixed value, uniform in a range, or given explicitly."""
    given = sum(x is not None for x in (energy, energy_range, energies))
    if given != 1:
        raise CaloquantError("give exactly one of energy, energy_range, energies")
    if energies is not None:
        e = np.asarray(energies, dtype=np.float64).reshape(-1)
        if e.shape[0] != n:
            raise CaloquantError(f"energies file holds {e.shape[0]} values but n is {n}")
    elif energy is not None:
        e = np.full(n, float(energy))
    else:
        assert energy_range is not None
        lo, hi = energy_range
        if not lo < hi:
            raise CaloquantError(f"energy range {lo}:{hi} is empty (need LO < HI)")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed).spawn(2)[0]))
        e = rng.uniform(lo, hi, size=n)
    if not np.all(np.isfinite(e)):
        raise CaloquantError("incident energy is NaN or Inf")
    if np.any(e <= 0):
        raise CaloquantError(f"incident energy is zero or negative (min {e.min():g} GeV)")
    return e
