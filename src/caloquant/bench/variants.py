"""What is benchmarked: a checkpoint run on a chosen backend and precision, or a `quantize`
artifact, with one runnable per stream.

A model argument is ``PATH`` (a checkpoint runs as PyTorch fp32 eager, an artifact directory as
saved) or ``PATH@BACKEND[:PRECISION]`` for a checkpoint (``3dgan.pt@openvino:bf16``). int8
from a checkpoint is the backend's default post-training quantization (the ``--recipe naive``
of `quantize`: every unit int8, min-max calibration on 256 latents); a physics-tuned int8 is
benchmarked as its artifact.

Streams: each stream is one Python thread driving its own runner; the engines release the
GIL while they compute. How an engine serves streams is the backend's business
(``EngineModel.runners``, see caloquant.precision.backends).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.models import ModelRef
from caloquant.precision import EngineModel, prime_backend, read_manifest
from caloquant.runtime import quiet_loggers
from caloquant.timing import Runner

CALIB_N = 256


@dataclass(frozen=True)
class ModelRequest:
    """One ``--model`` argument, parsed."""

    text: str
    ref: ModelRef
    backend: str | None = None  # None: checkpoint -> torch, artifact -> its manifest
    precision: str | None = None

    @property
    def path(self) -> Path:
        return self.ref.path

    @property
    def short(self) -> str:
        """Built-in model name, or file or folder name, plus the backend selection:
        '3dgan.pt@openvino:bf16'."""
        name = self.text.rpartition("@")[0] if self.backend else self.text
        base = name if not Path(name).exists() else self.path.name
        return base + (f"@{self.backend}:{self.precision}" if self.backend else "")

    @property
    def backend_name(self) -> str:
        """The backend this request will run on (read from the manifest for artifacts); unlike
        ``backend``, never None."""
        if self.ref.kind == "artifact":
            return str(read_manifest(self.path).get("backend", "torch"))
        return self.backend or "torch"


def parse_model_arg(text: str) -> ModelRequest:
    """``MODEL`` or ``MODEL@BACKEND[:PRECISION]``, MODEL a path or a built-in model name;
    checks that it exists and, for artifacts, that the manifest is readable."""
    from caloquant.models import model_ref
    from caloquant.precision import BACKENDS, check_supported

    raw = text.strip()
    if not raw:
        raise CaloquantError("model must not be empty")
    path_s, backend, precision = raw, None, None
    if "@" in raw and not Path(raw).exists():
        path_s, _, sel = raw.rpartition("@")
        backend, _, precision = sel.partition(":")
        backend, precision = backend.strip().lower(), (precision.strip().lower() or "fp32")
        if backend not in BACKENDS:
            raise CaloquantError(
                f"model {raw}: unknown backend '{backend}' after '@' "
                f"(choose from {', '.join(BACKENDS)})"
            )
        check_supported(backend, precision)
    ref = model_ref(path_s)
    if ref.kind == "artifact":
        read_manifest(ref.path)
        if backend is not None:
            raise CaloquantError(
                f"model {raw}: an artifact already fixes its backend and precision; "
                f"drop '@{backend}:{precision}'"
            )
    return ModelRequest(raw, ref, backend, precision)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Exporters and quantizers log warnings (torchvision missing, 'consider pre-processing')."""
    with (
        quiet_loggers("", "torch", "nncf", "onnxruntime"),
        warnings.catch_warnings(),
    ):  # "": the root logger
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _dir_size(d: Path, files: list[str]) -> int:
    return sum((d / f).stat().st_size for f in files if (d / f).exists())


def count_flops(module: Any, latent_dim: int) -> int | None:
    """FLOPs per shower of a torch generator (a multiply-accumulate counts 2), at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            module(torch.zeros(1, latent_dim))
        return int(fc.get_total_flops())
    except Exception:  # noqa: BLE001 - an exotic module the counter cannot trace
        return None


@dataclass
class Variant:
    """A loaded model ready to be timed: an engine model of the backend contract."""

    request: ModelRequest
    label: str
    kind: str  # "checkpoint" | "artifact"
    backend: str
    precision: str
    spec: Any
    model: EngineModel
    model_bytes: int
    source_bytes: int
    module: Any = None  # the float torch generator, if loaded (for counting FLOPs)
    recipe: str | None = None
    meets_tolerance: bool | None = None
    flops_per_shower: int | None = None
    rewritten: bool = (
        False  # an artifact of the sub-pixel rewrite: it runs fewer FLOPs than its architecture
    )
    flops_per_shower_architecture: int | None = None
    self_check: dict[str, Any] | None = None
    _cache: dict[tuple[int, int], tuple[list[Runner], dict[str, Any]]] = field(
        default_factory=dict, repr=False
    )

    @property
    def layer_precisions(self) -> dict[str, str]:
        return dict(self.model.layer_precisions)

    def runners(self, threads: int, streams: int) -> tuple[list[Runner], dict[str, Any]]:
        """One runnable per stream and what the engine actually uses (threads, streams)."""
        key = (threads, streams)
        if key not in self._cache:  # kept until release(): the grid is visited in several rounds
            self._cache[key] = self.model.runners(threads, streams)
        return self._cache[key]

    def release(self) -> None:
        self._cache.clear()

    def count_flops(self) -> int | None:
        """FLOPs per shower the engine executes, from the torch generator (for an artifact it is
        rebuilt from the manifest's spec, and rewritten again if the artifact was: the sub-pixel
        rewrite computes the same function with fewer FLOPs). The architecture's own count is
        kept in ``flops_per_shower_architecture``."""
        from caloquant.models import build

        module = self.module
        if module is None:
            try:
                module, _ = build(self.spec)
            except CaloquantError:
                return None
        module = module.eval()
        self.flops_per_shower_architecture = count_flops(module, self.spec.latent_dim)
        self.flops_per_shower = self.flops_per_shower_architecture
        if self.rewritten:
            from caloquant.precision import fuse_upsample_conv

            self.flops_per_shower = count_flops(fuse_upsample_conv(module)[0], self.spec.latent_dim)
        return self.flops_per_shower

    def info(self) -> dict[str, Any]:
        lp = self.layer_precisions
        return {
            "model": self.label,
            "path": str(self.request.path),
            "kind": self.kind,
            "backend": self.backend,
            "precision": self.precision,
            "executed_precision": self.model.executed_precision(),
            "arch": self.spec.arch,
            "recipe": self.recipe,
            "meets_tolerance": self.meets_tolerance,
            "self_check": self.self_check,
            "model_bytes": self.model_bytes,
            "source_bytes": self.source_bytes,
            "flops_per_shower": self.flops_per_shower,
            "flops_per_shower_architecture": self.flops_per_shower_architecture,
            "int8_layers": sum(1 for v in lp.values() if v == "int8"),
            "layers": len(lp),
        }


def load_variant(
    req: ModelRequest, label: str, threads: int, seed: int = 0, skip_self_check: bool = False
) -> Variant:
    with quiet_logs():
        if req.ref.kind == "artifact":
            return _load_artifact(req, label, threads, skip_self_check)
        return _load_checkpoint(req, label, threads, seed)


def _load_artifact(req: ModelRequest, label: str, threads: int, skip_self_check: bool) -> Variant:
    from caloquant.precision import load_artifact

    gen = load_artifact(req.path, threads, skip_self_check=skip_self_check)
    mf = gen.manifest
    size = int(mf.size_bytes or _dir_size(req.path, mf.files))
    return Variant(
        req,
        label,
        "artifact",
        gen.backend,
        gen.precision,
        gen.spec,
        gen.model,
        size,
        size,
        None,
        mf.recipe or None,
        mf.meets_tolerance,
        rewritten=bool(mf.rewrite.get("convs")),
        self_check=gen.self_check,
    )


def _load_checkpoint(req: ModelRequest, label: str, threads: int, seed: int) -> Variant:
    from caloquant.precision import make_backend

    ckpt = req.ref.float_checkpoint()
    spec, module = ckpt.spec, ckpt.generator.eval()
    backend, precision = req.backend or "torch", req.precision or "fp32"
    src = req.path.stat().st_size
    be = make_backend(backend, module, spec.latent_dim, threads)
    if precision == "int8":
        from caloquant.precision import calibration_latents

        model = be.int8_model(calibration_latents(spec, CALIB_N, seed), None, "minmax", "fp32")
        recipe: str | None = "naive"
    else:
        model, recipe = be.float_model(precision), None
    if backend == "torch" and precision != "int8":
        size = src  # eager and autocast keep the fp32 weights: what is loaded is the checkpoint
    else:
        with tempfile.TemporaryDirectory() as tmp:
            size = _dir_size(Path(tmp), model.save(Path(tmp)))
    return Variant(
        req, label, "checkpoint", backend, precision, spec, model, size, src, module, recipe
    )


def latents_for(spec: Any, n: int, seed: int) -> np.ndarray:
    """Conditioned latents over the model's energy range (contiguous float32)."""
    from caloquant.precision import calibration_latents

    return np.ascontiguousarray(calibration_latents(spec, n, seed), dtype=np.float32)


def prime_libraries(backends: set[str]) -> None:
    """Import the engines and initialise their thread pools and kernel caches once, so that a
    model's RSS growth counts the model, not the one-off cost of loading a library."""
    import torch

    count_flops(torch.nn.Linear(2, 2), 2)  # the FLOP counter pulls in a lot of Python
    with quiet_logs(), torch.inference_mode():
        torch.nn.functional.conv3d(torch.zeros(1, 2, 4, 4, 4), torch.zeros(2, 2, 2, 2, 2))
        torch.nn.functional.conv2d(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 2, 2))
        torch.nn.functional.conv_transpose2d(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 2, 2))
        for name in backends:
            prime_backend(name)
