"""CPU-class emulation for developers on an AVX-512 or AMX machine (never used by the tests
themselves). Python imports this module at start-up when its folder is on PYTHONPATH:

    ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=tests/cpu_class .venv/bin/python -m pytest ...
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 PYTHONPATH=tests/cpu_class ...   # AMD Zen 4 class

``ONEDNN_MAX_CPU_ISA`` makes oneDNN inside OpenVINO (and PyTorch) dispatch the kernels of that
class: ``AVX2`` the AVX2 ones of an AMD Zen 3 (int8 convolutions and FullyConnected without
VNNI: ``jit_avx2_I8``, ``brgconv_avx2``), ``AVX512_CORE_BF16`` the AVX-512 VNNI and BF16 ones of
an AMD Zen 4 (no AMX tiles, no fp16 arithmetic). OpenVINO's CPU plugin still reads the real CPU
flags and compiles a precision hint into kernels that oneDNN then refuses ("object is not
initialized"); this module rewrites the hint as OpenVINO does on the real CPU: bf16 and f16 to
f32 on AVX2, f16 to bf16 on Zen 4 (docs/findings.md 1b). It also hides the flags the emulated
class lacks from caloquant's reading of /proc/cpuinfo (so its CPU class, the race's
``fast_kernels`` and the tests that read flags see the emulated class; the model name says
"emulated"), and for AVX2 limits PyTorch's own vectorized kernels (``ATEN_CPU_CAPABILITY``).
What it does not emulate: the real CPU's caches, clocks and memory.
"""

import importlib.abc
import importlib.util
import os
import sys

# kernels oneDNN may use -> (the class's flags among caloquant.runtime.RELEVANT_FLAGS; the
# others are hidden), precision hints rewritten, torch capability
_CLASSES = {
    "AVX2": ({"avx2", "fma"}, {"bf16": "f32", "f16": "f32"}, "avx2"),
    "AVX512_CORE_BF16": (
        {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"},
        {"f16": "bf16"},
        None,
    ),
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a function on a module right after its first import, so that start-up imports
    nothing (a test checks that the command line starts without OpenVINO)."""

    def __init__(self, hooks: dict) -> None:
        self.hooks = hooks

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name not in self.hooks:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run, hook = spec.loader.exec_module, self.hooks.pop(name)

        def exec_then_hook(module) -> None:  # noqa: ANN001
            run(module)
            hook(module)

        spec.loader.exec_module = exec_then_hook
        return spec


def _patch_openvino(ov) -> None:  # noqa: ANN001
    compile_model = ov.Core.compile_model

    def compile_as_class(self, model, device_name=None, config=None, **kw):  # noqa: ANN001, ANN202
        hint = str((config or {}).get("INFERENCE_PRECISION_HINT", "")).lower()
        if hint in _hints:
            config = dict(config, INFERENCE_PRECISION_HINT=_hints[hint])
        if device_name is None:
            return compile_model(self, model, config=config, **kw)
        return compile_model(self, model, device_name, config, **kw)

    ov.Core.compile_model = compile_as_class


def _patch_runtime(rt) -> None:  # noqa: ANN001
    cpuinfo, hidden = rt.cpuinfo, set(rt.RELEVANT_FLAGS) - _kept

    def emulated_cpuinfo() -> dict:
        info = dict(cpuinfo())
        info["flags"] = " ".join(f for f in info.get("flags", "").split() if f not in hidden)
        info["model name"] = f"{info.get('model name', '?')} (emulating {_isa} kernels)"
        return info

    emulated_cpuinfo.__wrapped__ = cpuinfo  # the real flags, for a label "emulated on ..."
    rt.cpuinfo = emulated_cpuinfo


_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
if _isa in _CLASSES:
    _kept, _hints, _aten = _CLASSES[_isa]
    if _aten:
        os.environ.setdefault("ATEN_CPU_CAPABILITY", _aten)
    sys.meta_path.insert(
        0, _AfterImport({"openvino": _patch_openvino, "caloquant.runtime": _patch_runtime})
    )
