"""The machine a benchmark ran on: CPU, cores, ISA flags, library versions, load; resident
memory of this process; and measured matrix-throughput ceilings (the roofline's roof)."""

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
CEILING_DTYPES = ("fp32", "bf16", "fp16", "int8")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _cpu_pressure() -> float | None:
    """Share of the last 10 s in which runnable tasks waited for a CPU (Linux PSI), in %."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(first.split("avg10=")[1].split()[0])
    return None


def load_snapshot() -> dict[str, Any]:
    """How busy the machine is (other processes distort timings): load averages and CPU pressure."""
    try:
        la = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        la = None
    return {
        "loadavg_1_5_15": la,
        "cpu_pressure_avg10_pct": _cpu_pressure(),
        "time_unix": round(time.time(), 1),
    }


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

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy (all CPUs; steal time included)."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[1:9])
        return (user + nice + system + irq + softirq + steal) / _HZ
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """Share of the machine's CPU capacity used by anything but this process (other processes,
    hypervisor steal) while the block runs, in % (None where /proc/stat is missing). Other load
    slows the benchmark down: 50 % on 2 cores is one core taken away."""

    def __enter__(self) -> OtherLoad:
        self.pct: float | None = None
        self._t, self._busy, self._self = (
            time.perf_counter(),
            _machine_busy_s(),
            sum(os.times()[:2]),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _machine_busy_s()
        wall = time.perf_counter() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (sum(os.times()[:2]) - self._self)
        self.pct = round(max(0.0, 100 * other / (wall * (os.cpu_count() or 1))), 1)


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


# --- compute ceilings ------------------------------------------------------------------------


def _matmul_fn(dtype: str, n: int) -> Any:
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
    fn = _matmul_fn(dtype, n)
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


def measure_ceilings(
    thread_counts: list[int], budget_s: float = 0.25, sizes: tuple[int, ...] = (1024, 2048)
) -> dict[str, Any]:
    """Best measured square-matmul throughput (GFLOP/s; GOP/s for int8) per dtype and thread count.

    torch.mm (oneDNN/MKL) for fp32, bf16, fp16 and torch._int_mm (oneDNN, VNNI/AMX int8) for
    int8; the best of repeated calls over two sizes, after a warm-up. One op = one multiply or
    one add (a multiply-accumulate counts 2), the same convention as the model FLOP counts.
    """
    import torch

    before = torch.get_num_threads()
    out: dict[str, Any] = {
        "method": "square matmul, best of repeated calls (torch.mm; torch._int_mm for int8)",
        "budget_s_per_point": budget_s,
        "sizes": list(sizes),
        "gflops": {},
    }
    try:
        with OtherLoad() as ol:
            _measure(out, thread_counts, budget_s, sizes)
        out["other_load_pct"] = ol.pct
        counts = sorted(thread_counts)
        for lo, hi in zip(counts, counts[1:]):
            a, b = out["gflops"][str(lo)], out["gflops"][str(hi)]
            slow = [d for d in CEILING_DTYPES if a[d] and b[d] and b[d] < 0.9 * a[d]]
            if slow:
                out.setdefault("warnings", []).append(
                    f"{hi}-thread ceiling below the {lo}-thread one for {', '.join(slow)}: "
                    "other work was running"
                )
        if ol.pct is not None and ol.pct > 10:
            out.setdefault("warnings", []).append(
                f"other processes used {ol.pct:.0f} % of the CPUs while the ceilings were measured"
            )
    finally:
        torch.set_num_threads(before)
    return out


def _measure(
    out: dict[str, Any], thread_counts: list[int], budget_s: float, sizes: tuple[int, ...]
) -> None:
    """Fill ``out['gflops'][threads][dtype]`` with the best rate over ``sizes`` (ascending);
    a size whose single call exceeded the budget ends that dtype's sizes (noted in the JSON)."""
    import torch

    for t in thread_counts:
        torch.set_num_threads(t)
        row: dict[str, float | None] = {}
        for dt in CEILING_DTYPES:
            best = 0.0
            try:
                for n in sorted(sizes):
                    times = _matmul_seconds(dt, n, budget_s)
                    best = max(best, 2 * n**3 / min(times))
                    if len(times) == 1:
                        out.setdefault("time_boxed", []).append(
                            f"{dt} at {t} thread(s): one {n}x{n} call took {times[0]:.2f} s "
                            f"(> {budget_s} s budget): "
                            "no fast native kernel on this CPU; larger sizes skipped"
                        )
                        break
                row[dt] = round(best / 1e9, 1)
            except (RuntimeError, NotImplementedError):  # no kernel for this dtype on this build
                row[dt] = None
        out["gflops"][str(t)] = row


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
