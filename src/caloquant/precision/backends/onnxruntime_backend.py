"""ONNX Runtime: fp32; fp16 (weights and activations float16, float32 I/O); int8 as static
QDQ (signed int8, per-channel weights) with a per-node exclusion list. The .onnx file is what
HEP C++ frameworks load (e.g. through ONNX Runtime in CMSSW or Gaudi)."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.precision.backends import Runner, in_scope, no_split, quantized_scope
from caloquant.precision.backends.opprofile import categorize, summary, timed_calls
from caloquant.precision.registry import REGISTRY

QUANTIZABLE = {"Conv", "Gemm", "MatMul", "ConvTranspose"}


def _session(model_bytes: bytes, threads: int | None, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class ORTModel:
    def __init__(
        self,
        model_bytes: bytes,
        threads: int | None,
        layer_precisions: dict[str, str],
        precision: str,
    ) -> None:
        self.model_bytes, self.threads, self.layer_precisions = (
            model_bytes,
            threads,
            layer_precisions,
        )
        self.precision = precision
        self._sess = _session(model_bytes, threads)
        self._in = self._sess.get_inputs()[0].name

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._in: np.ascontiguousarray(latent, dtype=np.float32)})[0]

    def options(self) -> dict[str, Any]:
        return {}

    def executed_precision(self) -> str:
        """ONNX Runtime runs the types written in the graph (float16 nodes for fp16, QDQ int8)."""
        if "int8" in self.layer_precisions.values():
            return "int8+fp32"
        return self.precision

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One session per stream, ``intra_op_num_threads = threads``."""

        def runner(sess: Any) -> Runner:
            name = sess.get_inputs()[0].name
            return lambda x: sess.run(None, {name: x})[0]

        return [runner(_session(self.model_bytes, threads)) for _ in range(streams)], {
            "streams": streams,
            "threads_total": threads * streams,
        }

    def profile(
        self, latent: np.ndarray, threads: int, min_calls: int, budget_s: float
    ) -> dict[str, Any]:
        """Session profiling: node kernel times, the first run (allocation, kernel selection)
        left out."""
        with tempfile.TemporaryDirectory() as tmp:
            sess = _session(self.model_bytes, threads, profile_prefix=str(Path(tmp) / "ort"))
            name = sess.get_inputs()[0].name
            sess.run(None, {name: latent})  # warm-up, excluded below
            n, wall = timed_calls(lambda a: sess.run(None, {name: a}), latent, min_calls, budget_s)
            events = json.loads(Path(sess.end_profiling()).read_text())
        runs = sorted(
            (e["ts"], e["ts"] + e["dur"])
            for e in events
            if e.get("cat") == "Session" and e.get("name") == "model_run"
        )
        first_end = runs[0][1] if runs else -1
        times: dict[str, float] = defaultdict(float)
        per_op: dict[str, float] = defaultdict(float)
        for e in events:
            if (
                e.get("cat") != "Node"
                or not str(e.get("name", "")).endswith("_kernel_time")
                or e["ts"] <= first_end
            ):
                continue
            op = str(e.get("args", {}).get("op_name", "?"))
            ms = e["dur"] / 1000.0
            cat = (
                "layout" if op in ("ReorderInput", "ReorderOutput") else (categorize(op) or "other")
            )
            times[cat] += ms
            per_op[op] += ms
        return summary(times, per_op, wall, n, tool="ONNX Runtime session profiling")

    def save(self, out_dir: Path) -> list[str]:
        (out_dir / "model.onnx").write_bytes(self.model_bytes)
        return ["model.onnx"]

    @classmethod
    def load(cls, out_dir: Path, manifest: dict[str, Any], threads: int | None) -> ORTModel:
        p = out_dir / "model.onnx"
        if not p.exists():
            raise CaloquantError(f"{out_dir}: ONNX artifact lacks model.onnx")
        try:
            return cls(
                p.read_bytes(), threads, manifest.get("layer_precisions", {}), manifest["precision"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CaloquantError(
                f"{p}: unreadable ONNX model ({str(exc).splitlines()[0][:120]})"
            ) from None


class _Reader:
    """Calibration data for onnxruntime.quantization."""

    def __init__(self, name: str, calib: np.ndarray) -> None:
        self._it = iter([{name: calib[i : i + 16]} for i in range(0, len(calib), 16)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _name_scopes(node: Any) -> list[str]:
    """The non-empty torch name scopes of a dynamo-exported node, outermost first: the module
    paths, then the op ('shape', 'shape.dense', 'linear'); empty where the node has none."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            return [s for s in (x.strip(" '\"") for x in p.value.strip("[]").split(",")) if s]
    return []


def _node_label(node: Any) -> str:
    """The torch module a dynamo-exported node came from ('conv2'), else the node name."""
    named = _name_scopes(node)
    return named[-1].split(".")[-1] if len(named) > 1 else node.name


def _module_path(node: Any) -> str:
    """The dotted path of the torch module a dynamo-exported node came from ('' for the root)."""
    named = _name_scopes(node)
    return named[-2] if len(named) > 1 else ""


class ONNXRuntimeBackend:
    name = "onnxruntime"
    capabilities = REGISTRY["onnxruntime"].capabilities

    @staticmethod
    def prime() -> None:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

    def __init__(self, module: nn.Module, latent_dim: int, threads: int | None) -> None:
        import onnx

        self.threads, self.scope = threads, quantized_scope(module)
        example = (torch.randn(2, latent_dim),)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                prog = torch.onnx.export(
                    module.eval(),
                    example,
                    dynamo=True,
                    input_names=["latent"],
                    output_names=["showers"],
                    dynamic_shapes=({0: torch.export.Dim("n")},),
                    verbose=False,
                )
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(
                f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None
        self.fp_proto = prog.model_proto
        onnx.checker.check_model(self.fp_proto)
        self.labels = {n.name: _node_label(n) for n in self.fp_proto.graph.node}

    def float_model(self, precision: str, f32_from: str | None = None) -> ORTModel:
        no_split(f32_from)
        proto = self.fp_proto
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(
                self.fp_proto, keep_io_types=True, disable_shape_infer=False
            )
        lp = {
            self.labels.get(n.name, n.name): precision
            for n in self.fp_proto.graph.node
            if n.op_type in QUANTIZABLE
        }
        return ORTModel(proto.SerializeToString(), self.threads, lp, precision)

    def unit_label(self, unit: str) -> str:
        return self.labels.get(unit, unit)

    def units(self, calib: np.ndarray) -> list[str]:
        return [
            n.name
            for n in self.fp_proto.graph.node
            if n.op_type in QUANTIZABLE and in_scope(_module_path(n), self.scope)
        ]

    def int8_model(
        self,
        calib: np.ndarray,
        int8_units: Sequence[str] | None,
        calibration: str,
        float_precision: str = "fp32",
        bias_correction: str | None = None,
        smooth_quant: float | None = None,
        f32_from: str | None = None,
    ) -> ORTModel:
        no_split(f32_from)
        if smooth_quant is not None:
            raise CaloquantError(
                "ONNX Runtime has no SmoothQuant for convolutions (capabilities.smooth_quant)"
            )
        if ";" in calibration:
            raise CaloquantError(
                f"ONNX Runtime takes one range estimator for all units, not '{calibration}'"
            )
        if calibration not in self.capabilities.calibrations:
            raise CaloquantError(
                "ONNX Runtime int8 here has symmetric activations only: "
                f"calibration '{calibration}' "
                f"is not one of {', '.join(self.capabilities.calibrations)}"
            )
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        if float_precision != "fp32":
            raise CaloquantError(
                f"ONNX Runtime int8 models keep their float part in fp32, not {float_precision}"
            )
        units = self.units(calib)
        chosen = units if int8_units is None else [u for u in units if u in set(int8_units)]
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "histogram": CalibrationMethod.Entropy,
        }[calibration]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(self.fp_proto, src)
            try:
                quantize_static(
                    str(src),
                    str(dst),
                    _Reader("latent", calib),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    nodes_to_quantize=chosen,
                    op_types_to_quantize=sorted(QUANTIZABLE),
                    extra_options={
                        "ActivationSymmetric": True,
                        "WeightSymmetric": True,
                        "CalibMovingAverage": False,
                    },
                )
            except Exception as exc:  # noqa: BLE001
                raise CaloquantError(
                    f"ONNX Runtime quantization failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}"
                ) from None
            data = dst.read_bytes()
        lp = {self.labels.get(u, u): ("int8" if u in chosen else "fp32") for u in units}
        return ORTModel(data, self.threads, lp, "int8")
