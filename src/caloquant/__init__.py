"""caloquant: reduced-precision calorimeter-shower GANs that stay physically right.

    import caloquant as cq
    model = cq.load()                          # the embedded CERN 3DGAN
    q = cq.quantize(model, precision="int8")   # physics-aware int8, in memory
    showers, energies = q.sample(1000, energy_range=(100, 500), seed=1)

See :mod:`caloquant.api`. The stages (data, models, physics, precision, bench, report) are
subpackages with their own public APIs.
"""

from __future__ import annotations

import lazy_loader

from caloquant.errors import CaloquantError
from caloquant.version import __version__

# imported on first use (lazy_loader): `import caloquant.errors` (the CLI's first import) stays
# light. The later stages join the namespace with their own public entry points; benchmark and
# training are the subpackages themselves (`cq.bench.run_bench`, `cq.train.train`): once
# imported, a subpackage is an attribute of caloquant, so a function of the same name would be
# shadowed
__getattr__ = lazy_loader.attach(
    __name__,
    submodules=["bench", "train"],
    submod_attrs={
        "api": ["Model", "Report", "load", "models", "quantize", "validate"],
        "sim": ["simulate"],
        "distributed": ["generate"],
    },
)[0]
__all__ = [
    "CaloquantError",
    "__version__",
    *("Model", "Report", "load", "models", "quantize", "validate"),
    *("bench", "generate", "simulate", "train"),
]
