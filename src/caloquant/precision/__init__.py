"""Reduced precision: backends (OpenVINO+NNCF, ONNX Runtime, PyTorch/torchao), the
physics-aware precision tuner, and deployable artifacts.

Only the configuration objects are imported with the package (the command line reads its
option defaults from them); everything else (torch, the engines) is imported on first use.
"""

from __future__ import annotations

import lazy_loader

from caloquant.precision.config import (
    CALIBRATIONS as CALIBRATIONS,
    TOLERANCE_PRESETS as TOLERANCE_PRESETS,
    QATConfig as QATConfig,
    QuantizeConfig as QuantizeConfig,
    Tolerance as Tolerance,
)
from caloquant.precision.registry import (
    BACKENDS as BACKENDS,
    PRECISIONS as PRECISIONS,
    check_supported as check_supported,
)

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
