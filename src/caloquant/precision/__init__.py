"""Reduced precision: backends (OpenVINO+NNCF, ONNX Runtime, PyTorch/torchao), the
physics-aware precision tuner, and deployable artifacts.

Only the configuration objects are imported with the package (the command line reads its
option defaults from them); everything else (torch, the engines) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_LAZY = {
    "quantize": "api",
    "ArtifactGenerator": "artifact",
    "QuantizeResult": "artifact",
    "check_artifact_dir": "artifact",
    "load_artifact": "artifact",
    "load_generator": "artifact",
    "Backend": "backends",
    "Capabilities": "backends",
    "EngineModel": "backends",
    "capabilities": "backends",
    "load_model": "backends",
    "make_backend": "backends",
    "prime_backend": "backends",
    "weight_layers": "backends.torch_backend",
    "EvalSet": "evaluation",
    "Manifest": "manifest",
    "is_artifact": "manifest",
    "read_manifest": "manifest",
    "calibration_latents": "pipeline",
    "fuse_upsample_conv": "rewrite",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"caloquant.precision.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'caloquant.precision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
