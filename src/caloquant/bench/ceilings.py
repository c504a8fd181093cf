"""The roofline's roof: the best matrix-multiply throughput of each engine at each precision,
measured in the run with the same engine, precision hint and thread count as the models it is
compared with.

A ceiling borrowed from another engine says nothing about a model: on an AVX2 CPU without
VNNI ``torch._int_mm`` has no fast kernel (about 1 GOP/s) while OpenVINO's own int8 kernels
run, and an OpenVINO int8 model came out at 6,560 % of "the int8 ceiling". So every engine
is measured on its own: ``torch.mm`` / ``torch._int_mm``; an OpenVINO MatMul with constant
weights (the plugin's FullyConnected, what a dense layer compiles to) compiled with an explicit
``INFERENCE_PRECISION_HINT`` and ``INFERENCE_NUM_THREADS``, int8 as FakeQuantize u8 activations
x i8 weights (the pattern NNCF writes; the plugin runs it as an int8 FullyConnected); an ONNX
Runtime MatMul with ``intra_op_num_threads``, int8 as QDQ (fused by ONNX Runtime into an
integer matmul). A precision an engine has no measurement for has no ceiling (None, with the
reason), never another engine's.

Each point is one time-boxed window of :func:`caloquant.timing.time_streams` (a warm-up, then
calls until the budget is spent; a first call over the budget is the only measurement) and the
ceiling is its fastest call. One op is one multiply or one add (a multiply-accumulate counts 2),
the convention of the model FLOP counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from caloquant.bench.machine import matmul_fn
from caloquant.timing import OtherLoad, TimingConfig, time_streams

CEILING_DTYPES = ("fp32", "bf16", "fp16", "int8")
# OpenVINO: the hint each precision is compiled with (an int8 model's float rest runs f32)
OV_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
METHODS = {
    "torch": "torch.mm (torch._int_mm for int8), torch threads set in the timing thread",
    "openvino": "OpenVINO MatMul with constant weights (the plugin's FullyConnected), "
    "INFERENCE_PRECISION_HINT f32/bf16/f16, INFERENCE_NUM_THREADS = threads, NUM_STREAMS 1, "
    "PERFORMANCE_HINT LATENCY; int8: FakeQuantize u8 activations x i8 weights, hint f32",
    "onnxruntime": "ONNX Runtime MatMul (CPU provider, intra_op_num_threads = threads); "
    "fp16: float16 graph (ONNX Runtime adds casts where the CPU has no float16 kernel); "
    "int8: QuantizeLinear/DequantizeLinear around MatMul (fused into an integer matmul)",
}
# what an engine's ceiling of a precision cannot be measured with, said once
NO_KERNEL = {("onnxruntime", "bf16"): "ONNX Runtime builds no bf16 model (no bf16 ceiling)"}

# a runner on its input, and what the engine executes (None: not read back)
Kernel = tuple[Callable[[np.ndarray], Any], np.ndarray, str | None]


def ceiling_key(precision: str) -> str:
    """The ceiling table entry of one precision (anything else: fp32)."""
    return precision if precision in CEILING_DTYPES else "fp32"


def ceiling_keys(precision: str, executed: str | None = None) -> list[str]:
    """The ceilings that bound a model: one per precision it executes ('int8+fp32': int8 and
    fp32; no executed precision known: the one asked). A model whose layers run in several
    precisions cannot beat the fastest of their kernels (on AVX2 that is fp32, not int8: the
    int8 matmul without VNNI runs at half fp32's rate), so its ceiling is the largest."""
    parts = (executed or precision).split("+")
    return list(dict.fromkeys(ceiling_key(p) for p in parts))


def _input(n: int, dtype: Any = np.float32) -> np.ndarray:
    # non-negative: inside the u8 range of the int8 kernels' activation quantizer
    return np.abs(np.random.default_rng(1).standard_normal((n, n))).astype(dtype)


def _torch_kernel(dtype: str, n: int, threads: int) -> Kernel:
    import torch

    mm = matmul_fn(dtype, n)

    def run(_: np.ndarray) -> Any:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # in the timing thread, as the torch backend does
        return mm()

    return run, _input(1), dtype


def _openvino_kernel(dtype: str, n: int, threads: int) -> Kernel:
    import openvino as ov
    import openvino.opset13 as ops

    def const(v: Any) -> Any:
        return ops.constant(np.asarray(v, dtype=np.float32))

    def fq(x: Any, lo: float, hi: float, levels: int) -> Any:
        return ops.fake_quantize(x, const(lo), const(hi), const(lo), const(hi), levels)

    x = ops.parameter([n, n], ov.Type.f32, name="x")
    w = const(np.random.default_rng(0).standard_normal((n, n)))
    a, b = (fq(x, 0.0, 4.0, 256), fq(w, -4.0, 4.0, 255)) if dtype == "int8" else (x, w)
    model = ov.Model([ops.matmul(a, b, False, False)], [x], f"matmul_{dtype}_{n}")
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": OV_HINTS[dtype],
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    executed = [
        o.get_rt_info()["runtimePrecision"].astype(str)
        for o in compiled.get_runtime_model().get_ordered_ops()
        if o.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")
    ]
    req = compiled.create_infer_request()
    return lambda v: req.infer({0: v}), _input(n), ",".join(executed) or None


def _onnxruntime_kernel(dtype: str, n: int, threads: int) -> Kernel:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    np_dt, onnx_dt = (
        (np.float16, TensorProto.FLOAT16) if dtype == "fp16" else (np.float32, TensorProto.FLOAT)
    )
    if dtype == "int8":
        inits = [
            numpy_helper.from_array((w * 30).clip(-127, 127).astype(np.int8), "w_q"),
            numpy_helper.from_array(np.array(1 / 30, np.float32), "w_s"),
            numpy_helper.from_array(np.array(4 / 127, np.float32), "x_s"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_s", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "x_s", "zp"], ["xd"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_s", "zp"], ["wd"]),
            helper.make_node("MatMul", ["xd", "wd"], ["y"]),
        ]
    else:
        inits = [numpy_helper.from_array(w.astype(np_dt), "wd")]
        nodes = [helper.make_node("MatMul", ["x", "wd"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "matmul",
        [helper.make_tensor_value_info("x", onnx_dt, [n, n])],
        [helper.make_tensor_value_info("y", onnx_dt, [n, n])],
        inits,
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    sess = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
        so,
        providers=["CPUExecutionProvider"],
    )
    return lambda v: sess.run(None, {"x": v}), _input(n, np_dt), None


KERNELS: dict[str, Callable[[str, int, int], Kernel]] = {
    "torch": _torch_kernel,
    "openvino": _openvino_kernel,
    "onnxruntime": _onnxruntime_kernel,
}


def _point(kernel: Kernel, n: int, budget_s: float) -> tuple[float, int]:
    """GFLOP/s of the fastest call in one time-boxed window, and the number of calls."""
    fn, x, _ = kernel
    cfg = TimingConfig(
        window_s=budget_s,
        rounds=1,
        warmup_s=budget_s / 4,
        min_calls=3,
        max_calls=100_000,
        first_call_budget_s=budget_s,
    )
    r = time_streams([fn], [x], cfg)
    return 2 * n**3 / (float(np.min(r["call_ms"])) / 1e3) / 1e9, int(r["calls"])


def _measure_engine(
    engine: str, dtypes: Iterable[str], counts: list[int], budget_s: float, sizes: tuple[int, ...]
) -> dict[str, Any]:
    """``gflops[threads][dtype]`` (None: no ceiling, the reason in ``missing[dtype]``), what the
    engine executed per dtype, and the points a slow first call cut short (``time_boxed``)."""
    out: dict[str, Any] = {"method": METHODS.get(engine, ""), "gflops": {}, "executed": {}}
    dtypes = [d for d in CEILING_DTYPES if d in set(dtypes)]
    for t in counts:
        row: dict[str, float | None] = {}
        for dt in dtypes:
            row[dt] = None
            if (engine, dt) in NO_KERNEL or engine not in KERNELS:
                reason = NO_KERNEL.get((engine, dt), f"no {engine} microbenchmark")
                out.setdefault("missing", {})[dt] = f"no ceiling: {reason}"
                continue
            try:
                for n in sorted(sizes):
                    kernel = KERNELS[engine](dt, n, t)
                    out["executed"][dt] = kernel[2]
                    gflops, calls = _point(kernel, n, budget_s)
                    row[dt] = round(max(row[dt] or 0.0, gflops), 1)
                    if calls == 1:
                        out.setdefault("time_boxed", []).append(
                            f"{engine} {dt} at {t} thread(s): one {n}x{n} call exceeded the "
                            f"{budget_s} s budget: no fast kernel on this CPU; larger sizes skipped"
                        )
                        break
            except Exception as exc:  # noqa: BLE001 - an engine without a kernel for this dtype
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                out.setdefault("missing", {})[dt] = f"no ceiling: {engine} {dt} failed: {first}"
                row[dt] = None
        out["gflops"][str(t)] = row
    return out


def measure_ceilings(
    thread_counts: list[int],
    engines: Mapping[str, Iterable[str]] | None = None,
    budget_s: float = 0.25,
    sizes: tuple[int, ...] = (1024, 2048),
) -> dict[str, Any]:
    """Best measured square-matmul throughput (GFLOP/s; GOP/s for int8) per engine, precision
    and thread count: ``engines[engine]["gflops"][threads][precision]``.

    ``engines``: the precisions to measure per engine (those of the run's models); torch is
    always measured at every precision, and its table is also ``gflops`` (the key older
    readers use)."""
    import torch

    wanted: dict[str, set[str]] = {"torch": set(CEILING_DTYPES)}
    for eng, dts in (engines or {}).items():
        wanted.setdefault(eng, set()).update(ceiling_key(d) for d in dts)
    before = torch.get_num_threads()
    out: dict[str, Any] = {
        "method": "square matmul with the engine and precision of the models, fastest call of a "
        "time-boxed window after a warm-up, over two sizes",
        "budget_s_per_point": budget_s,
        "sizes": list(sizes),
        "engines": {},
    }
    counts = sorted(thread_counts)
    try:
        with OtherLoad() as ol:
            for eng in sorted(wanted, key=lambda e: (e != "torch", e)):
                out["engines"][eng] = _measure_engine(eng, wanted[eng], counts, budget_s, sizes)
    finally:
        torch.set_num_threads(before)
    out["gflops"] = out["engines"]["torch"]["gflops"]
    out["other_load_pct"] = ol.pct
    for eng, e in out["engines"].items():
        for lo, hi in zip(counts, counts[1:]):
            a, b = e["gflops"][str(lo)], e["gflops"][str(hi)]
            slow = [d for d in a if a[d] and b.get(d) and b[d] < 0.9 * a[d]]
            if slow:
                out.setdefault("warnings", []).append(
                    f"{eng}: {hi}-thread ceiling below the {lo}-thread one for "
                    f"{', '.join(slow)}: other work was running"
                )
    if ol.pct is not None and ol.pct > 10:
        out.setdefault("warnings", []).append(
            f"other processes used {ol.pct:.0f} % of the CPUs while the ceilings were measured"
        )
    return out


def merge_ceilings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Best of two ceiling measurements (start and end of the run), both kept."""

    def best(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
        return {
            t: {
                d: max((v for v in (x[t][d], y.get(t, {}).get(d)) if v is not None), default=None)
                for d in x[t]
            }
            for t in x
        }

    out = dict(a)
    out["engines"] = {
        eng: {**e, "gflops": best(e["gflops"], b["engines"].get(eng, {}).get("gflops", {}))}
        for eng, e in a["engines"].items()
    }
    out["gflops"] = out["engines"]["torch"]["gflops"]
    out["measurements"] = [
        {"when": w, "engines": {k: e["gflops"] for k, e in m["engines"].items()}}
        | {"other_load_pct": m.get("other_load_pct")}
        for w, m in (("start", a), ("end", b))
    ]
    out["warnings"] = a.get("warnings", []) + b.get("warnings", [])
    out["method"] = (
        a["method"] + "; best of a measurement at the start and one at the end of the run"
    )
    return out


def ceiling_for(
    ceilings: dict[str, Any], backend: str, precision: str, threads: int
) -> tuple[float | None, str | None]:
    """The ceiling of ``backend`` at ``precision`` and ``threads`` (GFLOP/s), or None and why.
    Never another engine's: a report from before per-engine ceilings has torch's only."""
    key = ceiling_key(precision)
    engines = ceilings.get("engines") or {"torch": {"gflops": ceilings.get("gflops", {})}}
    e = engines.get(backend)
    if e is None:
        return None, f"no ceiling: {backend} was not measured"
    if key in e.get("missing", {}):
        return None, e["missing"][key]
    val = e["gflops"].get(str(threads), {}).get(key)
    if val is None:
        return None, f"no ceiling: no {backend} {key} measurement at {threads} thread(s)"
    return val, None
