"""caloquant: reduced-precision calorimeter-shower GANs that stay physically right.

    import caloquant as cq
    model = cq.load()                          # the embedded CERN 3DGAN
    q = cq.quantize(model, precision="int8")   # physics-aware int8, in memory
    showers, energies = q.sample(1000, energy_range=(100, 500), seed=1)

See :mod:`caloquant.api`. The stages (data, models, physics, precision, bench, report) are
subpackages with their own public APIs.
"""

from __future__ import annotations

from typing import Any

from caloquant.errors import CaloquantError
from caloquant.version import __version__

_API = ("Model", "Report", "load", "models", "quantize", "validate")
# the later stages join the namespace with their own public entry points; benchmark and training
# are the subpackages themselves (`cq.bench.run_bench`, `cq.train.train`): once imported, a
# subpackage is an attribute of caloquant, so a function of the same name would be shadowed
_STAGES = {"simulate": "caloquant.sim", "generate": "caloquant.distributed"}
_PACKAGES = ("bench", "train")
__all__ = ["CaloquantError", "__version__", *_API, *_STAGES, *_PACKAGES]


def __getattr__(name: str) -> Any:
    # imported on first use: `import caloquant.errors` (the CLI's first import) stays light
    if name in _API:
        from caloquant import api

        return getattr(api, name)
    if name in _STAGES:
        import importlib

        return getattr(importlib.import_module(_STAGES[name]), name)
    if name in _PACKAGES:
        import importlib

        return importlib.import_module(f"caloquant.{name}")
    raise AttributeError(f"module 'caloquant' has no attribute {name!r}")
