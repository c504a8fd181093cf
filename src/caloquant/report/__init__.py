"""Reports: terminal tables and plots drawn from the stages' JSON-ready results."""

from caloquant.report.bench import (
    bench_machine_line,
    bench_mc_table,
    bench_models_table,
    bench_profile_table,
    bench_results_table,
)
from caloquant.report.bench_figures import bench_plots
from caloquant.report.plots import validation_plots
from caloquant.report.tables import (
    global_table,
    head_to_head_table,
    moments_table,
    optimisation_table,
    quantize_summary,
    resolution_table,
    validation_table,
    validation_tables,
)

__all__ = [
    "bench_machine_line",
    "bench_mc_table",
    "bench_models_table",
    "bench_plots",
    "bench_profile_table",
    "bench_results_table",
    "global_table",
    "head_to_head_table",
    "moments_table",
    "optimisation_table",
    "quantize_summary",
    "resolution_table",
    "validation_plots",
    "validation_table",
    "validation_tables",
]
