"""Checks of shower contents, shared by every reader and writer.

A shower sample that reaches the physics metrics must hold finite, non-negative cells and
finite, positive incident energies: one NaN or one negative cell silently shifts every mean
downstream, so each chunk is checked where it is read or written, and the error names it.
"""

from __future__ import annotations

import numpy as np

from caloquant.errors import CaloquantError


def check_energies(energies: np.ndarray, where: str) -> None:
    """Refuse non-finite or non-positive incident energies (GeV)."""
    if not np.all(np.isfinite(energies)):
        raise CaloquantError(f"{where}: incident energy is NaN or Inf")
    if np.any(energies <= 0):
        raise CaloquantError(
            f"{where}: incident energy is zero or negative (min {energies.min():g} GeV)"
        )


def check_chunk(showers: np.ndarray, energies: np.ndarray, where: str) -> None:
    """Refuse NaN/Inf or negative cells and non-finite or non-positive energies."""
    check_energies(energies, where)
    if not showers.size:
        return
    # two reductions and no temporary array: min and max propagate NaN, and +-Inf shows in
    # one of them
    lo, hi = showers.min(), showers.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CaloquantError(f"{where}: shower contains NaN or Inf cells")
    if lo < 0:
        raise CaloquantError(f"{where}: shower contains negative cell energies (min {lo:g} GeV)")
