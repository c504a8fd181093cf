"""Process-wide settings that caloquant changes only for the duration of a call.

Thread counts and library log levels are global state of the caller's process (a notebook,
a framework): every change caloquant makes goes through these context managers and is undone
on exit. ``threads=None`` means: keep whatever the caller has set.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger("caloquant")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore."""
    import torch

    if n is None:
        yield
        return
    if n < 1:
        from caloquant.errors import CaloquantError

        raise CaloquantError(f"threads must be at least 1, got {n}")
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of the named loggers (e.g. 'nncf', 'torch._inductor') for the block."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, names)]
    for lg, _ in saved:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in saved:
            lg.setLevel(lvl)


# ISA flags that decide which kernels the inference engines can use.
RELEVANT_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    import contextlib
    from pathlib import Path

    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                info.setdefault(k, v)
    return info


def cpu_identity() -> dict[str, object]:
    """CPU model, vendor and the ISA flags relevant to inference kernels."""
    import platform

    ci = cpuinfo()
    flags = set(ci.get("flags", "").split())
    return {
        "cpu_model": ci.get("model name") or platform.processor() or platform.machine(),
        "cpu_vendor": ci.get("vendor_id"),
        "flags": [f for f in RELEVANT_FLAGS if f in flags],
        "cpu_class": cpu_class(flags),
    }


def cpu_class(flags: set[str] | list[str]) -> str:
    """The class of CPU that decides which reduced-precision kernels exist (and so which mix of
    int8, bf16 and fp32 is fastest, and whether bf16 is even computed the same way): AMX tiles;
    AVX-512 with bf16 dot products but no AMX; AVX-512 with VNNI int8 only; AVX-512 without
    VNNI; AVX2 with (256-bit) VNNI; plain AVX2. ``+fp16``: fp16 arithmetic (avx512_fp16, or
    AMX fp16 tiles)."""
    f = set(flags)
    fp16 = "+fp16" if f & {"avx512_fp16", "amx_fp16"} else ""
    if {"amx_bf16", "amx_int8"} <= f:
        return "x86-amx" + fp16
    if "avx512_bf16" in f:
        return "x86-avx512-bf16" + fp16
    if "avx512_vnni" in f:
        return "x86-avx512-vnni" + fp16
    if "avx512f" in f:
        return "x86-avx512" + fp16
    if "avx_vnni" in f:
        return "x86-avx2-vnni"
    return "x86-avx2" if "avx2" in f else "other"


def fast_kernels(flags: set[str] | list[str]) -> dict[str, str]:
    """Which reduced-precision arithmetic the CPU has in hardware, per precision, in words (what
    decides whether int8, bf16 or fp16 can beat fp32 on it): int8 dot products (AMX tiles,
    AVX-512 VNNI, AVX-VNNI, or plain AVX2 without a dot-product instruction), bf16 (AMX,
    AVX-512 BF16, or none: OpenVINO then runs a bf16 hint as fp32) and fp16 arithmetic."""
    f = set(flags)
    if "amx_int8" in f:
        int8 = "AMX int8 tiles"
    elif "avx512_vnni" in f:
        int8 = "AVX-512 VNNI dot products"
    elif "avx_vnni" in f:
        int8 = "AVX-VNNI (256-bit) dot products"
    elif "avx2" in f:
        int8 = "AVX2 only (no int8 dot-product instruction: about fp32's speed at best)"
    else:
        int8 = "none known"
    if "amx_bf16" in f:
        bf16 = "AMX bf16 tiles"
    elif "avx512_bf16" in f:
        bf16 = "AVX-512 BF16 dot products"
    else:
        bf16 = "none (OpenVINO runs bf16 as fp32)"
    if "amx_fp16" in f:
        fp16 = "AMX fp16 tiles"
    elif "avx512_fp16" in f:
        fp16 = "AVX-512 FP16 arithmetic"
    else:
        fp16 = "none (OpenVINO runs fp16 as bf16 where it has bf16, else as fp32)"
    return {"int8": int8, "bf16": bf16, "fp16": fp16}
