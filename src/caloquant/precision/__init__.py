"""Reduced precision: backends (OpenVINO+NNCF, ONNX Runtime, PyTorch/torchao), the
physics-aware precision tuner, and deployable artifacts."""

from caloquant.precision.api import (
    ArtifactGenerator,
    QuantizeResult,
    calibration_latents,
    is_artifact,
    load_artifact,
    quantize,
    read_manifest,
)
from caloquant.precision.backends import Backend, Capabilities, EngineModel, capabilities, load_model, make_backend, prime_backend
from caloquant.precision.config import (
    BACKENDS,
    CALIBRATIONS,
    PRECISIONS,
    TOLERANCE_PRESETS,
    QATConfig,
    QuantizeConfig,
    Tolerance,
    check_supported,
)
from caloquant.precision.backends.torch_backend import weight_layers
from caloquant.precision.evaluation import EvalSet
from caloquant.precision.rewrite import fuse_upsample_conv

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
    "QATConfig",
    "QuantizeConfig",
    "QuantizeResult",
    "Tolerance",
    "calibration_latents",
    "capabilities",
    "check_supported",
    "fuse_upsample_conv",
    "is_artifact",
    "load_artifact",
    "load_model",
    "make_backend",
    "prime_backend",
    "quantize",
    "read_manifest",
    "weight_layers",
]
