"""Shower data: the 3DGAN and CaloChallenge HDF5 layouts, chunked reads, atomic writes,
sharded datasets.

Modules, each importing only those before it: ``checks`` (shower contents), ``formats`` (file
layouts and the file reader), ``writers``, ``sharded`` (sharded datasets, read through file
readers), ``source`` (:func:`open_showers`: a file or a sharded dataset, one interface);
``energies`` (incident energies of a run) stands alone.
"""

from __future__ import annotations

import lazy_loader

from caloquant.data.energies import (
    Energies as Energies,
    SampleConfig as SampleConfig,
    energies_for as energies_for,
)

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
