"""Generator and discriminator models, checkpoints, Keras import and sampling."""

import sys
import types

from caloquant.data.energies import energies_for  # re-exported: drawing showers starts there
from caloquant.models.checkpoint import (
    ARCHITECTURES,
    SPEC_3DGAN,
    TWO_STAGE,
    ArchInfo,
    Checkpoint,
    ModelSpec,
    build,
    condition_latent,
    load_checkpoint,
    register_architecture,
    save_checkpoint,
    shape_spec,
    spec_conv2d,
    two_stage_spec,
    weights_digest,
)
from caloquant.models.conv2d import Conv2DDiscriminator, Conv2DGenerator
from caloquant.models.gan3d import Discriminator3DGAN, Generator3DGAN
from caloquant.models.keras import import_keras_3dgan
from caloquant.models.registry import (
    BUILTIN,
    DEFAULT_MODEL,
    BuiltinModel,
    ModelRef,
    builtin_listing,
    builtin_models,
    model_ref,
    resolve_model,
)
from caloquant.models.sampling import (
    NoiseStream,
    ShowerGenerator,
    TorchGenerator,
    check_energy_range,
    generate_batches,
    sample_showers,
)
from caloquant.models.two_stage import EnergyStage, TwoStageGenerator

__all__ = [
    "ARCHITECTURES",
    "BUILTIN",
    "DEFAULT_MODEL",
    "BuiltinModel",
    "ModelRef",
    "SPEC_3DGAN",
    "TWO_STAGE",
    "ArchInfo",
    "Checkpoint",
    "Conv2DDiscriminator",
    "Conv2DGenerator",
    "Discriminator3DGAN",
    "EnergyStage",
    "Generator3DGAN",
    "ModelSpec",
    "NoiseStream",
    "ShowerGenerator",
    "TorchGenerator",
    "TwoStageGenerator",
    "build",
    "builtin_listing",
    "builtin_models",
    "check_energy_range",
    "condition_latent",
    "energies_for",
    "generate_batches",
    "import_keras_3dgan",
    "load_checkpoint",
    "model_ref",
    "register_architecture",
    "resolve_model",
    "sample_showers",
    "save_checkpoint",
    "shape_spec",
    "spec_conv2d",
    "two_stage_spec",
    "weights_digest",
]


class _CallablePackage(types.ModuleType):
    """``cq.models()`` lists the built-in models also once this subpackage is imported: the
    import machinery then sets ``caloquant.models`` to the subpackage, which shadows the root
    package's lazy ``models`` function of the same name (README: ``cq.models()``)."""

    def __call__(self) -> list[dict[str, str]]:
        return builtin_listing()


sys.modules[__name__].__class__ = _CallablePackage
