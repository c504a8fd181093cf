"""The machine a benchmark ran on: CPU, cores, ISA flags, library versions, load; resident
memory of this process; a fixed torch matmul that shows how fast the host is right now
(the roofline's ceilings are in ``caloquant.bench.ceilings``)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.runtime import RELEVANT_FLAGS, cpuinfo, usable_cores
from caloquant.timing import OtherLoad

LIBRARIES = (
    "caloquant",
    "torch",
    "numpy",
    "openvino",
    "nncf",
    "onnxruntime",
    "onnx",
    "torchao",
    "psutil",
)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def machine_info() -> dict[str, Any]:
    """CPU model, cores, relevant ISA flags, memory, OS and library versions."""
    ci = cpuinfo()
    flags = set(ci.get("flags", "").split())
    phys = None
    with contextlib.suppress(Exception):
        import psutil

        phys = psutil.cpu_count(logical=False)
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "cpu_model": ci.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": ci.get("vendor_id"),
        "logical_cores": os.cpu_count(),
        "physical_cores": phys,
        "usable_cores": usable_cores(),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
        "memory_gib": mem_total,
        "hypervisor": "hypervisor" in flags,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": _versions(),
    }


# --- other load during a measurement -----------------------------------------------------------


def wait_for_quiet(
    max_other_pct: float = 10.0, timeout_s: float = 600.0, window_s: float = 2.0
) -> float | None:
    """Wait until other processes use less than ``max_other_pct`` of the machine over a window;
    returns the last reading (or None without /proc/stat). Gives up after ``timeout_s``."""
    end = time.perf_counter() + timeout_s
    while True:
        with OtherLoad() as ol:
            time.sleep(window_s)
        if ol.pct is None or ol.pct < max_other_pct or time.perf_counter() > end:
            return ol.pct


# --- resident memory -------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - no psutil: fall back to the (monotonic) peak
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so the next RSS baseline is clean."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class RssSampler:
    """Polls this process's RSS in a background thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# --- matmul throughput ------------------------------------------------------------------------


def matmul_fn(dtype: str, n: int) -> Any:
    """An n x n matmul of ``dtype`` in torch (int8: ``torch._int_mm``), as a no-argument call."""
    import torch

    g = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, generator=g)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, generator=g)
        return lambda: torch._int_mm(a, b)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, generator=g).to(dt)
    b = torch.randn(n, n, generator=g).to(dt)
    return lambda: torch.mm(a, b)


def _matmul_seconds(dtype: str, n: int, budget_s: float) -> list[float]:
    """Seconds of each call of an n x n matmul (2 n^3 ops) over ``budget_s``, at least 3
    calls, after two warm-up calls. Time-boxed: when the first call alone exceeds the budget
    (a dtype without native kernels, e.g. fp16 on a CPU without fp16 arithmetic, runs at a
    few GFLOP/s), that call is the only measurement."""
    fn = matmul_fn(dtype, n)
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > budget_s:
        return [first]
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def host_probe(n: int = 512, budget_s: float = 0.04) -> dict[str, float | None]:
    """How fast this machine is right now: 1-thread fp32 and int8 matmul, median call rate over
    ``budget_s`` each. A fixed workload, so its changes over a run are the host's, not a model's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, float | None] = {}
    try:
        for dt in ("fp32", "int8"):
            try:
                out[dt] = round(
                    2 * n**3 / float(np.median(_matmul_seconds(dt, n, budget_s))) / 1e9, 1
                )
            except (RuntimeError, NotImplementedError):
                out[dt] = None
    finally:
        torch.set_num_threads(before)
    return out


def memory_bandwidth_gbs(mb: int = 256, budget_s: float = 0.2) -> float:
    """Best single-thread copy bandwidth (read + write bytes per second), GB/s."""
    import numpy as np

    a = np.ones(mb * 2**20 // 8)
    b = np.empty_like(a)
    np.copyto(b, a)
    best, start, reps = 0.0, time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t0))
        reps += 1
    return round(best / 1e9, 1)
