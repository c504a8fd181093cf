"""Checks of option values shared by the config objects, with the limits every command keeps.

A config object (``GenerateConfig``, ``RunConfig``, ``SimConfig``, ``QuantizeConfig``,
``Energies``, ...) checks each of its fields in ``__post_init__`` with these functions, so
that the command line and the Python API refuse a bad value in one place, before any work,
with one line naming the command-line flag (``--seed must be an integer from 0 to ...``).

Limits:

* ``MAX_SHOWERS_PER_CALL``: showers of one ``sample`` or ``simulate`` call (and of one
  ``generate`` shard); ``generate`` makes more, in shards;
* seeds: integers from 0 to ``MAX_SEED`` (2**32 - 1); batch sizes: 1 to ``MAX_BATCH``;
  threads: 1 to ``MAX_THREADS``;
* incident energies: 0 < E <= ``MAX_ENERGY_GEV`` (10 TeV); a range LO:HI needs
  0 < LO < HI <= 10 TeV;
* durations and time budgets: 0 < t <= ``MAX_SECONDS`` (a day), finite.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from caloquant.errors import CaloquantError

MAX_SHOWERS_PER_CALL = 1_000_000
MAX_SEED = 2**32 - 1
MAX_THREADS = 1024  # threads per process: more would only oversubscribe any CPU made today
MAX_BATCH = 4096  # showers per model call: 4096 3DGAN showers are 1 GB of float32
MAX_ENERGY_GEV = 10_000.0  # 10 TeV: the Monte Carlo's limit, and the models' (extrapolating)
MAX_SECONDS = 86_400.0  # a duration or time budget of one step: a day
MAX_WORKERS = 1024  # worker processes on one machine (a cluster brings its own)
MAX_RETRIES = 100


def _fmt(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_int(value: Any, flag: str) -> int:
    """An integer (not a bool, not a float with a fraction), else a one-line error."""
    if isinstance(value, bool):
        raise CaloquantError(f"{flag} must be an integer, got {_fmt(value)}")
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise CaloquantError(f"{flag} must be an integer, got {_fmt(value)}")


def as_float(value: Any, flag: str) -> float:
    """A real number (int or float, not a bool or a string), else a one-line error."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise CaloquantError(f"{flag} must be a number, got {_fmt(value)}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise CaloquantError(f"{flag} must be a number, got {_fmt(value)}") from None


def check_bool(value: Any, flag: str) -> bool:
    """True or False (a switch such as ``--profile/--no-profile``), not a string or a number."""
    if not isinstance(value, bool):
        raise CaloquantError(f"{flag} must be True or False, got {_fmt(value)}")
    return value


def check_int(value: Any, flag: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer within [lo, hi] (either bound optional)."""
    v = as_int(value, flag)
    if lo is not None and hi is not None and not lo <= v <= hi:
        raise CaloquantError(f"{flag} must be an integer from {lo:,} to {hi:,}, got {_fmt(v)}")
    if lo is not None and v < lo:
        raise CaloquantError(f"{flag} must be >= {lo}, got {_fmt(v)}")
    if hi is not None and v > hi:
        raise CaloquantError(f"{flag} must be at most {hi:,}, got {_fmt(v)}")
    return v


def check_seed(value: Any, flag: str = "--seed") -> int:
    """A seed: an integer from 0 to 2**32 - 1 (every random generator caloquant uses takes it)."""
    return check_int(value, flag, 0, MAX_SEED)


def check_showers(value: Any, flag: str = "--n", lo: int = 1) -> int:
    """A number of showers of one call: from ``lo`` to ``MAX_SHOWERS_PER_CALL``."""
    v = as_int(value, flag)
    if v < lo:
        raise CaloquantError(
            f"{flag} must be {'positive' if lo == 1 else f'at least {lo}'}, got {_fmt(v)}"
        )
    if v > MAX_SHOWERS_PER_CALL:
        raise CaloquantError(
            f"{flag} must be at most {MAX_SHOWERS_PER_CALL:,} showers per call, got {_fmt(v)} "
            "(caloquant generate makes more, in shards)"
        )
    return v


def check_float(
    value: Any,
    flag: str,
    *,
    positive: bool = False,
    minimum: float | None = None,
    finite: bool = True,
) -> float:
    """A number; ``positive``: > 0; ``minimum``: >= it; ``finite``: no NaN or infinity (NaN is
    always refused)."""
    v = as_float(value, flag)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise CaloquantError(f"{flag} must be a finite number, got {_fmt(value)}")
    if positive and not v > 0:
        raise CaloquantError(f"{flag} must be > 0, got {_fmt(value)}")
    if minimum is not None and not v >= minimum:
        raise CaloquantError(f"{flag} must be >= {minimum:g}, got {_fmt(value)}")
    return v


def check_seconds(value: Any, flag: str) -> float:
    """A duration or time budget in seconds: > 0, finite, at most a day (``MAX_SECONDS``)."""
    v = check_float(value, flag, positive=True)
    if v > MAX_SECONDS:
        raise CaloquantError(
            f"{flag} must be at most {MAX_SECONDS:,.0f} s (a day), got {_fmt(value)}"
        )
    return v


def check_energy(value: Any, flag: str = "--energy") -> float:
    """One incident energy: 0 < E <= 10 TeV (in GeV)."""
    v = check_float(value, flag)
    if v <= 0:
        raise CaloquantError(f"{flag} is zero or negative ({v:g} GeV): energies must be > 0")
    if v > MAX_ENERGY_GEV:
        raise CaloquantError(
            f"{flag} must be at most {MAX_ENERGY_GEV:,.0f} GeV (10 TeV), got {_fmt(value)}"
        )
    return v


def check_energies(values: Any, flag: str = "--energies", n: int | None = None) -> Any:
    """Incident energies, one per shower: numbers (not strings or objects), 0 < E <= 10 TeV;
    ``n``: how many there must be. Returns a float64 numpy array (a copy)."""
    import numpy as np

    try:
        a = np.asarray(values)
    except (TypeError, ValueError):
        raise CaloquantError(f"{flag} must be numbers, one per shower (GeV)") from None
    if a.dtype.kind not in "iuf":
        raise CaloquantError(
            f"{flag} must be numbers, one per shower (GeV), got values of type {a.dtype}"
        )
    e = np.array(a, dtype=np.float64).reshape(-1)
    if n is not None and e.shape[0] != n:
        raise CaloquantError(
            f"{flag} holds {e.shape[0]} values but the number of showers (--n) is {n}"
        )
    if e.size == 0:
        raise CaloquantError(f"{flag} holds no values")
    if not np.all(np.isfinite(e)):
        raise CaloquantError(f"{flag}: incident energy is NaN or Inf")
    if np.any(e <= 0) or np.any(e > MAX_ENERGY_GEV):
        raise CaloquantError(
            f"{flag}: incident energies must be > 0 and at most {MAX_ENERGY_GEV:,.0f} GeV "
            f"(10 TeV), got {e.min():g} to {e.max():g}"
        )
    return e


def parse_energy_range(value: Any, flag: str = "--energy-range") -> tuple[float, float]:
    """``"LO:HI"`` (GeV) or a pair of numbers -> (LO, HI) with 0 < LO < HI, both finite."""
    if isinstance(value, str):
        parts = value.split(":")
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = []
    bad = f"{flag} must look like LO:HI in GeV (two numbers), got {_fmt(value)}"
    if len(parts) != 2:
        raise CaloquantError(bad)
    try:
        lo, hi = (float(p.strip()) if isinstance(p, str) else as_float(p, flag) for p in parts)
    except (ValueError, OverflowError, CaloquantError):
        raise CaloquantError(bad) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise CaloquantError(f"{flag} {lo:g}:{hi:g}: LO and HI must be finite numbers (GeV)")
    if not lo < hi:
        raise CaloquantError(f"{flag} {lo:g}:{hi:g} is empty (need 0 < LO < HI, GeV)")
    if not lo > 0:
        raise CaloquantError(f"{flag} {lo:g}:{hi:g}: LO must be > 0 GeV (need 0 < LO < HI)")
    if hi > MAX_ENERGY_GEV:
        raise CaloquantError(
            f"{flag} {lo:g}:{hi:g}: HI must be at most {MAX_ENERGY_GEV:,.0f} GeV (10 TeV)"
        )
    return lo, hi
