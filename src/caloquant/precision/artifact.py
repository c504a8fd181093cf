"""Reduced-precision variants as ShowerGenerators: a tuned model in memory
(:class:`QuantizeResult`, ``save`` writes it) and a saved artifact directory
(:func:`load_artifact`, checked on this CPU before use).

An artifact directory holds the engine's model files, ``canary.npz`` (the self-check, see
:mod:`caloquant.precision.canary`), ``manifest.json``
(:class:`~caloquant.precision.manifest.Manifest`)
and ``tuning_log.json`` (every trial of the tuner).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.errors import CaloquantError
from caloquant.fileio import check_output, file_sha256, umask_mode, write_json
from caloquant.models import Checkpoint, ModelRef, ModelSpec, TorchGenerator
from caloquant.precision.backends import EngineModel, load_model
from caloquant.precision.canary import run_check, save_canary
from caloquant.precision.manifest import MANIFEST, TUNING_LOG, Manifest, read_manifest
from caloquant.precision.trial import Trial
from caloquant.runtime import torch_threads

log = logging.getLogger(__name__)


def check_artifact_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Where an artifact may be written (checked before any tuning): a new folder, an empty
    one or an existing artifact (replaced); not a file or any other non-empty folder."""
    out = check_output(out_dir, folder=True)
    if out.is_dir() and not (out / MANIFEST).exists() and any(out.iterdir()):
        raise CaloquantError(
            f"-o {out}: exists and is not a caloquant artifact; refusing to overwrite"
        )
    return out


class _EngineGenerator:
    """A ShowerGenerator over an engine model described by a manifest."""

    spec: ModelSpec
    manifest: Manifest
    model: EngineModel

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def backend(self) -> str:
        return self.manifest.backend

    def generate(self, latent: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(latent), dtype=np.float32).reshape(
            (len(latent), *self.spec.grid)
        )


@dataclass
class QuantizeResult(_EngineGenerator):
    """A tuned model in memory: run it (``generate``), inspect ``manifest``, ``save`` it."""

    spec: ModelSpec
    model: EngineModel
    manifest: Manifest
    chosen: Trial
    trials: list[Trial]
    baseline: dict[str, Any]
    canary: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.chosen.ok

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the artifact directory atomically (a temporary sibling, renamed at the end);
        an existing artifact of that name is replaced, any other existing folder is refused."""
        out = check_artifact_dir(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            files = self.model.save(tmp)
            extra = [save_canary(tmp, self.canary)] if self.canary else []
            manifest = self.manifest.saved(
                files,
                sum((tmp / f).stat().st_size for f in files),
                {f: file_sha256(tmp / f) for f in files + extra},
            )
            write_json(tmp / MANIFEST, manifest.to_dict())
            write_json(
                tmp / TUNING_LOG,
                {
                    "baseline": self.baseline,
                    "trials": [t.to_dict() for t in self.trials],
                    "chosen": self.chosen.name,
                },
            )
            os.chmod(tmp, umask_mode(directory=True))
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
            self.manifest = manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out


@dataclass
class ArtifactGenerator(_EngineGenerator):
    """A saved reduced-precision model, usable wherever a ShowerGenerator is expected.
    ``self_check``: the result of the canary run at load time (or why it was skipped)."""

    spec: ModelSpec
    manifest: Manifest
    model: EngineModel
    path: Path
    self_check: dict[str, Any]


def load_generator(
    ref: ModelRef, threads: int | None = None, skip_self_check: bool = False
) -> tuple[Any, Checkpoint | None]:
    """The runnable generator behind a model reference (:func:`caloquant.models.model_ref`): an
    artifact (self-checked on this CPU) or a float32 model run by PyTorch, with its checkpoint
    (None for an artifact). The one loader of the API, the study, the benchmark and the workers."""
    if ref.kind == "artifact":
        return load_artifact(ref.path, threads, skip_self_check), None
    ckpt = ref.float_checkpoint()
    return TorchGenerator(ckpt.spec, ckpt.generator, threads), ckpt


def load_artifact(
    path: str | os.PathLike[str], threads: int | None = None, skip_self_check: bool = False
) -> ArtifactGenerator:
    """Load an artifact: files checked against their sha256, then the canary run on this CPU
    (refused with a one-line error when the physics moved beyond the artifact's threshold).
    ``skip_self_check`` loads anyway; the reason is kept in ``self_check``."""
    p = Path(path)
    manifest = read_manifest(p)
    for f, digest in manifest.sha256.items():
        if not (p / f).exists():
            raise CaloquantError(f"{p}: artifact file {f} is missing")
        if file_sha256(p / f) != digest:
            raise CaloquantError(f"{p / f}: damaged (sha256 differs from the manifest)")
    spec = manifest.spec
    model = load_model(manifest.backend, p, manifest, threads)
    block = manifest.self_check
    if skip_self_check:
        check: dict[str, Any] = {"passed": None, "skipped": "skip_self_check requested by the user"}
    elif not block:
        check = {"passed": None, "skipped": "artifact has no self-check (made by caloquant < 0.2)"}
        log.warning(
            "%s: artifact has no self-check canary; its physics on this CPU is not verified", p
        )
    else:
        with torch_threads(threads):
            check = run_check(p, block, lambda z: np.asarray(model(z)).reshape(len(z), *spec.grid))
    return ArtifactGenerator(spec, manifest, model, p, check)
