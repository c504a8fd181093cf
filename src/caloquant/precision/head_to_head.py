"""Other tools at the physics tolerance, for comparison (never chosen): the engine's own
accuracy-aware int8 search, Intel Neural Compressor autotune and LiteRT, on the same torch
module and the same evaluation showers as the tuner (:mod:`caloquant.precision.tuner`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from caloquant.precision.evaluation import badness
from caloquant.precision.trial import Trial
from caloquant.precision.tuner import Tuner

log = logging.getLogger(__name__)


def head_to_head(
    tuner: Tuner, module: Any, latent_dim: int
) -> tuple[list[Trial], list[dict[str, str]]]:
    """Other tools at the same tolerance, for comparison (never chosen), all on the same
    torch module the backend got: the backend's float model; on OpenVINO, NNCF's
    quantize_with_accuracy_control; Intel Neural Compressor autotune; LiteRT int8 and fp16
    (the paper's TensorFlow Lite comparison, today's successor). The accuracy-driven tools
    get our physics metric (metric = 1 - badness: fp32 scores 1, the tolerance edge 0).
    Returns the trials and the tools that could not run, with the reason."""
    from caloquant.precision import external

    tol = tuner.cfg.tolerance

    def metric(showers: np.ndarray) -> float:
        return 1.0 - min(badness(tuner.ev.score(showers), tol), 1e6)

    tuner.begin_step("head to head", "head to head: other tools at the same tolerance")
    out = [
        tuner.evaluate(
            f"{tuner.backend.name} fp32 (reference speed)",
            lambda: tuner.backend.float_model("fp32"),
            {"precision": "fp32", "external": True},
            timed=True,
        )
    ]
    tools: list[tuple[str, Callable[[], Any], dict[str, Any]]] = []
    if tuner.caps.accuracy_control:
        tools.append(
            (
                tuner.caps.accuracy_control,
                lambda: tuner.backend.accuracy_control(tuner.calib, tuner.ev.latents, metric, 1.0),
                {"precision": "int8", "tool": tuner.caps.accuracy_control},
            )
        )
    threads, batch = tuner.cfg.threads, tuner.cfg.batch
    tools += [
        (
            "INC autotune (PT2E static int8, torch.compile)",
            lambda: external.inc_autotune(
                module, latent_dim, tuner.calib, tuner.ev.latents, metric, threads
            ),
            {"precision": "int8", "tool": "neural_compressor.torch.quantization.autotune"},
        ),
        (
            "LiteRT int8 (litert-torch PT2E static, per-channel)",
            lambda: external.litert(module, latent_dim, tuner.calib, "int8", threads, batch),
            {"precision": "int8", "tool": "litert-torch + ai-edge-litert"},
        ),
        (
            "LiteRT fp16 (float16 weights)",
            lambda: external.litert(module, latent_dim, tuner.calib, "fp16", threads, batch),
            {"precision": "fp16", "tool": "litert-torch + ai-edge-quantizer + ai-edge-litert"},
        ),
    ]
    missing: list[dict[str, str]] = []
    for name, build, cfg in tools:
        try:
            out.append(tuner.evaluate(name, build, cfg | {"external": True}, timed=True))
        except external.Unavailable as exc:
            log.info("  n/a %s: %s", name, exc)
            missing.append({"name": name, "error": str(exc)})
    return out, missing
