"""Per-op time profile of one model, from its engine's own profiler, in six categories
(caloquant.precision.backends.opprofile): OpenVINO performance counters, ONNX Runtime session
profiling, torch.profiler. Shares add up to 100 %; ``coverage`` is the summed op time over
the wall time of the calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caloquant.bench.variants import Variant
from caloquant.precision.backends.opprofile import CATEGORIES, CATEGORY_HELP

__all__ = ["CATEGORIES", "CATEGORY_HELP", "profile_variant"]


def profile_variant(
    v: Variant, x: np.ndarray, threads: int, min_calls: int = 3, budget_s: float = 0.5
) -> dict[str, Any]:
    """Time shares per category for ``x`` (one batch) at ``threads`` threads, one stream."""
    return {
        "backend": v.backend,
        "batch": len(x),
        "threads": threads,
        **v.model.profile(x, threads, min_calls, budget_s),
    }
