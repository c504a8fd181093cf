"""AVX2-class emulation for developers on an AVX-512 or AMX machine (never used by the tests
themselves). Python imports this module at start-up when its folder is on PYTHONPATH:

    ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=tests/cpu_class .venv/bin/python -m pytest ...

``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN inside OpenVINO (and PyTorch) dispatch its AVX2
kernels (int8 convolutions and FullyConnected without VNNI: ``jit_avx2_I8``, ``brgconv_avx2``).
OpenVINO's CPU plugin still reads the real CPU flags and compiles a bf16 or f16
``INFERENCE_PRECISION_HINT`` into kernels that oneDNN then refuses ("object is not
initialized"); on a real AVX2 CPU it compiles those hints to f32, which this module does by
rewriting the hint. What it does not emulate: caloquant's CPU class (read from /proc/cpuinfo)
and PyTorch's own kernel choice outside oneDNN.
"""

import os

if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2":
    try:
        import openvino as _ov
    except ImportError:  # nothing to emulate without OpenVINO
        _ov = None
    if _ov is not None:
        _compile = _ov.Core.compile_model

        def _compile_as_avx2(self, model, device_name=None, config=None, **kw):  # noqa: ANN001, ANN202
            hint = str((config or {}).get("INFERENCE_PRECISION_HINT", "")).lower()
            if hint in ("bf16", "f16"):
                config = dict(config, INFERENCE_PRECISION_HINT="f32")
            if device_name is None:
                return _compile(self, model, config=config, **kw)
            return _compile(self, model, device_name, config, **kw)

        _ov.Core.compile_model = _compile_as_avx2
