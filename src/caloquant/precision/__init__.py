"""Reduced precision: backends (OpenVINO+NNCF, ONNX Runtime, PyTorch/torchao), the
physics-aware precision tuner, and deployable artifacts.

Only the configuration objects are imported with the package (the command line reads its
option defaults from them); everything else (torch, the engines) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.precision.config import (
    CALIBRATIONS,
    TOLERANCE_PRESETS,
    QATConfig,
    QuantizeConfig,
    Tolerance,
)
from caloquant.precision.registry import BACKENDS, PRECISIONS, check_supported

if TYPE_CHECKING:
    from caloquant.precision.api import quantize
    from caloquant.precision.artifact import (
        ArtifactGenerator,
        QuantizeResult,
        check_artifact_dir,
        load_artifact,
        load_generator,
    )
    from caloquant.precision.backends import (
        Backend,
        Capabilities,
        EngineModel,
        capabilities,
        load_model,
        make_backend,
        prime_backend,
    )
    from caloquant.precision.backends.torch_backend import weight_layers
    from caloquant.precision.evaluation import EvalSet
    from caloquant.precision.manifest import Manifest, is_artifact, read_manifest
    from caloquant.precision.pipeline import calibration_latents
    from caloquant.precision.rewrite import fuse_upsample_conv

# imported on first use (lazy_loader): submodule -> its public names
_LAZY = {
    "api": ["quantize"],
    "artifact": [
        "ArtifactGenerator",
        "QuantizeResult",
        "check_artifact_dir",
        "load_artifact",
        "load_generator",
    ],
    "backends": [
        "Backend",
        "Capabilities",
        "EngineModel",
        "capabilities",
        "load_model",
        "make_backend",
        "prime_backend",
    ],
    "backends.torch_backend": ["weight_layers"],
    "evaluation": ["EvalSet"],
    "manifest": ["Manifest", "is_artifact", "read_manifest"],
    "pipeline": ["calibration_latents"],
    "rewrite": ["fuse_upsample_conv"],
}


__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "BACKENDS",
    "CALIBRATIONS",
    "PRECISIONS",
    "TOLERANCE_PRESETS",
    "ArtifactGenerator",
    "Backend",
    "Capabilities",
    "EngineModel",
    "EvalSet",
    "Manifest",
    "QATConfig",
    "QuantizeConfig",
    "QuantizeResult",
    "Tolerance",
    "calibration_latents",
    "capabilities",
    "check_artifact_dir",
    "check_supported",
    "fuse_upsample_conv",
    "is_artifact",
    "load_artifact",
    "load_generator",
    "load_model",
    "make_backend",
    "prime_backend",
    "quantize",
    "read_manifest",
    "weight_layers",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
