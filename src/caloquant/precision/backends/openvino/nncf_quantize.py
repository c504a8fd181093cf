"""NNCF post-training int8 of one float OpenVINO model: the quantization units, int8 with a
per-unit ignored scope and a range estimator per unit, SmoothQuant, NNCF's own accuracy
control, and the int8 arithmetic read off as a fake-quant plan for QAT.

(Named ``nncf_quantize``, not ``nncf``: a module ``nncf`` here would shadow the library for
readers and tools that resolve names relative to the package.)"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.precision.backends import FakeQuant
from caloquant.precision.backends.openvino.graph import (
    COMPUTE,
    compute_ops,
    drop_stray_quantizers,
    fake_quantize_consumers,
    input_quantizers,
    kind,
    short_name,
    value_preserving,
    walk,
)
from caloquant.precision.config import parse_calibration
from caloquant.runtime import quiet_loggers

log = logging.getLogger(__name__)

# the torch module a Convolution/MatMul was converted from, in the op's name
_MODULE = re.compile(r"__module\.(.+?)/aten::(_convolution|linear)/")


@contextlib.contextmanager
def _silence() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars; the tuner reports trials itself."""
    nncf_module()
    with quiet_loggers("nncf"), _silence():
        yield


def nncf_module() -> Any:
    """The nncf module; its first import sets its logger's level to INFO, which is undone."""
    before = logging.getLogger("nncf").level
    import nncf

    logging.getLogger("nncf").setLevel(before)
    return nncf


def _constant(value: np.ndarray) -> Any:
    import openvino.opset13 as ops

    return ops.constant(value)


def _weight_grid(w_node: Any, w_max: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Per output channel: (max|w_c| / scale_c, largest |integer|) of NNCF's compressed weight
    ``Multiply(Convert(int8), scale)``; empty where the weight is float."""
    if kind(w_node) != "Multiply":
        return (), ()
    ints = w_node.input_value(0).get_node()
    scale = np.asarray(w_node.input_value(1).get_node().get_data(), dtype=np.float64)
    while kind(ints) != "Constant":
        ints = ints.input_value(0).get_node()
    q = np.abs(np.asarray(ints.get_data(), dtype=np.int64)).reshape(len(w_max), -1).max(axis=1)
    ratio = np.where(w_max > 0, w_max / np.maximum(scale.reshape(-1), 1e-300), 127.0)
    return tuple(float(r) for r in ratio), tuple(int(b) for b in np.maximum(q, 1))


def _module_op(consumer: Any) -> Any:
    """The op that computes on a quantizer's output read by ``consumer``: the consumer itself,
    or the one op it leads to through value-preserving ops; the consumer where it leads to more
    than one (then it is no torch module's layer, and the plan says so)."""
    if not value_preserving(consumer):
        return consumer
    ends = [op for op in walk([consumer], value_preserving) if not value_preserving(op)]
    return ends[0] if len(ends) == 1 else consumer


# NNCF places its quantizers by the graph's topology, not by the weights' values: the units of a
# topology are found once per process (QAT rebuilds the backend on new weights every
# refresh_every steps: 16 times in an 800-step run, ~0.5 s each on the test model)
_UNITS: dict[tuple[tuple[str, str], ...], list[str]] = {}


class NNCFQuantizer:
    """NNCF int8 of the float OpenVINO model ``fp_model`` (the backend's converted generator)."""

    def __init__(self, fp_model: Any) -> None:
        self.fp_model = fp_model
        # the float model's ops by name, built once (every quantization and QAT plan reads it)
        self.fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ordered_ops()}
        self._units: list[str] | None = None
        # the quantizers NNCF placed outside the asked units, bypassed (see :meth:`quantize`)
        self.bypassed: set[str] = set()

    def units(self, calib: np.ndarray) -> list[str]:
        """Quantization units: the ops NNCF puts int8 quantizers in front of by default."""
        if self._units is None:
            topology = tuple((name, op.get_type_name()) for name, op in self.fp_ops.items())
            if topology not in _UNITS:
                q = self.quantize_once(calib[: min(len(calib), 32)], [], "minmax")
                names: list[str] = []
                for _, readers in fake_quantize_consumers(q, activations_only=False):
                    for r in readers:
                        if kind(r) != "FakeQuantize" and r.get_friendly_name() not in names:
                            names.append(r.get_friendly_name())
                _UNITS[topology] = names
            self._units = list(_UNITS[topology])
        return self._units

    def quantize(
        self,
        calib: np.ndarray,
        ignored: list[str],
        calibration: str,
        bias_correction: str = "fast",
        smooth_quant: float | None = None,
    ) -> Any:
        """NNCF post-training int8 with a range estimator per unit (``calibration``: see
        :func:`caloquant.precision.config.parse_calibration`). NNCF takes one estimator per call,
        so the model is quantized once per estimator asked for and each overridden unit's input
        FakeQuantize ranges are copied from its estimator's model into the default one (written
        by hand: NNCF has no per-node range estimator). The copied unit keeps the default
        model's bias correction (computed for the default ranges; bias correction moves these
        models by 0.1-0.2 points of per cent at most, docs/findings.md 10)."""
        default, overrides = parse_calibration(calibration)
        # a unit left float takes the layers it feeds with it: a unit can be a value-preserving op
        # (the Conv2D generator's view feeds three convolutions that are not units themselves,
        # its cat and permutes feed the last one), and NNCF would otherwise quantize those layers
        # from quantizers it places elsewhere
        fp_ops = self.fp_ops
        behind = [
            c.get_friendly_name()
            for u in ignored
            if u in fp_ops and kind(fp_ops[u]) not in COMPUTE
            for c in compute_ops(fp_ops[u])
        ]
        ignored = list(dict.fromkeys([*ignored, *behind]))
        q = self.quantize_once(calib, ignored, default, bias_correction, smooth_quant)
        chosen = {short_name(u) for u in self.units(calib) if u not in set(ignored)}
        # NNCF can still leave a quantizer outside the asked units: its propagation passes ops
        # the ignored layers above are not found through (pooling, split). Plain NNCF leaves
        # none in the built-in models (every unit left out, alone and with all others, checked).
        # SmoothQuant's quantizers sit on its own scaling ops, whose names label no unit:
        # conv2d-g4's after cat (for 'out') is bypassed though 'cat' is asked, so 'out' runs on
        # a float input there. Said once per quantizer, as the tuner asks for many models.
        new = [n for n in drop_stray_quantizers(q, chosen) if n not in self.bypassed]
        if new:
            log.warning(
                "NNCF left int8 quantizers outside the asked int8 units: %s; bypassed, so "
                "that the model is int8 only where asked",
                ", ".join(new),
            )
            self.bypassed.update(new)
        for est in sorted(set(overrides.values())):
            wanted = {u for u, e in overrides.items() if e == est}
            donor = input_quantizers(
                self.quantize_once(calib, ignored, est, bias_correction, smooth_quant)
            )
            for name, (fq, labels) in input_quantizers(q).items():
                # the same ignored scope: the same quantizers, by name
                if labels & wanted and name in donor:
                    for i in (1, 2, 3, 4):  # input low/high, output low/high
                        src = donor[name][0].input_value(i).get_node()
                        const = _constant(np.asarray(src.get_data()).copy())
                        fq.input(i).replace_source_output(const.output(0))
        q.validate_nodes_and_infer_types()
        return q

    def quantize_once(
        self,
        calib: np.ndarray,
        ignored: list[str],
        calibration: str,
        bias_correction: str = "fast",
        smooth_quant: float | None = None,
    ) -> Any:
        """NNCF post-training int8 with one range estimator. ``smooth_quant``: NNCF's
        SmoothQuant with this alpha (0-1) for convolutions (off by default in NNCF; it runs only
        with ``model_type=TRANSFORMER``, which is therefore set, with SmoothQuant for MatMul
        off; NNCF smooths every convolution, float ones included). -1: that model type with
        SmoothQuant off, the control that separates SmoothQuant from the model type's other
        quantization patterns."""
        if smooth_quant is not None and not (smooth_quant == -1 or 0.0 <= smooth_quant <= 1.0):
            raise CaloquantError(
                f"SmoothQuant alpha must be within 0-1 (or -1: the control), got {smooth_quant}"
            )
        nncf = nncf_module()
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        estimator, _, scheme = calibration.partition("-")
        ranges = {
            "minmax": RangeEstimatorParametersSet.MINMAX,
            "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
            "histogram": RangeEstimatorParametersSet.HISTOGRAM,
        }[estimator]
        # PERFORMANCE: symmetric int8 activations; MIXED: asymmetric ones (a zero point), both with
        # symmetric per-channel weights. LeakyReLU outputs are lopsided (the negative side is
        # scaled by alpha): an asymmetric range spends fewer of the 256 levels on empty values
        # (CERN 3DGAN conv2 input: 1.21 % -> 0.65 % Ecal with percentile ranges, findings 10)
        preset = (
            nncf.QuantizationPreset.MIXED
            if scheme == "asym"
            else nncf.QuantizationPreset.PERFORMANCE
        )
        batches = [calib[i : i + 16] for i in range(0, len(calib), 16)]
        scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
        try:
            with quiet_nncf():
                return nncf.quantize(
                    self.fp_model,
                    nncf.Dataset(batches),
                    subset_size=len(batches),
                    preset=preset,
                    fast_bias_correction=(bias_correction == "fast"),
                    ignored_scope=scope,
                    model_type=None if smooth_quant is None else nncf.ModelType.TRANSFORMER,
                    advanced_parameters=AdvancedQuantizationParameters(
                        activations_range_estimator_params=ranges,
                        disable_bias_correction=(bias_correction == "none"),
                        smooth_quant_alphas=AdvancedSmoothQuantParameters(
                            convolution=-1 if smooth_quant is None else smooth_quant, matmul=-1
                        ),
                    ),
                )
        except Exception as exc:  # noqa: BLE001 - NNCF raises many types
            raise CaloquantError(
                f"NNCF quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None

    def accuracy_control(
        self,
        calib: np.ndarray,
        latents: np.ndarray,
        metric: Callable[[np.ndarray], float],
        max_drop: float,
    ) -> tuple[Any, dict[str, str]]:
        """NNCF's own search: ``quantize_with_accuracy_control`` with our physics metric (higher
        is better). Returns the model and the precision of each unit it kept or reverted."""
        nncf = nncf_module()

        batches = [calib[i : i + 16] for i in range(0, len(calib), 16)]
        val = [latents[i : i + 100] for i in range(0, len(latents), 100)]

        def validation_fn(compiled: Any, items: Any) -> float:
            out = np.concatenate([np.asarray(compiled(x)[0]) for x in items])
            return float(metric(out)) if len(out) == len(latents) else 0.0

        try:
            with quiet_nncf():
                q = nncf.quantize_with_accuracy_control(
                    self.fp_model,
                    nncf.Dataset(batches),
                    nncf.Dataset(val),
                    validation_fn=validation_fn,
                    max_drop=max_drop,
                    drop_type=nncf.DropType.ABSOLUTE,
                    preset=nncf.QuantizationPreset.PERFORMANCE,
                    subset_size=len(batches),
                )
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(
                f"NNCF accuracy control failed: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}"
            ) from None
        kept_int8 = {
            r.get_friendly_name()
            for _, readers in fake_quantize_consumers(q, activations_only=False)
            for r in readers
        }
        lp = {short_name(u): ("int8" if u in kept_int8 else "fp32") for u in self.units(calib)}
        return q, lp

    def fake_quant_plan(
        self, calib: np.ndarray, int8_units: Sequence[str], calibration: str
    ) -> list[FakeQuant]:
        """Read NNCF's int8 arithmetic for these units off the quantized model: each unit's input
        FakeQuantize (range and levels) and the compressed weights (int8 values times a
        per-channel scale) of the convolution or MatMul it feeds, found by following ops that do
        not change values (reshape, pad, nearest upsampling); the torch module is named in the
        op's name (``__module.conv2.conv/aten::_convolution``). Bias correction off: QAT learns
        its own biases."""
        units = self.units(calib)
        chosen = [u for u in units if u in set(int8_units)]
        q = self.quantize(calib, [u for u in units if u not in chosen], calibration, "none")
        plan: list[FakeQuant] = []
        for op, _ in input_quantizers(q).values():
            consumers = walk([op], lambda _: False)
            unit = next(
                (c.get_friendly_name() for c in consumers if c.get_friendly_name() in chosen), None
            )
            if unit is None:
                continue
            low, high = (np.asarray(op.input_value(i).get_node().get_data()) for i in (1, 2))
            if low.size != 1:
                raise CaloquantError(
                    f"{short_name(unit)}: per-channel activation quantizer; "
                    f"QAT supports per-tensor ones"
                )
            levels = int(op.get_attributes()["levels"])
            for c in consumers:
                target = _module_op(c)
                name = target.get_friendly_name()
                m = _MODULE.match(name)
                if m is None:
                    raise CaloquantError(
                        f"{short_name(unit)}: int8 input of {name}, which is not "
                        f"a torch module's convolution or linear layer"
                    )
                w = np.abs(
                    np.asarray(
                        self.fp_ops[name].input_value(1).get_node().get_data(), dtype=np.float64
                    )
                )
                ratio, bound = _weight_grid(
                    target.input_value(1).get_node(), w.reshape(w.shape[0], -1).max(axis=1)
                )
                plan.append(
                    FakeQuant(
                        short_name(unit),
                        m.group(1),
                        float(low.reshape(-1)[0]),
                        float(high.reshape(-1)[0]),
                        levels,
                        ratio,
                        bound,
                    )
                )
        return plan
