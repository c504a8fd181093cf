"""Per-op time profile of one model, from each engine's own profiler, in six categories.

* OpenVINO: performance counters (``PERF_COUNT``) of the executed graph; ops the plugin fused
  into a convolution (activation, batch-norm, quantize) cost nothing on their own and are
  counted in ``fused`` instead.
* ONNX Runtime: session profiling (``enable_profiling``), node kernel times, the first run
  (allocation, kernel selection) left out.
* PyTorch: ``torch.profiler`` CPU self times; an op's self time goes to the category of the
  nearest enclosing op that has one (``copy_`` inside ``aten::to`` is a cast, inside
  ``contiguous`` a layout change).

Shares are of the summed op time and add up to 100 %; ``coverage`` is that sum over the wall
time of the calls (below 1: time outside ops, e.g. framework overhead, input/output copies).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.bench.variants import Variant, ort_session, ov_compile

CATEGORIES = ("convolution", "normalization", "activation", "quantize/dequantize", "layout", "other")
CATEGORY_HELP = {
    "convolution": "convolutions, transposed convolutions, dense / matmul (quantized variants included)",
    "normalization": "batch normalization (when not fused)",
    "activation": "ReLU, LeakyReLU and friends (when not fused)",
    "quantize/dequantize": "quantize, dequantize, fake-quantize and precision casts (fp32 <-> bf16/fp16)",
    "layout": "layout conversion: reorders, transposes, reshapes, concatenation",
    "other": "upsampling, padding, element-wise glue, anything else",
}

_ACT = r"relu|leaky|prelu|elu\b|gelu|sigmoid|tanh|swish|silu|clamp|hardtanh|mish"
_NORM = r"batch_?norm|layer_?norm|group_?norm|instance_?norm|mvn|normalize"
# (de)quantize ops proper (a quantized convolution like QLinearConv is a convolution)
_QDQ = r"(^|::|dynamic)(de)?quantize|fakequant|fake_quant|^convert$|^cast$|aten::to$|aten::_to_copy|_to_dtype"
_CONV = r"conv|matmul|gemm|fullyconnected|addmm|aten::mm$|linear|bmm"
_LAYOUT = r"reorder|transpose|permute|reshape|squeeze|unsqueeze|view|contiguous|clone|concat|\bcat\b|aten::cat|flatten|stack|_reshape_alias"
_OTHER = r"interpolate|upsample|resize|pad|dropout"

# nodes the CPU plugin folds into a convolution: batch-norm becomes a multiply-add, a
# dequantization scale a PowerStatic
_OV_FUSED = {"MulAdd": "normalization", "PowerStatic": "quantize/dequantize"}
# a Reorder whose name encodes a precision change, e.g. 'z_f32_bf16___module.dense...'
_CAST_REORDER = re.compile(r"_(f32|bf16|f16|i8|u8)_(f32|bf16|f16|i8|u8)_")


def categorize(name: str) -> str | None:
    """Category of an op/node name or type, or None if the name says nothing (e.g. ``copy_``)."""
    n = name.lower()
    for cat, pat in (("quantize/dequantize", _QDQ), ("normalization", _NORM), ("activation", _ACT),
                     ("convolution", _CONV), ("layout", _LAYOUT), ("other", _OTHER)):
        if re.search(pat, n):
            return cat
    return None


def _summary(times: dict[str, float], per_op: dict[str, float], wall_ms: float, calls: int, **extra: Any) -> dict[str, Any]:
    total = sum(times.values())
    shares = {c: (100.0 * times.get(c, 0.0) / total if total > 0 else 0.0) for c in CATEGORIES}
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    return {
        "shares_pct": {c: round(v, 2) for c, v in shares.items()},
        "ops_ms_per_call": round(total / calls, 3),
        "wall_ms_per_call": round(wall_ms / calls, 3),
        "coverage": round(total / wall_ms, 3) if wall_ms > 0 else None,
        "top_ops": [{"op": k, "share_pct": round(100 * v / total, 2) if total else 0.0} for k, v in top],
        "calls": calls,
        **extra,
    }


def _calls(fn: Any, x: np.ndarray, min_calls: int, budget_s: float) -> tuple[int, float]:
    n, start = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - start < budget_s:
        fn(x)
        n += 1
    return n, 1000 * (time.perf_counter() - start)


def _profile_openvino(v: Variant, x: np.ndarray, threads: int, min_calls: int, budget_s: float) -> dict[str, Any]:
    compiled = ov_compile(v, threads, 1, perf_count=True)
    req = compiled.create_infer_request()
    req.infer({0: x})  # warm-up
    times: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    fused: dict[str, int] = defaultdict(int)
    n, wall = 0, 0.0
    start = time.perf_counter()
    while n < min_calls or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        req.infer({0: x})
        wall += 1000 * (time.perf_counter() - t0)
        n += 1
        for p in req.get_profiling_info():
            ms = p.real_time.total_seconds() * 1000
            if p.status != p.Status.EXECUTED:
                if p.node_type not in ("Parameter", "Result", "Constant") and n == 1:
                    fused[_OV_FUSED.get(p.node_type) or categorize(p.node_type) or categorize(p.node_name) or "other"] += 1
                continue
            if p.node_type == "Reorder" and _CAST_REORDER.search(p.node_name):
                cat = "quantize/dequantize"
            elif p.node_type in ("Eltwise", "Subgraph", "MulAdd", "Multiply", "Add", "PowerStatic"):
                cat = categorize(p.node_name) or "other"
            else:
                cat = categorize(p.node_type) or categorize(p.node_name) or "other"
            times[cat] += ms
            per_op[f"{p.node_type} ({p.exec_type})"] += ms
    return _summary(times, per_op, wall, n, tool="OpenVINO performance counters", fused_ops=dict(fused))


def _profile_onnxruntime(v: Variant, x: np.ndarray, threads: int, min_calls: int, budget_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(v, threads, profile_prefix=str(Path(tmp) / "ort"))
        name = sess.get_inputs()[0].name
        sess.run(None, {name: x})  # warm-up, excluded below
        n, wall = _calls(lambda a: sess.run(None, {name: a}), x, min_calls, budget_s)
        path = sess.end_profiling()
        events = json.loads(Path(path).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_end = runs[0][1] if runs else -1
    times: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] <= first_end:
            continue
        op = str(e.get("args", {}).get("op_name", "?"))
        ms = e["dur"] / 1000.0
        cat = "layout" if op in ("ReorderInput", "ReorderOutput") else (categorize(op) or "other")
        times[cat] += ms
        per_op[op] += ms
    return _summary(times, per_op, wall, n, tool="ONNX Runtime session profiling")


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """The torch profiler's C++ side prints start/stop lines on fd 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profile_torch(v: Variant, x: np.ndarray, threads: int, min_calls: int, budget_s: float) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    fn = v.torch_runner(threads)
    fn(x)  # warm-up (and compilation for int8)
    with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU]) as prof:
        n, wall = _calls(fn, x, min_calls, budget_s)
    times: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    memo: dict[int, str] = {}

    def cat_of(e: Any) -> str:
        key = id(e)
        if key not in memo:
            own = categorize(e.name)
            memo[key] = own if own is not None else (cat_of(e.cpu_parent) if e.cpu_parent is not None else "other")
        return memo[key]

    for e in prof.events():
        ms = e.self_cpu_time_total / 1000.0
        if ms <= 0:
            continue
        times[cat_of(e)] += ms
        per_op[e.name] += ms
    return _summary(times, per_op, wall, n, tool="torch.profiler (CPU self time)")


def profile_variant(v: Variant, x: np.ndarray, threads: int, min_calls: int = 3, budget_s: float = 0.5) -> dict[str, Any]:
    """Time shares per category for ``x`` (one batch) at ``threads`` threads, one stream."""
    fn = {"openvino": _profile_openvino, "onnxruntime": _profile_onnxruntime, "torch": _profile_torch}[v.backend]
    out = fn(v, x, threads, min_calls, budget_s)
    return {"backend": v.backend, "batch": len(x), "threads": threads, **out}
