"""Inference engines behind one small interface.

A backend is built from a float torch generator and offers ``float_model(precision)``,
``units(calib)`` (the places where int8 can be switched on or off) and
``int8_model(calib, int8_units, calibration, float_precision)``. Each returns a runnable
model: ``model(latent) -> showers``, ``model.save(dir)``, ``model.layer_precisions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from caloquant.errors import CaloquantError


def make_backend(name: str, module: nn.Module, latent_dim: int, threads: int) -> Any:
    if name == "openvino":
        from caloquant.precision.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(module, latent_dim, threads)
    if name == "onnxruntime":
        from caloquant.precision.backends.onnxruntime_backend import ONNXRuntimeBackend

        return ONNXRuntimeBackend(module, latent_dim, threads)
    if name == "torch":
        from caloquant.precision.backends.torch_backend import TorchBackend

        return TorchBackend(module, latent_dim, threads)
    raise CaloquantError(f"unknown backend '{name}'")


def load_model(name: str, out_dir: Path, manifest: dict[str, Any], threads: int) -> Any:
    if name == "openvino":
        from caloquant.precision.backends.openvino_backend import OpenVINOModel

        return OpenVINOModel.load(out_dir, manifest, threads)
    if name == "onnxruntime":
        from caloquant.precision.backends.onnxruntime_backend import ORTModel

        return ORTModel.load(out_dir, manifest, threads)
    if name == "torch":
        from caloquant.precision.backends.torch_backend import TorchModel

        return TorchModel.load(out_dir, manifest, threads)
    raise CaloquantError(f"{out_dir}: manifest names unknown backend '{name}'")
