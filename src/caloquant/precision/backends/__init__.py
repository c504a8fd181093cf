"""Inference engines behind one declared contract.

A :class:`Backend` is built from a float torch generator. It states what it can do
(:class:`Capabilities`) and makes :class:`EngineModel` objects: float models at a precision,
int8 models with a chosen set of int8 *units* (the places where int8 can be switched on or
off), and, where the engine has one, its own accuracy-aware int8 search. An engine model
runs latents, saves itself, says which precision it really executes, makes one runner per
stream for a thread count, and profiles itself with the engine's own profiler.

The tuner and the benchmark use only this contract: nothing outside this package checks a
backend's name or builds an engine itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.precision.registry import REGISTRY, Capabilities

Runner = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class FakeQuant:
    """How the engine's int8 model computes one unit, stated on the torch module it was built
    from, so that a torch copy can be trained against exactly that arithmetic.

    The input of module ``module`` passes through a per-tensor FakeQuantize (the engine's own
    formula: clamp to [low, high], ``levels`` evenly spaced values); its weight is quantized
    per output channel c: scale_c = max|w_c| / ``weight_ratio[c]``, integers clamped to
    +-``weight_bound[c]`` (127 and 127 for plain int8; the engine may use fewer levels, e.g. 7
    bits for a first layer with its overflow fix). Empty tuples: the weight stays float."""

    unit: str
    module: str
    low: float
    high: float
    levels: int
    weight_ratio: tuple[float, ...] = ()
    weight_bound: tuple[int, ...] = ()


@runtime_checkable
class EngineModel(Protocol):
    """A runnable model of one engine."""

    layer_precisions: dict[str, str]  # unit name -> requested precision string

    def __call__(self, latent: np.ndarray) -> np.ndarray: ...

    def save(self, out_dir: Path) -> list[str]: ...

    def options(self) -> dict[str, Any]:
        """Engine settings to record in a manifest (and to reload with)."""
        ...

    def executed_precision(self) -> str:
        """The precision the engine really runs, e.g. 'bf16' where 'fp16' was asked on a CPU
        without fp16 arithmetic, 'int8+fp32' for a mixed model."""
        ...

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One callable per concurrent stream with ``threads`` intra-op threads each, and what
        the engine actually uses (``{"streams": ..., "threads_total": ...}``)."""
        ...

    def profile(
        self, latent: np.ndarray, threads: int, min_calls: int, budget_s: float
    ) -> dict[str, Any]:
        """Per-op time shares from the engine's own profiler (see ``opprofile``)."""
        ...


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    @staticmethod
    def prime() -> None:
        """Import and initialise the engine library."""
        ...

    def float_model(self, precision: str, f32_from: str | None = None) -> EngineModel:
        """``f32_from``: a unit from ``split_points`` (only where ``capabilities.float_split``)."""
        ...

    def split_points(self, calib: np.ndarray) -> list[str]:
        """Only where ``capabilities.float_split``: the units, in graph order, where the float
        part can turn to fp32."""
        ...

    def units(self, calib: np.ndarray) -> list[str]: ...

    def unit_label(self, unit: str) -> str:
        """A short readable name for a unit (for logs)."""
        ...

    def int8_model(
        self,
        calib: np.ndarray,
        int8_units: Sequence[str] | None,
        calibration: str,
        float_precision: str = "fp32",
        bias_correction: str | None = None,
        smooth_quant: float | None = None,
        f32_from: str | None = None,
    ) -> EngineModel:
        """``bias_correction``: one of ``capabilities.bias_corrections`` (None: the engine's
        default); ``smooth_quant``: the SmoothQuant alpha for convolutions, only where
        ``capabilities.smooth_quant``; ``f32_from``: the float part runs in fp32 from this unit on
        (only where ``capabilities.float_split``)."""
        ...

    def accuracy_control(
        self,
        calib: np.ndarray,
        latents: np.ndarray,
        metric: Callable[[np.ndarray], float],
        max_drop: float,
    ) -> EngineModel:
        """Only where ``capabilities.accuracy_control``."""
        ...

    def fake_quant_plan(
        self, calib: np.ndarray, int8_units: Sequence[str], calibration: str
    ) -> list[FakeQuant]:
        """Only where ``capabilities.qat``: the int8 arithmetic ``int8_model`` (without bias
        correction) would use for these units, on the torch module the backend was built from."""
        ...


def quantized_scope(module: nn.Module) -> str | None:
    """The submodule (dotted path) a model lets quantizers work in; None: the whole model.

    A two-stage model (:class:`caloquant.models.TwoStageGenerator`) declares its shape network:
    its energy stage and the normalisation around it set the energy scale and stay float32 in
    every engine (measured on OpenVINO: int8 on the elementwise normalisation ops took 67-79 %
    of the energy at 300-500 GeV, the shape network alone in int8 kept it within 0.1 %)."""
    scope = getattr(module, "quantized_scope", None)
    return str(scope) if scope else None


def in_scope(path: str, scope: str | None) -> bool:
    """Whether the op of module ``path`` ('' for the root) may be int8 under ``scope``."""
    return scope is None or path == scope or path.startswith(scope + ".")


def no_split(f32_from: str | None) -> None:
    """For backends without ``capabilities.float_split``."""
    if f32_from is not None:
        raise CaloquantError("this backend has no split float part (capabilities.float_split)")


def _entry(name: str) -> Any:
    if name not in REGISTRY:
        raise CaloquantError(f"unknown backend '{name}' (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


def _cls(name: str, which: int) -> Any:
    entry = _entry(name)
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        raise CaloquantError(
            f"backend '{name}' is not installed ({exc.name or exc}); install caloquant[all]"
        ) from None
    return getattr(module, (entry.backend_class, entry.model_class)[which - 1])


def make_backend(name: str, module: nn.Module, latent_dim: int, threads: int | None) -> Backend:
    """The backend ``name`` for a float torch generator."""
    return _cls(name, 1)(module, latent_dim, threads)  # type: ignore[no-any-return]


def prime_backend(name: str) -> None:
    """Import the engine and initialise it once (so that later memory measurements count
    models, not the one-off cost of loading a library)."""
    _cls(name, 1).prime()


def capabilities(name: str) -> Capabilities:
    """What backend ``name`` offers (declared in :mod:`caloquant.precision.registry`; the
    engine is not imported)."""
    return _entry(name).capabilities  # type: ignore[no-any-return]


def load_model(
    name: str, out_dir: Path, manifest: dict[str, Any], threads: int | None
) -> EngineModel:
    """An engine model saved by ``EngineModel.save`` into an artifact directory."""
    if name not in REGISTRY:
        raise CaloquantError(f"{out_dir}: manifest names unknown backend '{name}'")
    return _cls(name, 2).load(out_dir, manifest, threads)  # type: ignore[no-any-return]
