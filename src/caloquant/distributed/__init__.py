"""Mass production on Dask: sharded, resumable, fault-tolerant shower datasets.

``generate(out_dir, GenerateConfig(n, model=... | engine=..., energy_range=... |
energies=...))`` makes the dataset; ``caloquant.data.open_sharded`` (or ``open_showers``)
reads it back as one sample.

Only :class:`GenerateConfig` is imported with the package: the command line builds its
options from it, and the rest (Dask, HDF5) is imported on first use, like ``caloquant``'s
own stages.
"""

from __future__ import annotations

import lazy_loader

from caloquant.distributed.config import ENGINES as ENGINES, GenerateConfig as GenerateConfig

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
