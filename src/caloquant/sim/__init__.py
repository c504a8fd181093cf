"""Shower simulation for the W/Si calorimeter: a Geant4 engine (data-free analytic EM physics,
compiled scoring helper) and a fast GFlash engine fitted to it.

Public API used by the CLI and other stages:

* :func:`simulate` / :class:`SimConfig` / :func:`draw_energies` - write a shower file;
* :func:`load_geometry` / :class:`Geometry` - the declarative calorimeter description;
* :class:`Physics`, :class:`Gun` - physics list, production cut, model choices, particle gun;
* :func:`helper_status`, :func:`build_helper` - the compiled Geant4 helper and its cache;
* :func:`time_engine`, :func:`flat_average` - time-boxed seconds per shower per energy (bench);
* :func:`reference_set`, :func:`load_packaged_reference`, :func:`produce_set` - Geant4 reference
  sets; :func:`read_reference_set` - one set's folder as arrays; :func:`default_data_dir` -
  where they are cached ($CALOQUANT_DATA or the user cache);
* :func:`systematic_band` - the systematic band of the data-free physics.
"""

from __future__ import annotations

import lazy_loader

from caloquant.sim.engines import (
    ENGINES as ENGINES,
    SimConfig as SimConfig,
    make_engine as make_engine,
)
from caloquant.sim.geant4 import (
    COMPTON_MODELS as COMPTON_MODELS,
    CONVERSION_MODELS as CONVERSION_MODELS,
    MSC_MODELS as MSC_MODELS,
    PARTICLES as PARTICLES,
    PHYSICS_LISTS as PHYSICS_LISTS,
    Gun as Gun,
    Physics as Physics,
)

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
