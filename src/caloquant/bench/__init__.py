"""Inference benchmarks: showers/s over threads x streams x batch per backend and precision,
memory, per-op profiles, roofline against ceilings measured with each model's own engine and
precision, and the speed-up against Monte Carlo, also per core (`caloquant bench`)."""

from __future__ import annotations

import lazy_loader

from caloquant.bench.config import BenchConfig as BenchConfig, parse_int_list as parse_int_list

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
