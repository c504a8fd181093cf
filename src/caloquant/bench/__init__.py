"""Inference benchmarks: showers/s over threads x streams x batch per backend and precision,
memory, per-op profiles, roofline against ceilings measured with each model's own engine and
precision, and the speed-up against Monte Carlo, also per core (`caloquant bench`)."""

from caloquant.bench.ceilings import ceiling_for, measure_ceilings
from caloquant.bench.config import BenchConfig, parse_int_list
from caloquant.bench.core import RESULT_KEYS, run_bench
from caloquant.bench.machine import machine_info
from caloquant.bench.montecarlo import GEANT4_LITERATURE
from caloquant.bench.profile import CATEGORIES
from caloquant.bench.summary import compare_runs
from caloquant.bench.variants import ModelRequest, parse_model_arg

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
