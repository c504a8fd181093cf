"""Per-epoch physics validation and best-epoch selection.

The generator of each epoch, converted to a GeV checkpoint, draws one shower per held-out
reference shower (same incident energies, a fixed noise seed, so epochs differ only by their
weights), and the authors' optimisation metric (physics.md 2.6, ``TestingObjective.metric`` of
svalleco/3Dgan: relative errors of the first two moments along each axis, of the mean shower
profiles and of the sampling fraction, per energy bin) compares the two samples. The selected
epoch is the one with the lowest metric; ties keep the earlier epoch.

The metric looks at windows Ep +- 5 GeV around a few energy points; the authors' are 110, 150
and 190 GeV. Cells below 1e-6 GeV are set to 0 in both samples first, as the authors do with
their Geant4 data (and as training does). The authors' points are used when the held-out set
has at least ``MIN_PER_POINT`` showers in each window; a set of fixed-energy showers (at most
12 distinct energies) uses its own energies; otherwise three points at the 1/6, 1/2 and 5/6
quantiles of its energies. Only held-out showers inside the windows are loaded and generated
(the others would not enter the metric). A metric that is not a number (e.g. a generator that
puts no energy where the reference has some) counts as infinitely bad.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.models import ModelSpec, TorchGenerator, sample_showers

VALIDATION_NOISE_SEED = 12345  # the same latent vectors every epoch
MIN_PER_POINT = 20
# the authors' points and window (as caloquant.physics.AUTHORS_POINTS_GEV / _HALF_WIDTH_GEV;
# repeated here because importing caloquant.physics costs every process 1.3 s of scikit-learn)
AUTHORS_POINTS_GEV = (110.0, 150.0, 190.0)
HALF_WIDTH_GEV = 5.0


def in_windows(energies: np.ndarray, points: list[float]) -> np.ndarray:
    """Showers inside one of the open windows p - 5 < Ep < p + 5 GeV."""
    e = np.asarray(energies)
    return np.any([(e > p - HALF_WIDTH_GEV) & (e < p + HALF_WIDTH_GEV) for p in points], axis=0)


def metric_points(energies: np.ndarray) -> list[float]:
    """The energy points at which the held-out set is compared (see the module docstring)."""
    e = np.asarray(energies, dtype=np.float64)
    if e.size == 0:
        raise CaloquantError("the validation set is empty")
    if all(in_windows(e, [p]).sum() >= MIN_PER_POINT for p in AUTHORS_POINTS_GEV):
        return list(AUTHORS_POINTS_GEV)
    distinct = np.unique(e.round(3))
    if distinct.size <= 12:
        points = [float(x) for x in distinct]
    else:
        points = [float(round(q)) for q in np.quantile(e, [1 / 6, 1 / 2, 5 / 6])]
    for p in points:
        k = int(in_windows(e, [p]).sum())
        if k < 2:
            raise CaloquantError(
                f"the validation set has {k} shower(s) within {HALF_WIDTH_GEV:g} GeV of {p:g} GeV, "
                "the optimisation metric needs at least 2; give a larger validation set"
            )
    return points


def epoch_metric(
    ref: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray], points: list[float]
) -> dict[str, Any]:
    """The authors' optimisation metric of ``cand`` against ``ref``: {"metric": total, parts...}."""
    from caloquant.physics import (
        AUTHORS_ZERO_THRESHOLD_GEV,
        optimisation_metric,
    )  # only rank 0, at epoch ends

    res = optimisation_metric(
        ref,
        cand,
        points=points,
        half_width=HALF_WIDTH_GEV,
        zero_threshold=AUTHORS_ZERO_THRESHOLD_GEV,
    )
    total = float(res["total"])
    return {
        "metric": total if np.isfinite(total) else float("inf"),
        **{k: res[k] for k in ("position", "profile", "sampling_fraction")},
        "points_gev": points,
    }


def validate_epoch(
    spec: ModelSpec,
    generator: nn.Module,
    ref: tuple[np.ndarray, np.ndarray],
    points: list[float],
    batch: int = 128,
) -> dict[str, Any]:
    """Generate the held-out energies with a GeV generator (eval mode) and score it."""
    showers, energies = ref
    fake = sample_showers(
        TorchGenerator(spec, generator.eval()), energies, seed=VALIDATION_NOISE_SEED, batch=batch
    )
    if not np.all(np.isfinite(fake)):
        return {"metric": float("inf"), "note": "generated showers contain NaN or Inf"}
    record = epoch_metric((showers, energies), (fake, energies), points)
    # mean ECAL of the generated sample over the reference's: the energy scale at a glance
    record["ecal_ratio"] = float(
        fake.sum(dtype=np.float64) / max(showers.sum(dtype=np.float64), 1e-12)
    )
    return record
