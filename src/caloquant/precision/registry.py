"""The inference engines caloquant can use, declared without importing any of them: where
each backend lives, what it offers (:class:`Capabilities`) and why a precision it does not offer
is missing. Options are checked against this before anything heavy loads (the command line
reads it at start-up); the backends themselves (:mod:`caloquant.precision.backends`) state
their capabilities from here, so each is written once."""

from __future__ import annotations

from dataclasses import dataclass, field

from caloquant.errors import CaloquantError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers: ``precisions`` it builds, int8 range ``calibrations``,
    ``float_remainders``: reduced precisions the float part of an int8 model may run at, and
    ``accuracy_control``: the name of the engine's own accuracy-aware int8 search (for the head
    to head; empty where there is none); ``qat``: the backend describes its int8 scheme as a
    :class:`FakeQuant` plan, so quantization-aware fine-tuning can train against it;
    ``bias_corrections``: the engine's post-quantization bias corrections (first = default);
    ``smooth_quant``: the engine's own SmoothQuant for convolutions can be asked per int8 model
    (``int8_model(..., smooth_quant=alpha)``; a comparison for caloquant's exact equalization);
    ``per_unit_calibration``: ``int8_model``'s calibration may name a range estimator per unit
    (``"minmax;conv2.conv=percentile"``, :func:`caloquant.precision.config.per_unit_calibration`);
    ``float_split``: the float part can run at a reduced precision up to a unit and in fp32 from
    there (``f32_from`` of ``float_model`` and ``int8_model``; cut points from ``split_points``),
    for engines without a per-layer precision switch."""

    precisions: tuple[str, ...]
    calibrations: tuple[str, ...]
    float_remainders: tuple[str, ...] = ()
    accuracy_control: str = ""
    qat: bool = False
    bias_corrections: tuple[str, ...] = ()
    smooth_quant: bool = False
    per_unit_calibration: bool = False
    float_split: bool = False


@dataclass(frozen=True)
class BackendEntry:
    """A backend's module, its backend and engine-model classes (imported on first use: each
    engine is heavy), its capabilities, and for each precision it does not build, why."""

    module: str
    backend_class: str
    model_class: str
    capabilities: Capabilities
    missing: dict[str, str] = field(default_factory=dict)


REGISTRY: dict[str, BackendEntry] = {
    "openvino": BackendEntry(
        "caloquant.precision.backends.openvino",
        "OpenVINOBackend",
        "OpenVINOModel",
        Capabilities(
            precisions=("fp32", "bf16", "fp16", "int8"),
            calibrations=(
                "minmax",
                "percentile",
                "histogram",
                "minmax-asym",
                "percentile-asym",
                "histogram-asym",
            ),
            float_remainders=("bf16", "fp16"),
            accuracy_control="NNCF quantize_with_accuracy_control",
            qat=True,
            bias_corrections=("fast", "full", "none"),
            smooth_quant=True,
            per_unit_calibration=True,
            float_split=True,
        ),
    ),
    "onnxruntime": BackendEntry(
        "caloquant.precision.backends.onnxruntime_backend",
        "ONNXRuntimeBackend",
        "ORTModel",
        Capabilities(
            precisions=("fp32", "fp16", "int8"), calibrations=("minmax", "percentile", "histogram")
        ),
        missing={
            "bf16": "ONNX Runtime's CPU execution provider has no bfloat16 convolution kernels; "
            "use --backend openvino or torch for bf16"
        },
    ),
    "torch": BackendEntry(
        "caloquant.precision.backends.torch_backend",
        "TorchBackend",
        "TorchModel",
        Capabilities(precisions=("fp32", "bf16", "int8"), calibrations=("minmax",)),
        missing={
            "fp16": "PyTorch CPU float16 convolutions are reference (slow) kernels with no "
            "speed-up; use --backend openvino (f16 hint) or onnxruntime for fp16"
        },
    ),
}
BACKENDS: tuple[str, ...] = tuple(REGISTRY)


def check_supported(backend: str, precision: str) -> None:
    """A one-line error for an unknown backend or precision, or a precision the backend does not
    build (with the reason and what to use instead)."""
    if backend not in REGISTRY:
        raise CaloquantError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise CaloquantError(
            f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})"
        )
    entry = REGISTRY[backend]
    if precision not in entry.capabilities.precisions:
        reason = entry.missing.get(
            precision, f"{backend} builds {', '.join(entry.capabilities.precisions)}"
        )
        raise CaloquantError(f"{precision} on {backend} is not supported: {reason}")
