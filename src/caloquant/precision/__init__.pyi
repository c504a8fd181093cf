"""The public names of ``caloquant.precision``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .api import quantize as quantize
from .artifact import (
    ArtifactGenerator as ArtifactGenerator,
    QuantizeResult as QuantizeResult,
    check_artifact_dir as check_artifact_dir,
    load_artifact as load_artifact,
    load_generator as load_generator,
)
from .backends import (
    Backend as Backend,
    Capabilities as Capabilities,
    EngineModel as EngineModel,
    capabilities as capabilities,
    load_model as load_model,
    make_backend as make_backend,
    prime_backend as prime_backend,
)
from .backends.torch_backend import weight_layers as weight_layers
from .config import (
    CALIBRATIONS as CALIBRATIONS,
    TOLERANCE_PRESETS as TOLERANCE_PRESETS,
    QATConfig as QATConfig,
    QuantizeConfig as QuantizeConfig,
    Tolerance as Tolerance,
)
from .evaluation import EvalSet as EvalSet
from .manifest import (
    Manifest as Manifest,
    is_artifact as is_artifact,
    read_manifest as read_manifest,
)
from .pipeline import calibration_latents as calibration_latents
from .registry import (
    BACKENDS as BACKENDS,
    PRECISIONS as PRECISIONS,
    check_supported as check_supported,
)
from .rewrite import fuse_upsample_conv as fuse_upsample_conv
