"""The public names of ``caloquant.sim``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .engines import ENGINES as ENGINES, SimConfig as SimConfig, make_engine as make_engine
from .geant4 import (
    COMPTON_MODELS as COMPTON_MODELS,
    CONVERSION_MODELS as CONVERSION_MODELS,
    MSC_MODELS as MSC_MODELS,
    PARTICLES as PARTICLES,
    PHYSICS_LISTS as PHYSICS_LISTS,
    Gun as Gun,
    Physics as Physics,
)
from .geometry import (
    Geometry as Geometry,
    Section as Section,
    effective_medium as effective_medium,
    load_geometry as load_geometry,
    parse_geometry as parse_geometry,
)
from .helper import (
    build_helper as build_helper,
    geant4_version as geant4_version,
    helper_status as helper_status,
)
from .reference import (
    default_data_dir as default_data_dir,
    load_packaged_reference as load_packaged_reference,
    produce_set as produce_set,
    read_reference_set as read_reference_set,
    reference_set as reference_set,
)
from .run import (
    CELL_CUT_GEV as CELL_CUT_GEV,
    MAX_ENERGY_GEV as MAX_ENERGY_GEV,
    SUM_NAMES as SUM_NAMES,
    draw_energies as draw_energies,
    simulate as simulate,
)
from .systematics import systematic_band as systematic_band
from .timing import flat_average as flat_average, time_engine as time_engine
