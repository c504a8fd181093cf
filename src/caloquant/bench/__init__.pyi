"""The public names of ``caloquant.bench``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .ceilings import ceiling_for as ceiling_for, measure_ceilings as measure_ceilings
from .config import BenchConfig as BenchConfig, parse_int_list as parse_int_list
from .core import RESULT_KEYS as RESULT_KEYS, run_bench as run_bench
from .machine import machine_info as machine_info
from .montecarlo import GEANT4_LITERATURE as GEANT4_LITERATURE
from .profile import CATEGORIES as CATEGORIES
from .summary import compare_runs as compare_runs
from .variants import ModelRequest as ModelRequest, parse_model_arg as parse_model_arg
