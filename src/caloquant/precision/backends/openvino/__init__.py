"""OpenVINO + NNCF: fp32, bf16 and fp16 by inference-precision hint, int8 by NNCF post-training
quantization with a per-unit ignored scope (the float part runs at the chosen hint).

- :mod:`.graph`: editing the OpenVINO graph (the one walk, quantizers, cutting in two);
- :mod:`.compiled`: the engine model (:class:`OpenVINOModel`: parts, runners, I/O, precisions);
- :mod:`.nncf_quantize`: NNCF int8 (units, calibrations, SmoothQuant, accuracy control, the
  fake-quant plan for QAT);
- here: :class:`OpenVINOBackend`, the backend the registry makes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from caloquant.precision.backends import FakeQuant, in_scope, quantized_scope
from caloquant.precision.backends.openvino.compiled import HINTS, OpenVINOModel, float_parts
from caloquant.precision.backends.openvino.graph import (
    COMPUTE,
    compute_ops,
    fake_quantize_consumers,
    input_quantizers,
    module_path,
    short_name,
    split_at,
    split_points,
    walk,
)
from caloquant.precision.backends.openvino.nncf_quantize import NNCFQuantizer
from caloquant.precision.registry import REGISTRY

__all__ = [
    "OpenVINOBackend",
    "OpenVINOModel",
    "compute_ops",
    "fake_quantize_consumers",
    "input_quantizers",
    "short_name",
    "split_at",
    "split_points",
    "walk",
]


class OpenVINOBackend:
    name = "openvino"
    capabilities = REGISTRY["openvino"].capabilities

    @staticmethod
    def prime() -> None:
        import openvino as ov

        ov.Core().get_property("CPU", "FULL_DEVICE_NAME")

    def __init__(self, module: nn.Module, latent_dim: int, threads: int | None) -> None:
        import openvino as ov

        self.threads, self.scope = threads, quantized_scope(module)
        self._scoped: list[str] | None = None
        example = torch.randn(2, latent_dim)
        with warnings.catch_warnings():  # tracing bakes in the static spatial sizes, on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # share_weights=False: by default the OpenVINO model keeps pointers into the torch
            # tensors, and the tuner's rewritten copy of the module is freed before the artifact is
            # saved: the IR then got garbage biases (inf showers on reload). Copies are small here.
            self.fp_model = ov.convert_model(
                module.eval(), example_input=example, share_weights=False
            )
        self.fp_model.reshape([-1, latent_dim])
        self.quantizer = NNCFQuantizer(self.fp_model)
        from caloquant.precision.rewrite import rewritten_convs

        self.compact = rewritten_convs(module)

    def float_model(self, precision: str, f32_from: str | None = None) -> OpenVINOModel:
        hint = HINTS[precision]
        lp = {
            short_name(op.get_friendly_name()): precision
            for op in self.fp_model.get_ordered_ops()
            if op.get_type_name() in ("Convolution", "MatMul")
        }
        parts, lp = float_parts(self.fp_model, hint, f32_from, lp)
        # fp32 stays exact; bf16/fp16 kernels may as well be stored in float16
        return OpenVINOModel.build(
            parts,
            self.threads,
            lp,
            None if precision == "fp32" else self.compact,
            f32_from=None if f32_from is None else short_name(f32_from),
            scope=self.scope,
        )

    def split_points(self, calib: np.ndarray) -> list[str]:
        """The units (in graph order) at whose input the graph can be cut in two, so that the
        float part runs at a reduced precision before the cut and in f32 from there
        (``f32_from`` of :meth:`float_model` and :meth:`int8_model`)."""
        return split_points(self.fp_model, self.units(calib))

    def units(self, calib: np.ndarray) -> list[str]:
        """Quantization units: the ops NNCF puts int8 quantizers in front of by default, within
        the model's quantized scope (an op converted from module ``m`` is named
        ``__module.m/...``; ops of the root module have no prefix)."""
        units = self.quantizer.units(calib)
        if self.scope is None:
            return units
        if self._scoped is None:  # the tuner asks once per trial: the graph walks run once
            self._scoped = self._in_scope(units)
        return self._scoped

    def _in_scope(self, units: list[str]) -> list[str]:
        ops = {op.get_friendly_name(): op for op in self.fp_model.get_ordered_ops()}

        def serves_scope(u: str) -> bool:
            # a quantizer in the scope that feeds no convolution or matmul of the scope (the
            # shape network's last permute, read by the normalisation only) is not the scope's
            op = ops.get(u)
            if op is None or op.get_type_name() in COMPUTE:
                return True
            return any(in_scope(module_path(c.get_friendly_name()), self.scope)
                       for c in compute_ops(op))  # fmt: skip

        return [u for u in units if in_scope(module_path(u), self.scope) and serves_scope(u)]

    def unit_label(self, unit: str) -> str:
        return short_name(unit)

    def int8_model(
        self,
        calib: np.ndarray,
        int8_units: Sequence[str] | None,
        calibration: str,
        float_precision: str = "fp32",
        bias_correction: str | None = None,
        smooth_quant: float | None = None,
        f32_from: str | None = None,
    ) -> OpenVINOModel:
        units = self.units(calib)
        chosen = units if int8_units is None else [u for u in units if u in set(int8_units)]
        # every op NNCF would quantize and that is not chosen, those outside the scope too
        ignored = [u for u in self.quantizer.units(calib) if u not in chosen]
        q = self.quantizer.quantize(
            calib, ignored, calibration, bias_correction or "fast", smooth_quant
        )
        # what the engine's model has, not what was asked: NNCF may keep a unit's quantizer when
        # the next unit is ignored (moved past a reshape) or drop one it finds useless
        fed = set().union(*(labels for _, labels in input_quantizers(q).values()))
        lp = {short_name(u): ("int8" if short_name(u) in fed else float_precision) for u in units}
        parts, lp = float_parts(q, HINTS[float_precision], f32_from, lp)
        return OpenVINOModel.build(
            parts,
            self.threads,
            lp,
            self.compact,
            f32_from=None if f32_from is None else short_name(f32_from),
            scope=self.scope,
        )

    def accuracy_control(
        self,
        calib: np.ndarray,
        latents: np.ndarray,
        metric: Callable[[np.ndarray], float],
        max_drop: float,
    ) -> OpenVINOModel:
        """NNCF's own search: ``quantize_with_accuracy_control`` with our physics metric (higher
        is better)."""
        q, lp = self.quantizer.accuracy_control(calib, latents, metric, max_drop)
        return OpenVINOModel.build([(q, "f32")], self.threads, lp, self.compact, scope=self.scope)

    def fake_quant_plan(
        self, calib: np.ndarray, int8_units: Sequence[str], calibration: str
    ) -> list[FakeQuant]:
        """NNCF's int8 arithmetic for these units, stated on the torch modules (see
        :meth:`.nncf_quantize.NNCFQuantizer.fake_quant_plan`)."""
        return self.quantizer.fake_quant_plan(calib, int8_units, calibration)
