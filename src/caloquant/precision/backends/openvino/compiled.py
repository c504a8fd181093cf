"""The OpenVINO engine model: one or more consecutive ``ov.Model`` parts, each compiled for the
CPU with its own inference-precision hint; run, saved as IR, reloaded, profiled."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.precision.backends import Runner
from caloquant.precision.backends.openvino.graph import compact_weights, short_name, split_at
from caloquant.precision.backends.opprofile import categorize, summary

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
EXECUTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# nodes the CPU plugin folds into a convolution: batch-norm becomes a multiply-add, a
# dequantization scale a PowerStatic
_FUSED = {"MulAdd": "normalization", "PowerStatic": "quantize/dequantize"}
# a Reorder whose name encodes a precision change, e.g. 'z_f32_bf16___module.dense...'
_CAST_REORDER = re.compile(r"_(f32|bf16|f16|i8|u8)_(f32|bf16|f16|i8|u8)_")
# element-wise nodes: their category is in the name of the op they were made from
_ELTWISE = ("Eltwise", "Subgraph", "MulAdd", "Multiply", "Add", "PowerStatic")
# the runtime graph's names for the layers whose precision is reported
_RUNTIME_LAYERS = ("Convolution", "FullyConnected")


def float_parts(
    model: Any, hint: str, f32_from: str | None, lp: dict[str, str]
) -> tuple[list[tuple[Any, str]], dict[str, str]]:
    """The parts to compile for a float part at ``hint`` that turns to f32 at the unit
    ``f32_from`` (None, or an f32 hint: one part), and the layer precisions after the cut."""
    if f32_from is None or hint == "f32":
        return [(model, hint)], lp
    cut = split_at(model, f32_from)
    if cut is None:
        raise CaloquantError(
            f"the graph cannot be cut at the input of {short_name(f32_from)} "
            f"(not a single tensor between the two parts); "
            f"choose another split point"
        )
    head, tail = cut
    in_tail = {short_name(o.get_friendly_name()) for o in tail.get_ordered_ops()}
    return [(head, hint), (tail, "f32")], {
        k: ("fp32" if k in in_tail and v != "int8" else v) for k, v in lp.items()
    }


def _runs_as(compiled: Any) -> str:
    """The float precision a compiled model runs in: the plugin's own answer to the hint."""
    prop = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: 'f32', 'bf16', 'f16'
    name = prop.get_type_name() if hasattr(prop, "get_type_name") else str(prop)
    return EXECUTED.get(name, name)


class OpenVINOModel:
    """A compiled OpenVINO model: callable on latents, saveable as IR.

    ``parts``: consecutive OpenVINO models with the inference-precision hint each is compiled
    with; the output of one is the input of the next (one part: an ordinary model; two: a
    float part split by :func:`~caloquant.precision.backends.openvino.graph.split_at`, e.g.
    bf16 up to a layer and f32 from there), compiled as they are. ``compacted``: the layers
    whose float kernels these parts store compactly (recorded in the manifest);
    ``f32_from``: the unit where a split model turns to f32. The backend builds its models
    with :meth:`build`, which stores the kernels compactly first."""

    def __init__(
        self,
        parts: list[tuple[Any, str]],
        threads: int | None,
        layer_precisions: dict[str, str],
        compacted: list[str] | None = None,
        f32_from: str | None = None,
    ) -> None:
        self.parts, self.threads, self.f32_from = parts, threads, f32_from
        self.compacted = list(compacted or [])
        self.hint = parts[0][1]
        self._compiled = self._compile(threads, 1)
        self.layer_precisions = self._as_executed(layer_precisions)
        self._requests = [c.create_infer_request() for c in self._compiled]

    @classmethod
    def build(
        cls,
        parts: list[tuple[Any, str]],
        threads: int | None,
        layer_precisions: dict[str, str],
        compact: dict[str, Any] | None,
        f32_from: str | None = None,
        scope: str | None = None,
    ) -> OpenVINOModel:
        """The model with the float kernels of ``compact`` (sub-pixel-rewritten convolutions,
        name -> UpsampledConv; None: none) and large float MatMul weights stored compactly
        (:func:`~caloquant.precision.backends.openvino.graph.compact_weights`); it is compiled
        from that same compact form, so what is evaluated is exactly what is saved. ``scope``:
        the model's quantized scope (weights outside it stay float32)."""
        made = [compact_weights(m, compact, scope) for m, _ in parts]
        compacted = list(dict.fromkeys(n for _, names in made for n in names))  # graph order
        return cls(
            [(m, h) for (m, _), (_, h) in zip(made, parts)],
            threads,
            layer_precisions,
            compacted,
            f32_from,
        )

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
                # always explicit: the CPU plugin picks bf16 by itself on AMX/AVX512-BF16
                "INFERENCE_PRECISION_HINT": hint,
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
            return lambda x: np.asarray(
                req.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[0]
            )

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
        opts: dict[str, Any] = {
            "inference_precision_hint": self.hint,
            "compact_kernels": list(self.compacted),
        }
        if len(self.parts) > 1:
            opts["parts"] = [
                {"file": f, "inference_precision_hint": h}
                for f, (_, h) in zip(self._files(), self.parts)
            ]
            opts["f32_from"] = self.f32_from
        return opts

    def _files(self) -> list[str]:
        return ["model.xml"] + [f"model_part{i}.xml" for i in range(1, len(self.parts))]

    def executed_precision(self) -> str:
        """The plugin's own answer, part by part: on a CPU without fp16 arithmetic an f16 hint
        runs as bf16; 'int8+bf16+fp32' for an int8 model whose float part is split."""
        names: list[str] = []
        for c in self._compiled:
            if _runs_as(c) not in names:
                names.append(_runs_as(c))
        return "+".join((["int8"] if "int8" in self.layer_precisions.values() else []) + names)

    def _as_executed(self, lp: dict[str, str]) -> dict[str, str]:
        """Layer precisions as the plugin executes them: where the first part's hint runs as
        another precision (bf16 as fp32 on a CPU without bf16 arithmetic, fp16 as bf16 without
        fp16 arithmetic), its float layers are labelled with what runs. (The other parts are
        fp32, labelled so by :func:`float_parts`.)"""
        asked, ran = EXECUTED.get(self.hint, self.hint), _runs_as(self._compiled[0])
        return lp if ran == asked else {k: (ran if v == asked else v) for k, v in lp.items()}

    def runtime_precisions(self) -> list[list[tuple[str, str]]]:
        """Per compiled part, in the plugin's execution order: (layer, precision it runs in) of
        every convolution and fully connected layer, read off the compiled runtime graph
        (``runtimePrecision``: e.g. 'bf16', 'f32', 'i8'); the layer is the torch module's name
        where the op carries one ('conv2.conv'), else the op's name. What the plugin really
        does per layer, where :meth:`executed_precision` gives the hint per part."""
        out = []
        for c in self._compiled:
            ops = [
                o
                for o in c.get_runtime_model().get_ordered_ops()
                if o.get_rt_info()["layerType"].astype(str) in _RUNTIME_LAYERS
            ]
            out.append(
                [
                    (
                        o.get_friendly_name().split("/")[0].replace("__module.", ""),
                        o.get_rt_info()["runtimePrecision"].astype(str),
                    )
                    for o in ops
                ]
            )
        return out

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One compiled model per part with the plugin's own stream executor (it pins stream
        threads to cores and caps the total at the core count) and one chain of infer requests
        per stream."""
        compiled = self._compile(threads, streams)
        eff = {
            "streams": int(compiled[0].get_property("NUM_STREAMS")),
            "threads_total": int(compiled[0].get_property("INFERENCE_NUM_THREADS")),
        }
        chains = [self._chain([c.create_infer_request() for c in compiled]) for _ in range(streams)]
        return chains, eff

    def profile(
        self, latent: np.ndarray, threads: int, min_calls: int, budget_s: float
    ) -> dict[str, Any]:
        """Performance counters (``PERF_COUNT``) of the executed graph (every part); ops the
        plugin fused into a convolution cost nothing on their own and are counted in
        ``fused_ops``."""
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
                        cat = (
                            _FUSED.get(p.node_type)
                            or categorize(p.node_type)
                            or categorize(p.node_name)
                            or "other"
                        )
                        fused[cat] += 1
                    continue
                if p.node_type == "Reorder" and _CAST_REORDER.search(p.node_name):
                    cat = "quantize/dequantize"
                elif p.node_type in _ELTWISE:
                    cat = categorize(p.node_name) or "other"
                else:
                    cat = categorize(p.node_type) or categorize(p.node_name) or "other"
                times[cat] += ms
                per_op[f"{p.node_type} ({p.exec_type})"] += ms
        return summary(
            times, per_op, wall, n, tool="OpenVINO performance counters", fused_ops=dict(fused)
        )

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
        hint = opts.get("inference_precision_hint")
        listed = opts.get("parts") or [{"file": "model.xml", "inference_precision_hint": hint}]
        parts = []
        for part in listed:
            xml = out_dir / str(part.get("file"))
            if not xml.exists() or not xml.with_suffix(".bin").exists():
                raise CaloquantError(
                    f"{out_dir}: OpenVINO artifact lacks {xml.name} / "
                    f"{xml.with_suffix('.bin').name}"
                )
            if part.get("inference_precision_hint") not in EXECUTED:
                raise CaloquantError(
                    f"{out_dir}: manifest gives {xml.name} no valid inference precision hint"
                )
            try:
                parts.append((ov.Core().read_model(xml), str(part["inference_precision_hint"])))
            except RuntimeError as exc:
                raise CaloquantError(
                    f"{xml}: unreadable OpenVINO model ({str(exc).splitlines()[0][:120]})"
                ) from None
        return cls(
            parts,
            threads,
            manifest.get("layer_precisions", {}),
            list(opts.get("compact_kernels", [])),
            opts.get("f32_from"),
        )
