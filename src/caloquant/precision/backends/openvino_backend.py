"""OpenVINO + NNCF: fp32, bf16 and fp16 by inference-precision hint, int8 by NNCF post-training
quantization with a per-unit ignored scope (the float part runs at the chosen hint)."""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.precision.backends import Capabilities, FakeQuant, Runner
from caloquant.precision.backends.opprofile import categorize, summary
from caloquant.precision.config import parse_calibration
from caloquant.runtime import quiet_loggers

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
EXECUTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# nodes the CPU plugin folds into a convolution: batch-norm becomes a multiply-add, a
# dequantization scale a PowerStatic
_FUSED = {"MulAdd": "normalization", "PowerStatic": "quantize/dequantize"}
# a Reorder whose name encodes a precision change, e.g. 'z_f32_bf16___module.dense...'
_CAST_REORDER = re.compile(r"_(f32|bf16|f16|i8|u8)_(f32|bf16|f16|i8|u8)_")


@contextlib.contextmanager
def _silence() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs INFO lines and draws progress bars; the tuner reports trials itself."""
    _nncf()
    with quiet_loggers("nncf"), _silence():
        yield


def _nncf() -> Any:
    """The nncf module; its first import sets its logger's level to INFO, which is undone."""
    import logging

    before = logging.getLogger("nncf").level
    import nncf

    logging.getLogger("nncf").setLevel(before)
    return nncf


def short_name(full: str) -> str:
    """'__module.conv2/aten::_convolution/Convolution' -> 'conv2'; 'aten::view/Reshape' -> 'view';
    'aten::permute/Transpose_3' -> 'permute_3' (OpenVINO numbers repeated ops of one kind: two
    permutes of the Conv2D generator must not share a label, or a per-unit setting hits both)."""
    m = re.match(r"__module\.([^/]+)/", full)
    if m:
        return m.group(1)
    m = re.match(r"aten::([^/]+)/[A-Za-z]+(_\d+)?(?:/|$)", full)
    return m.group(1) + (m.group(2) or "") if m else full


def compact_weights(model: Any, compact: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """A copy of ``model`` whose float (not int8) weights are stored in float16 and expanded to
    float32 when the model is compiled (the CPU plugin folds the expansion into one constant),
    so the file is small and inference is unchanged apart from the weights' float16 rounding:
    - the convolutions made by the sub-pixel rewrite (``compact``: name -> UpsampledConv) take
      their kernel from the compact original kernel through Einsum + Reshape (the file holds the
      small kernel, inference runs the large one);
    - float MatMul weights (e.g. a generator's first dense layer) become a float16 constant.
    Int8 units are left alone (NNCF already stores their weights as int8); ``compact=None``
    leaves the model as it is (the exact fp32 model).
    Returns the model and the names of the layers stored compactly."""
    import openvino as ov
    import openvino.opset13 as ops

    if compact is None:
        return model, []
    m = model.clone()
    done: list[str] = []
    for op in m.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "MatMul"):
            continue
        src = op.input_value(1).get_node()
        if src.get_type_name() != "Constant" or src.get_element_type() != ov.Type.f32:
            continue
        name = op.get_friendly_name()
        if kind == "MatMul":
            w = src.get_data()
            if w.size < 1024:  # not worth a node
                continue
            op.input(1).replace_source_output(ops.convert(ops.constant(w.astype(np.float16)), ov.Type.f32).output(0))
            done.append(short_name(name))
            continue
        for mod_name, mod in compact.items():
            if not name.startswith(f"__module.{mod_name}.conv/"):
                continue
            eq, operands, shape = mod.compact_weight_recipe()
            consts = [ops.constant(t.numpy().astype(np.float32)) for t in operands[:-1]]
            w = ops.convert(ops.constant(operands[-1].numpy().astype(np.float16)), ov.Type.f32)
            kernel = ops.reshape(ops.einsum([*consts, w], eq), ops.constant(np.array(shape, dtype=np.int64)), False)
            op.input(1).replace_source_output(kernel.output(0))
            done.append(mod_name)
    return m, done


# ops between an activation quantizer and the layer it serves that do not change values
_VALUE_PRESERVING = {"Reshape", "Pad", "Interpolate", "Transpose", "Squeeze", "Unsqueeze", "Broadcast"}
_MODULE = re.compile(r"__module\.(.+?)/aten::(_convolution|linear)/")


def _compute_op(node: Any) -> Any:
    """The Convolution/MatMul an int8 input reaches through value-preserving ops."""
    while node.get_type_name() in _VALUE_PRESERVING:
        targets = list(node.output(0).get_target_inputs())
        if len(targets) != 1:
            break
        node = targets[0].get_node()
    return node


_COMPUTE = {"Convolution", "ConvolutionBackpropData", "GroupConvolution", "MatMul"}


def _compute_ops(node: Any) -> list[Any]:
    """Every Convolution/MatMul whose input comes from ``node`` through value-preserving ops
    and concatenations (all branches: a reshape can feed three convolutions, a concatenation
    joins three branches into one)."""
    out, todo, seen = [], [node], set()
    while todo:
        n = todo.pop()
        for t in n.output(0).get_target_inputs():
            c = t.get_node()
            if c.get_friendly_name() in seen:
                continue
            seen.add(c.get_friendly_name())
            if c.get_type_name() in _COMPUTE:
                out.append(c)
            elif c.get_type_name() in _VALUE_PRESERVING or c.get_type_name() == "Concat":
                todo.append(c)
    return out


def _input_quantizers(model: Any) -> dict[str, tuple[Any, set[str]]]:
    """Every activation FakeQuantize by its name, with the unit labels it quantizes for: the ops
    it feeds, and the op whose output it sits on (NNCF moves a unit's quantizer past a reshape
    when the next op is ignored: ``aten::view/Reshape/fq_output_0`` is the 'view' unit's)."""
    out: dict[str, tuple[Any, set[str]]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        labels = {short_name(t.get_node().get_friendly_name()) for t in op.output(0).get_target_inputs()}
        out[op.get_friendly_name()] = (op, labels | {short_name(op.get_friendly_name())})
    return out


def _drop_stray_quantizers(model: Any, chosen: set[str]) -> list[str]:
    """Bypass every activation FakeQuantize that serves none of the ``chosen`` unit labels.

    Why by hand: with a unit in NNCF's ignored scope, NNCF can still leave a quantizer on the
    output of the op before it (the Conv2D generator: on ``view`` and ``cat`` with *every* unit
    ignored); that model is then int8 where nothing was asked, and what the tuner measures as
    "unit X alone" is X plus those (conv2d-g4 epoch 17: 7-9 % of Ecal from them alone). After this,
    what runs is what was asked. Returns the bypassed quantizers' names."""
    dropped = []
    for name, (fq, labels) in _input_quantizers(model).items():
        if labels & chosen:
            continue
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(fq.input_value(0))
        dropped.append(name)
    return dropped


def _constant(value: np.ndarray) -> Any:
    import openvino.opset13 as ops

    return ops.constant(value)


def _weight_grid(w_node: Any, w_max: np.ndarray) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Per output channel: (max|w_c| / scale_c, largest |integer|) of NNCF's compressed weight
    ``Multiply(Convert(int8), scale)``; empty where the weight is float."""
    if w_node.get_type_name() != "Multiply":
        return (), ()
    ints, scale = w_node.input_value(0).get_node(), np.asarray(w_node.input_value(1).get_node().get_data(), dtype=np.float64)
    while ints.get_type_name() != "Constant":
        ints = ints.input_value(0).get_node()
    q = np.abs(np.asarray(ints.get_data(), dtype=np.int64)).reshape(len(w_max), -1).max(axis=1)
    ratio = np.where(w_max > 0, w_max / np.maximum(scale.reshape(-1), 1e-300), 127.0)
    return tuple(float(r) for r in ratio), tuple(int(b) for b in np.maximum(q, 1))


def split_at(model: Any, unit: str) -> tuple[Any, Any] | None:
    """The model cut in two at the input of the op named ``unit`` (before its int8 quantizer,
    if it has one): the head, from the model's inputs to that tensor, and the tail, from a new
    Parameter holding that tensor to the model's outputs. None where that tensor does not
    separate the graph (the tail would need another tensor of the head, e.g. a skip connection)
    or where the head would be empty.

    Written by hand: OpenVINO's Python API has no sub-graph extraction, and the CPU plugin has
    no per-node precision switch reachable from Python (the runtime attribute
    ``disable_fp16_compression`` is C++ only, docs/findings.md 11); two compiled parts with
    their own ``INFERENCE_PRECISION_HINT`` are what remains."""
    import openvino as ov
    import openvino.opset13 as ops

    def source(m: Any) -> Any | None:
        op = next((o for o in m.get_ordered_ops() if o.get_friendly_name() == unit), None)
        if op is None or op.get_input_size() == 0:
            return None
        src = op.input_value(0)
        while src.get_node().get_type_name() == "FakeQuantize":
            src = src.get_node().input_value(0)
        return None if src.get_node().get_type_name() in ("Parameter", "Constant") else src

    head_model, tail_model = model.clone(), model.clone()
    head_src, tail_src = source(head_model), source(tail_model)
    if head_src is None or tail_src is None:
        return None
    inputs = {p.get_friendly_name() for p in tail_model.get_parameters()}
    cut = ops.parameter(tail_src.get_partial_shape(), tail_src.get_element_type(), "cut")
    for target in list(tail_src.get_target_inputs()):
        target.replace_source_output(cut.output(0))
    # the tail must be computable from the cut alone: it may reach none of the model's inputs
    todo, seen = [r for r in tail_model.get_results()], set()
    while todo:
        n = todo.pop()
        if n.get_type_name() == "Parameter" and n.get_friendly_name() in inputs:
            return None
        for i in range(n.get_input_size()):
            up = n.input_value(i).get_node()
            if up.get_friendly_name() not in seen:
                seen.add(up.get_friendly_name())
                todo.append(up)
    head = ov.Model([ops.result(head_src)], head_model.get_parameters(), "head")
    tail = ov.Model(tail_model.get_results(), [cut], "tail")
    return head, tail


class OpenVINOModel:
    """A compiled OpenVINO model: callable on latents, saveable as IR.

    ``parts``: consecutive OpenVINO models with the inference-precision hint each is compiled
    with; the output of one is the input of the next (one part: an ordinary model; two: a
    float part split by :func:`split_at`, e.g. bf16 up to a layer and f32 from there).
    ``compact``: sub-pixel-rewritten convolutions (name -> UpsampledConv) whose float kernels
    are stored compactly; the model is then compiled from that same compact form, so what
    is evaluated is exactly what is saved. ``f32_from``: the unit where a split model turns to f32."""

    def __init__(self, parts: list[tuple[Any, str]], threads: int | None, layer_precisions: dict[str, str],
                 compact: dict[str, Any] | None = None, compacted: list[str] | None = None, f32_from: str | None = None) -> None:
        if compacted is None:
            made = [compact_weights(m, compact) for m, _ in parts]
            parts = [(m, h) for (m, _), (_, h) in zip(made, parts)]
            compacted = list(dict.fromkeys(n for _, names in made for n in names))  # graph order
        self.parts, self.threads, self.compacted, self.f32_from = parts, threads, compacted, f32_from
        self.hint = parts[0][1]
        self.layer_precisions = layer_precisions
        self._compiled = self._compile(threads, 1)
        self._requests = [c.create_infer_request() for c in self._compiled]

    @property
    def model(self) -> Any:
        """The ``ov.Model`` of an engine model in one part (a split one has ``parts``)."""
        if len(self.parts) != 1:
            raise CaloquantError(f"this OpenVINO model runs in {len(self.parts)} parts; use .parts")
        return self.parts[0][0]

    def _compile(self, threads: int | None, streams: int, perf_count: bool = False) -> list[Any]:
        import openvino as ov

        core = ov.Core()
        out = []
        for model, hint in self.parts:
            cfg: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": hint,  # always explicit: the CPU plugin picks bf16 by itself on AMX/AVX512-BF16
                "NUM_STREAMS": streams,
            }
            if threads is not None:
                cfg["INFERENCE_NUM_THREADS"] = threads * streams
            if streams == 1:
                cfg["PERFORMANCE_HINT"] = "LATENCY"
            if perf_count:
                cfg["PERF_COUNT"] = True
            out.append(core.compile_model(model, "CPU", cfg))
        return out

    @staticmethod
    def _chain(requests: list[Any]) -> Runner:
        """Run the parts one after the other; a part's output tensor is the next one's input
        (no copy); the last output is copied out, as the next call overwrites it."""
        import openvino as ov

        if len(requests) == 1:
            req = requests[0]
            return lambda x: np.asarray(req.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0])

        def run(x: np.ndarray) -> np.ndarray:
            t: Any = ov.Tensor(np.ascontiguousarray(x, dtype=np.float32))
            for req in requests:
                req.set_input_tensor(t)
                req.infer()
                t = req.get_output_tensor()
            return np.array(t.data)

        return run

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        return self._chain(self._requests)(latent)

    def options(self) -> dict[str, Any]:
        # compact_kernels: float kernels stored small (float16), expanded at compile time
        opts: dict[str, Any] = {"inference_precision_hint": self.hint, "compact_kernels": list(self.compacted)}
        if len(self.parts) > 1:
            opts["parts"] = [{"file": f, "inference_precision_hint": h} for f, (_, h) in zip(self._files(), self.parts)]
            opts["f32_from"] = self.f32_from
        return opts

    def _files(self) -> list[str]:
        return ["model.xml"] + [f"model_part{i}.xml" for i in range(1, len(self.parts))]

    def executed_precision(self) -> str:
        """The plugin's own answer, part by part: on a CPU without fp16 arithmetic an f16 hint
        runs as bf16; 'int8+bf16+fp32' for an int8 model whose float part is split."""
        names: list[str] = []
        for c in self._compiled:
            prop = c.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: 'f32', 'bf16', 'f16'
            name = prop.get_type_name() if hasattr(prop, "get_type_name") else str(prop)
            if EXECUTED.get(name, name) not in names:
                names.append(EXECUTED.get(name, name))
        return "+".join((["int8"] if "int8" in self.layer_precisions.values() else []) + names)

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One compiled model per part with the plugin's own stream executor (it pins stream
        threads to cores and caps the total at the core count) and one chain of infer requests
        per stream."""
        compiled = self._compile(threads, streams)
        eff = {"streams": int(compiled[0].get_property("NUM_STREAMS")),
               "threads_total": int(compiled[0].get_property("INFERENCE_NUM_THREADS"))}
        return [self._chain([c.create_infer_request() for c in compiled]) for _ in range(streams)], eff

    def profile(self, latent: np.ndarray, threads: int, min_calls: int, budget_s: float) -> dict[str, Any]:
        """Performance counters (``PERF_COUNT``) of the executed graph (every part); ops the
        plugin fused into a convolution cost nothing on their own and are counted in ``fused_ops``."""
        compiled = self._compile(threads, 1, perf_count=True)
        reqs = [c.create_infer_request() for c in compiled]
        run = self._chain(reqs)
        run(latent)  # warm-up
        times: dict[str, float] = defaultdict(float)
        per_op: dict[str, float] = defaultdict(float)
        fused: dict[str, int] = defaultdict(int)
        n, wall = 0, 0.0
        start = time.perf_counter()
        while n < min_calls or time.perf_counter() - start < budget_s:
            t0 = time.perf_counter()
            run(latent)
            wall += 1000 * (time.perf_counter() - t0)
            n += 1
            for p in (p for req in reqs for p in req.get_profiling_info()):
                ms = p.real_time.total_seconds() * 1000
                if p.status != p.Status.EXECUTED:
                    if p.node_type not in ("Parameter", "Result", "Constant") and n == 1:
                        fused[_FUSED.get(p.node_type) or categorize(p.node_type) or categorize(p.node_name) or "other"] += 1
                    continue
                if p.node_type == "Reorder" and _CAST_REORDER.search(p.node_name):
                    cat = "quantize/dequantize"
                elif p.node_type in ("Eltwise", "Subgraph", "MulAdd", "Multiply", "Add", "PowerStatic"):
                    cat = categorize(p.node_name) or "other"
                else:
                    cat = categorize(p.node_type) or categorize(p.node_name) or "other"
                times[cat] += ms
                per_op[f"{p.node_type} ({p.exec_type})"] += ms
        return summary(times, per_op, wall, n, tool="OpenVINO performance counters", fused_ops=dict(fused))

    def save(self, out_dir: Path) -> list[str]:
        import openvino as ov

        files = []
        for f, (model, _) in zip(self._files(), self.parts):
            ov.save_model(model, out_dir / f, compress_to_fp16=False)
            files += [f, f[:-4] + ".bin"]
        return files

    @classmethod
    def load(cls, out_dir: Path, manifest: dict[str, Any], threads: int | None) -> OpenVINOModel:
        import openvino as ov

        opts = manifest.get("backend_options", {})
        listed = opts.get("parts") or [{"file": "model.xml", "inference_precision_hint": opts.get("inference_precision_hint")}]
        parts = []
        for part in listed:
            xml = out_dir / str(part.get("file"))
            if not xml.exists() or not xml.with_suffix(".bin").exists():
                raise CaloquantError(f"{out_dir}: OpenVINO artifact lacks {xml.name} / {xml.with_suffix('.bin').name}")
            if part.get("inference_precision_hint") not in EXECUTED:
                raise CaloquantError(f"{out_dir}: manifest gives {xml.name} no valid inference precision hint")
            try:
                parts.append((ov.Core().read_model(xml), str(part["inference_precision_hint"])))
            except RuntimeError as exc:
                raise CaloquantError(f"{xml}: unreadable OpenVINO model ({str(exc).splitlines()[0][:120]})") from None
        return cls(parts, threads, manifest.get("layer_precisions", {}), compacted=list(opts.get("compact_kernels", [])),
                   f32_from=opts.get("f32_from"))


class OpenVINOBackend:
    name = "openvino"
    capabilities = Capabilities(precisions=("fp32", "bf16", "fp16", "int8"),
                                calibrations=("minmax", "percentile", "histogram", "minmax-asym", "percentile-asym", "histogram-asym"),
                                float_remainders=("bf16", "fp16"), accuracy_control="NNCF quantize_with_accuracy_control",
                                qat=True, bias_corrections=("fast", "full", "none"), smooth_quant=True,
                                per_unit_calibration=True, float_split=True)

    @staticmethod
    def prime() -> None:
        import openvino as ov

        ov.Core().get_property("CPU", "FULL_DEVICE_NAME")

    def __init__(self, module: nn.Module, latent_dim: int, threads: int | None) -> None:
        import openvino as ov

        self.threads = threads
        example = torch.randn(2, latent_dim)
        with warnings.catch_warnings():  # tracing bakes in the static spatial sizes, on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # share_weights=False: by default the OpenVINO model keeps pointers into the torch
            # tensors, and the tuner's rewritten copy of the module is freed before the artifact is
            # saved: the IR then got garbage biases (inf showers on reload). Copies are small here.
            self.fp_model = ov.convert_model(module.eval(), example_input=example, share_weights=False)
        self.fp_model.reshape([-1, latent_dim])
        self._fp_ops = {op.get_friendly_name(): op for op in self.fp_model.get_ordered_ops()}
        self._units: list[str] | None = None
        from caloquant.precision.rewrite import rewritten_convs

        self.compact = rewritten_convs(module)

    def float_model(self, precision: str, f32_from: str | None = None) -> OpenVINOModel:
        hint = HINTS[precision]
        lp = {short_name(op.get_friendly_name()): precision for op in self.fp_model.get_ordered_ops()
              if op.get_type_name() in ("Convolution", "MatMul")}
        parts, lp = self._split(self.fp_model, hint, f32_from, lp)
        # fp32 stays exact; bf16/fp16 kernels may as well be stored in float16
        return OpenVINOModel(parts, self.threads, lp, None if precision == "fp32" else self.compact,
                             f32_from=None if f32_from is None else short_name(f32_from))

    def split_points(self, calib: np.ndarray) -> list[str]:
        """The units (in graph order) at whose input the graph can be cut in two, so that the
        float part runs at a reduced precision before the cut and in f32 from there
        (``f32_from`` of :meth:`float_model` and :meth:`int8_model`)."""
        return [u for u in self.units(calib) if split_at(self.fp_model, u) is not None]

    @staticmethod
    def _split(model: Any, hint: str, f32_from: str | None, lp: dict[str, str]) -> tuple[list[tuple[Any, str]], dict[str, str]]:
        """The parts to compile for a float part at ``hint`` that turns to f32 at the unit
        ``f32_from`` (None, or an f32 hint: one part), and the layer precisions after the cut."""
        if f32_from is None or hint == "f32":
            return [(model, hint)], lp
        cut = split_at(model, f32_from)
        if cut is None:
            raise CaloquantError(f"the graph cannot be cut at the input of {short_name(f32_from)} (not a single tensor "
                                 f"between the two parts); choose another split point")
        head, tail = cut
        in_tail = {short_name(o.get_friendly_name()) for o in tail.get_ordered_ops()}
        return [(head, hint), (tail, "f32")], {k: ("fp32" if k in in_tail and v != "int8" else v) for k, v in lp.items()}

    def _quantize(self, calib: np.ndarray, ignored: list[str], calibration: str, bias_correction: str = "fast",
                  smooth_quant: float | None = None) -> Any:
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
        fp_ops = self._fp_ops
        behind = [c.get_friendly_name() for u in ignored if u in fp_ops and fp_ops[u].get_type_name() not in _COMPUTE
                  for c in _compute_ops(fp_ops[u])]
        ignored = list(dict.fromkeys([*ignored, *behind]))
        q = self._nncf_quantize(calib, ignored, default, bias_correction, smooth_quant)
        chosen = {short_name(u) for u in self.units(calib) if u not in set(ignored)}
        _drop_stray_quantizers(q, chosen)  # none left after the above (tested); kept as a guard
        for est in sorted(set(overrides.values())):
            wanted = {u for u, e in overrides.items() if e == est}
            donor = _input_quantizers(self._nncf_quantize(calib, ignored, est, bias_correction, smooth_quant))
            for name, (fq, labels) in _input_quantizers(q).items():
                if labels & wanted and name in donor:  # the same ignored scope: the same quantizers, by name
                    for i in (1, 2, 3, 4):  # input low/high, output low/high
                        src = donor[name][0].input_value(i).get_node()
                        fq.input(i).replace_source_output(_constant(np.asarray(src.get_data()).copy()).output(0))
        q.validate_nodes_and_infer_types()
        return q

    def _nncf_quantize(self, calib: np.ndarray, ignored: list[str], calibration: str, bias_correction: str = "fast",
                       smooth_quant: float | None = None) -> Any:
        """NNCF post-training int8 with one range estimator. ``smooth_quant``: NNCF's SmoothQuant
        with this alpha (0-1) for convolutions (off by default in NNCF; it runs only with ``model_type=TRANSFORMER``, which
        is therefore set, with SmoothQuant for MatMul off; NNCF smooths every convolution, float
        ones included). -1: that model type with SmoothQuant off, the control that separates
        SmoothQuant from the model type's other quantization patterns."""
        if smooth_quant is not None and not (smooth_quant == -1 or 0.0 <= smooth_quant <= 1.0):
            raise CaloquantError(f"SmoothQuant alpha must be within 0-1 (or -1: the control), got {smooth_quant}")
        nncf = _nncf()
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        estimator, _, scheme = calibration.partition("-")
        ranges = {"minmax": RangeEstimatorParametersSet.MINMAX, "percentile": RangeEstimatorParametersSet.MEAN_QUANTILE,
                  "histogram": RangeEstimatorParametersSet.HISTOGRAM}[estimator]
        # PERFORMANCE: symmetric int8 activations; MIXED: asymmetric ones (a zero point), both with
        # symmetric per-channel weights. LeakyReLU outputs are lopsided (the negative side is
        # scaled by alpha): an asymmetric range spends fewer of the 256 levels on empty values
        # (CERN 3DGAN conv2 input: 1.21 % -> 0.65 % Ecal with percentile ranges, findings 10)
        preset = nncf.QuantizationPreset.MIXED if scheme == "asym" else nncf.QuantizationPreset.PERFORMANCE
        batches = [calib[i : i + 16] for i in range(0, len(calib), 16)]
        try:
            with _quiet_nncf():
                return nncf.quantize(
                    self.fp_model, nncf.Dataset(batches), subset_size=len(batches),
                    preset=preset,
                    fast_bias_correction=(bias_correction == "fast"),
                    ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
                    model_type=None if smooth_quant is None else nncf.ModelType.TRANSFORMER,
                    advanced_parameters=AdvancedQuantizationParameters(
                        activations_range_estimator_params=ranges, disable_bias_correction=(bias_correction == "none"),
                        smooth_quant_alphas=AdvancedSmoothQuantParameters(
                            convolution=-1 if smooth_quant is None else smooth_quant, matmul=-1)),
                )
        except Exception as exc:  # noqa: BLE001 - NNCF raises many types
            raise CaloquantError(f"NNCF quantization failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None

    def accuracy_control(self, calib: np.ndarray, latents: np.ndarray, metric: Any, max_drop: float) -> OpenVINOModel:
        """NNCF's own search: ``quantize_with_accuracy_control`` with our physics metric (higher is better)."""
        nncf = _nncf()

        batches = [calib[i : i + 16] for i in range(0, len(calib), 16)]
        val = [latents[i : i + 100] for i in range(0, len(latents), 100)]

        def validation_fn(compiled: Any, items: Any) -> float:
            out = np.concatenate([np.asarray(compiled(x)[0]) for x in items])
            return float(metric(out)) if len(out) == len(latents) else 0.0

        try:
            with _quiet_nncf():
                q = nncf.quantize_with_accuracy_control(
                    self.fp_model, nncf.Dataset(batches), nncf.Dataset(val), validation_fn=validation_fn,
                    max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.PERFORMANCE,
                    subset_size=len(batches))
        except Exception as exc:  # noqa: BLE001
            raise CaloquantError(f"NNCF accuracy control failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        kept_int8 = set()
        for op in q.get_ordered_ops():
            if op.get_type_name() == "FakeQuantize":
                for t in op.output(0).get_target_inputs():
                    kept_int8.add(t.get_node().get_friendly_name())
        lp = {short_name(u): ("int8" if u in kept_int8 else "fp32") for u in self.units(calib)}
        return OpenVINOModel([(q, "f32")], self.threads, lp, self.compact)

    def unit_label(self, unit: str) -> str:
        return short_name(unit)

    def fake_quant_plan(self, calib: np.ndarray, int8_units: Sequence[str], calibration: str) -> list[FakeQuant]:
        """Read NNCF's int8 arithmetic for these units off the quantized model: each unit's input
        FakeQuantize (range and levels) and the compressed weights (int8 values times a
        per-channel scale) of the convolution or MatMul it feeds, found by following ops that do
        not change values (reshape, pad, nearest upsampling); the torch module is named in the
        op's name (``__module.conv2.conv/aten::_convolution``). Bias correction off: QAT learns
        its own biases."""
        units = self.units(calib)
        chosen = [u for u in units if u in set(int8_units)]
        q = self._quantize(calib, [u for u in units if u not in chosen], calibration, "none")
        plan: list[FakeQuant] = []
        for op, _ in _input_quantizers(q).values():
            consumers = [t.get_node() for t in op.output(0).get_target_inputs()]
            unit = next((c.get_friendly_name() for c in consumers if c.get_friendly_name() in chosen), None)
            if unit is None:
                continue
            low, high = (np.asarray(op.input_value(i).get_node().get_data()) for i in (1, 2))
            if low.size != 1:
                raise CaloquantError(f"{short_name(unit)}: per-channel activation quantizer; QAT supports per-tensor ones")
            levels = int(op.get_attributes()["levels"])
            for c in consumers:
                target = _compute_op(c)
                name = target.get_friendly_name()
                m = _MODULE.match(name)
                if m is None:
                    raise CaloquantError(f"{short_name(unit)}: int8 input of {name}, which is not a torch module's convolution or linear layer")
                w = np.abs(np.asarray(self._fp_ops[name].input_value(1).get_node().get_data(), dtype=np.float64))
                ratio, bound = _weight_grid(target.input_value(1).get_node(), w.reshape(w.shape[0], -1).max(axis=1))
                plan.append(FakeQuant(short_name(unit), m.group(1), float(low.reshape(-1)[0]), float(high.reshape(-1)[0]),
                                      levels, ratio, bound))
        return plan

    def units(self, calib: np.ndarray) -> list[str]:
        """Quantization units: the ops NNCF puts int8 quantizers in front of by default."""
        if self._units is None:
            q = self._nncf_quantize(calib[: min(len(calib), 32)], [], "minmax")
            names: list[str] = []
            for op in q.get_ordered_ops():
                if op.get_type_name() == "FakeQuantize":
                    for t in op.output(0).get_target_inputs():
                        n = t.get_node().get_friendly_name()
                        if t.get_node().get_type_name() != "FakeQuantize" and n not in names:
                            names.append(n)
            self._units = names
        return self._units

    def int8_model(self, calib: np.ndarray, int8_units: Sequence[str] | None, calibration: str, float_precision: str = "fp32",
                   bias_correction: str | None = None, smooth_quant: float | None = None,
                   f32_from: str | None = None) -> OpenVINOModel:
        units = self.units(calib)
        chosen = units if int8_units is None else [u for u in units if u in set(int8_units)]
        ignored = [u for u in units if u not in chosen]
        q = self._quantize(calib, ignored, calibration, bias_correction or "fast", smooth_quant)
        # what the engine's model has, not what was asked: NNCF may keep a unit's quantizer when
        # the next unit is ignored (moved past a reshape) or drop one it finds useless
        fed = set().union(*(labels for _, labels in _input_quantizers(q).values()))
        lp = {short_name(u): ("int8" if short_name(u) in fed else float_precision) for u in units}
        parts, lp = self._split(q, HINTS[float_precision], f32_from, lp)
        return OpenVINOModel(parts, self.threads, lp, self.compact, f32_from=None if f32_from is None else short_name(f32_from))
