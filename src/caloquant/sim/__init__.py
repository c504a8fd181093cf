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

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.sim.engines import ENGINES, SimConfig, make_engine
from caloquant.sim.geant4 import (
    COMPTON_MODELS,
    CONVERSION_MODELS,
    MSC_MODELS,
    PARTICLES,
    PHYSICS_LISTS,
    Gun,
    Physics,
)
from caloquant.sim.reference import SETS as REFERENCE_SETS

if TYPE_CHECKING:
    from caloquant.sim.geometry import (
        Geometry,
        Section,
        effective_medium,
        load_geometry,
        parse_geometry,
    )
    from caloquant.sim.helper import build_helper, geant4_version, helper_status
    from caloquant.sim.reference import (
        default_data_dir,
        load_packaged_reference,
        produce_set,
        read_reference_set,
        reference_set,
    )
    from caloquant.sim.run import CELL_CUT_GEV, MAX_ENERGY_GEV, SUM_NAMES, draw_energies, simulate
    from caloquant.sim.systematics import systematic_band
    from caloquant.sim.timing import flat_average, time_engine

# imported on first use (lazy_loader): submodule -> its public names; the configuration
# objects above are imported with the package (the command line reads its defaults there)
_LAZY = {
    "geometry": ["Geometry", "Section", "effective_medium", "load_geometry", "parse_geometry"],
    "helper": ["build_helper", "geant4_version", "helper_status"],
    "reference": [
        "default_data_dir",
        "load_packaged_reference",
        "produce_set",
        "read_reference_set",
        "reference_set",
    ],
    "run": ["CELL_CUT_GEV", "MAX_ENERGY_GEV", "SUM_NAMES", "draw_energies", "simulate"],
    "systematics": ["systematic_band"],
    "timing": ["flat_average", "time_engine"],
}
__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "REFERENCE_SETS",
    "geant4_version",
    "make_engine",
    "CELL_CUT_GEV",
    "COMPTON_MODELS",
    "CONVERSION_MODELS",
    "ENGINES",
    "MAX_ENERGY_GEV",
    "MSC_MODELS",
    "PARTICLES",
    "PHYSICS_LISTS",
    "SUM_NAMES",
    "Geometry",
    "Gun",
    "Physics",
    "Section",
    "SimConfig",
    "build_helper",
    "default_data_dir",
    "draw_energies",
    "effective_medium",
    "flat_average",
    "helper_status",
    "load_geometry",
    "load_packaged_reference",
    "parse_geometry",
    "produce_set",
    "read_reference_set",
    "reference_set",
    "simulate",
    "systematic_band",
    "time_engine",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
