"""Per-op time profiles in six categories, shared by the backends' own profilers.

Each backend times its calls with its engine's profiler (OpenVINO performance counters, ONNX
Runtime session profiling, torch.profiler) and sorts op time into these categories with
:func:`categorize`; :func:`summary` turns the sums into shares that add up to 100 %, with
``coverage`` = summed op time over the wall time of the calls (below 1: time outside ops,
e.g. framework overhead, input/output copies).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

CATEGORIES = (
    "convolution",
    "normalization",
    "activation",
    "quantize/dequantize",
    "layout",
    "other",
)
CATEGORY_HELP = {
    "convolution": "convolutions, transposed convolutions, dense / matmul "
    "(quantized variants included)",
    "normalization": "batch normalization (when not fused)",
    "activation": "ReLU, LeakyReLU and friends (when not fused)",
    "quantize/dequantize": "quantize, dequantize, fake-quantize and precision casts "
    "(fp32 <-> bf16/fp16)",
    "layout": "layout conversion: reorders, transposes, reshapes, concatenation",
    "other": "upsampling, padding, element-wise glue, anything else",
}

_ACT = r"relu|leaky|prelu|elu\b|gelu|sigmoid|tanh|swish|silu|clamp|hardtanh|mish"
_NORM = r"batch_?norm|layer_?norm|group_?norm|instance_?norm|mvn|normalize"
# (de)quantize ops proper (a quantized convolution like QLinearConv is a convolution)
_QDQ = (
    r"(^|::|dynamic)(de)?quantize|fakequant|fake_quant|"
    r"^convert$|^cast$|aten::to$|aten::_to_copy|_to_dtype"
)
_CONV = r"conv|matmul|gemm|fullyconnected|addmm|aten::mm$|linear|bmm"
_LAYOUT = (
    r"reorder|transpose|permute|reshape|squeeze|unsqueeze|view|"
    r"contiguous|clone|concat|\bcat\b|aten::cat|flatten|stack|_reshape_alias"
)
_OTHER = r"interpolate|upsample|resize|pad|dropout"


def categorize(name: str) -> str | None:
    """Category of an op/node name or type, or None if the name says nothing (e.g. ``copy_``)."""
    n = name.lower()
    for cat, pat in (
        ("quantize/dequantize", _QDQ),
        ("normalization", _NORM),
        ("activation", _ACT),
        ("convolution", _CONV),
        ("layout", _LAYOUT),
        ("other", _OTHER),
    ):
        if re.search(pat, n):
            return cat
    return None


def summary(
    times: dict[str, float], per_op: dict[str, float], wall_ms: float, calls: int, **extra: Any
) -> dict[str, Any]:
    total = sum(times.values())
    shares = {c: (100.0 * times.get(c, 0.0) / total if total > 0 else 0.0) for c in CATEGORIES}
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    return {
        "shares_pct": {c: round(v, 2) for c, v in shares.items()},
        "ops_ms_per_call": round(total / calls, 3),
        "wall_ms_per_call": round(wall_ms / calls, 3),
        "coverage": round(total / wall_ms, 3) if wall_ms > 0 else None,
        "top_ops": [
            {"op": k, "share_pct": round(100 * v / total, 2) if total else 0.0} for k, v in top
        ],
        "calls": calls,
        **extra,
    }


def timed_calls(fn: Any, x: np.ndarray, min_calls: int, budget_s: float) -> tuple[int, float]:
    n, start = 0, time.perf_counter()
    while n < min_calls or time.perf_counter() - start < budget_s:
        fn(x)
        n += 1
    return n, 1000 * (time.perf_counter() - start)


@contextlib.contextmanager
def quiet_stderr_fd() -> Iterator[None]:
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
