"""Reduced precision: backends (OpenVINO+NNCF, ONNX Runtime, PyTorch/torchao), the
physics-aware precision tuner, and deployable artifacts."""

from caloquant.precision.api import ArtifactGenerator, QuantizeResult, calibration_latents, is_artifact, load_artifact, quantize
from caloquant.precision.config import (
    BACKENDS,
    CALIBRATIONS,
    PRECISIONS,
    TOLERANCE_PRESETS,
    QuantizeConfig,
    Tolerance,
    check_supported,
)
from caloquant.precision.backends.torch_backend import weight_layers
from caloquant.precision.evaluation import EvalSet, throughput
from caloquant.precision.rewrite import fuse_upsample_conv

__all__ = [
    "BACKENDS",
    "CALIBRATIONS",
    "PRECISIONS",
    "TOLERANCE_PRESETS",
    "ArtifactGenerator",
    "EvalSet",
    "QuantizeConfig",
    "QuantizeResult",
    "Tolerance",
    "calibration_latents",
    "check_supported",
    "fuse_upsample_conv",
    "is_artifact",
    "load_artifact",
    "quantize",
    "throughput",
    "weight_layers",
]
