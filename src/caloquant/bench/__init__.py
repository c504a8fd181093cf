"""Inference benchmarks: showers/s over threads x streams x batch per backend and precision,
memory, per-op profiles, roofline against ceilings measured with each model's own engine and
precision, and the speed-up against Monte Carlo, also per core (`caloquant bench`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.bench.config import BenchConfig, parse_int_list

if TYPE_CHECKING:
    from caloquant.bench.ceilings import ceiling_for, measure_ceilings
    from caloquant.bench.core import RESULT_KEYS, run_bench
    from caloquant.bench.machine import machine_info
    from caloquant.bench.montecarlo import GEANT4_LITERATURE
    from caloquant.bench.profile import CATEGORIES
    from caloquant.bench.summary import compare_runs
    from caloquant.bench.variants import ModelRequest, parse_model_arg

# imported on first use (lazy_loader): submodule -> its public names; the configuration
# objects above are imported with the package (the command line reads its defaults there)
_LAZY = {
    "ceilings": ["ceiling_for", "measure_ceilings"],
    "core": ["RESULT_KEYS", "run_bench"],
    "machine": ["machine_info"],
    "montecarlo": ["GEANT4_LITERATURE"],
    "profile": ["CATEGORIES"],
    "summary": ["compare_runs"],
    "variants": ["ModelRequest", "parse_model_arg"],
}
__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "CATEGORIES",
    "GEANT4_LITERATURE",
    "RESULT_KEYS",
    "BenchConfig",
    "ModelRequest",
    "ceiling_for",
    "compare_runs",
    "machine_info",
    "measure_ceilings",
    "parse_int_list",
    "parse_model_arg",
    "run_bench",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
