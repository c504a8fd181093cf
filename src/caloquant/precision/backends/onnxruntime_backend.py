"""ONNX Runtime: fp32; fp16 (weights and activations float16, float32 I/O); int8 as static
QDQ (signed int8, per-channel weights) with a per-node exclusion list. The .onnx file is what
HEP C++ frameworks load (e.g. through ONNX Runtime in CMSSW or Gaudi)."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError

QUANTIZABLE = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def _session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class ORTModel:
    def __init__(self, model_bytes: bytes, threads: int, layer_precisions: dict[str, str], precision: str) -> None:
        self.model_bytes, self.threads, self.layer_precisions = model_bytes, threads, layer_precisions
        self.precision = precision
        self._sess = _session(model_bytes, threads)
        self._in = self._sess.get_inputs()[0].name

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._in: np.ascontiguousarray(latent, dtype=np.float32)})[0]

    def save(self, out_dir: Path) -> list[str]:
        (out_dir / "model.onnx").write_bytes(self.model_bytes)
        return ["model.onnx"]

    @classmethod
    def load(cls, out_dir: Path, manifest: dict[str, Any], threads: int) -> ORTModel:
        p = out_dir / "model.onnx"
        if not p.exists():
            raise CaloquantError(f"{out_dir}: ONNX artifact lacks model.onnx")
        try:
            return cls(p.read_bytes(), threads, manifest.get("layer_precisions", {}), manifest["precision"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CaloquantError(f"{p}: unreadable ONNX model ({str(exc).splitlines()[0][:120]})") from None


class _Reader:
    """Calibration data for onnxruntime.quantization."""

    def __init__(self, name: str, calib: np.ndarray) -> None:
        self._it = iter([{name: calib[i : i + 16]} for i in range(0, len(calib), 16)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _node_label(node: Any) -> str:
    """The torch module a dynamo-exported node came from ('conv2'), else the node name."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            scopes = [s.strip(" '\"") for s in p.value.strip("[]").split(",")]
            named = [s for s in scopes if s]
            if len(named) > 1:
                return named[-1].split(".")[-1] if named[-1] else node.name
    return node.name


class ONNXRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, module: nn.Module, latent_dim: int, threads: int) -> None:
        import onnx

        self.threads = threads
        example = (torch.randn(2, latent_dim),)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                prog = torch.onnx.export(module.eval(), example, dynamo=True, input_names=["latent"], output_names=["showers"],
                                         dynamic_shapes=({0: torch.export.Dim("n")},), verbose=False)
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        self.fp_proto = prog.model_proto
        onnx.checker.check_model(self.fp_proto)
        self.labels = {n.name: _node_label(n) for n in self.fp_proto.graph.node}

    def float_model(self, precision: str) -> ORTModel:
        proto = self.fp_proto
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(self.fp_proto, keep_io_types=True, disable_shape_infer=False)
        lp = {self.labels.get(n.name, n.name): precision for n in self.fp_proto.graph.node if n.op_type in QUANTIZABLE}
        return ORTModel(proto.SerializeToString(), self.threads, lp, precision)

    def units(self, calib: np.ndarray) -> list[str]:
        return [n.name for n in self.fp_proto.graph.node if n.op_type in QUANTIZABLE]

    def int8_model(self, calib: np.ndarray, int8_units: list[str] | None, calibration: str, float_precision: str = "fp32",
                   bias_correction: str = "none") -> ORTModel:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        units = self.units(calib)
        chosen = units if int8_units is None else [u for u in units if u in set(int8_units)]
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "histogram": CalibrationMethod.Entropy}[calibration]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(self.fp_proto, src)
            try:
                quantize_static(
                    str(src), str(dst), _Reader("latent", calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                    nodes_to_quantize=chosen, op_types_to_quantize=sorted(QUANTIZABLE),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibMovingAverage": False},
                )
            except Exception as exc:  # noqa: BLE001
                raise CaloquantError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
            data = dst.read_bytes()
        lp = {self.labels.get(u, u): ("int8" if u in chosen else "fp32") for u in units}
        return ORTModel(data, self.threads, lp, "int8")
