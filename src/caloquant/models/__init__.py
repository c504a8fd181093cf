"""Generator and discriminator models, checkpoints, Keras import and sampling."""

from caloquant.models.checkpoint import (
    ARCHITECTURES,
    SPEC_3DGAN,
    ArchInfo,
    Checkpoint,
    ModelSpec,
    build,
    condition_latent,
    load_checkpoint,
    register_architecture,
    save_checkpoint,
    spec_conv2d,
)
from caloquant.models.conv2d import Conv2DDiscriminator, Conv2DGenerator
from caloquant.models.gan3d import Discriminator3DGAN, Generator3DGAN
from caloquant.models.keras import import_keras_3dgan
from caloquant.models.registry import BUILTIN, DEFAULT_MODEL, BuiltinModel, builtin_models, resolve_model
from caloquant.models.sampling import (
    NoiseStream,
    ShowerGenerator,
    TorchGenerator,
    check_energy_range,
    energies_for,
    generate,
    generate_batches,
)

__all__ = [
    "ARCHITECTURES",
    "BUILTIN",
    "DEFAULT_MODEL",
    "BuiltinModel",
    "SPEC_3DGAN",
    "ArchInfo",
    "Checkpoint",
    "Conv2DDiscriminator",
    "Conv2DGenerator",
    "Discriminator3DGAN",
    "Generator3DGAN",
    "ModelSpec",
    "NoiseStream",
    "ShowerGenerator",
    "TorchGenerator",
    "build",
    "builtin_models",
    "check_energy_range",
    "condition_latent",
    "energies_for",
    "generate",
    "generate_batches",
    "import_keras_3dgan",
    "load_checkpoint",
    "register_architecture",
    "resolve_model",
    "save_checkpoint",
    "spec_conv2d",
]
