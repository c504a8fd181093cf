"""Named built-in models: checkpoints shipped inside the package, loadable by name.

``--model cern-3dgan`` on the command line and ``caloquant.load("cern-3dgan")`` in Python
resolve through this registry, so a fresh installation runs without any external files.
A name is tried only when no file or folder of that name exists: a path always wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError

DEFAULT_MODEL = "cern-3dgan"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    file: str  # inside caloquant/models/builtin/
    description: str
    licence: str
    source: str


BUILTIN: dict[str, BuiltinModel] = {
    "cern-3dgan": BuiltinModel(
        name="cern-3dgan",
        file="cern-3dgan.pt",
        description="CERN 3DGAN Conv3D generator (epoch 49), electrons 100-500 GeV, "
        "25x25x25 cells; converted from the authors' Keras weights by caloquant's importer",
        licence="Apache-2.0 (see NOTICE)",
        source="github.com/svalleco/3Dgan, "
        "keras/energy_gan/maelin50_full/params_generator_epoch_049.hdf5",
    ),
    "conv2d-g4": BuiltinModel(
        name="conv2d-g4",
        file="conv2d-g4.pt",
        description="the reduced-precision paper's Conv2D generator (width 0.5), "
        "trained by caloquant on 5,000 Geant4 + 5,000 GFlash-fitted-to-Geant4 electron showers, "
        "100-500 GeV, caloquant geometry",
        licence="Apache-2.0 (caloquant)",
        source="benchmarks/train_conv2d_g4.py; records in benchmarks/results/train_conv2d_g4/",
    ),
}


def builtin_models() -> list[BuiltinModel]:
    """The registered built-in models whose weights are installed."""
    return [m for m in BUILTIN.values() if _file(m).is_file()]


def builtin_listing() -> list[dict[str, str]]:
    """The built-in models as rows: name, description, licence, source (``cq.models()``)."""
    return [
        {"name": m.name, "description": m.description, "licence": m.licence, "source": m.source}
        for m in builtin_models()
    ]


def _file(m: BuiltinModel) -> Path:
    return Path(str(resources.files("caloquant.models").joinpath("builtin", m.file)))


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """The file or folder behind ``model``: an existing path as is, else a built-in name
    (``None`` means the default model). Unknown names get a one-line error listing the choices."""
    if model is None:
        model = DEFAULT_MODEL
    p = Path(model)
    if p.exists():
        return p
    name = str(model)
    if name in BUILTIN:
        f = _file(BUILTIN[name])
        if not f.is_file():
            raise CaloquantError(
                f"built-in model '{name}' is registered but its weights are not installed ({f})"
            )
        return f
    known = ", ".join(BUILTIN)
    raise CaloquantError(
        f"{name}: model not found "
        f"(neither a file or folder nor a built-in model; built-in: {known})"
    )


@dataclass(frozen=True)
class ModelRef:
    """What a model reference names, decided in one place for every command and the Python API.

    ``kind``: ``artifact`` (a folder: a ``quantize`` artifact; loaded by
    :func:`caloquant.precision.load_generator`, which refuses a folder without a manifest),
    ``keras`` (``.hdf5``/``.h5``: Keras 2 CERN 3DGAN generator weights, converted on load) or
    ``checkpoint`` (a caloquant ``.pt``; built-in names resolve to theirs). ``name``: what the
    caller wrote (the default model's name for None)."""

    name: str
    path: Path
    kind: str

    @property
    def is_float(self) -> bool:
        return self.kind != "artifact"

    def require_float(self) -> ModelRef:
        """This reference, or a one-line error for an artifact, which holds no float32 weights
        (checked before any work; :meth:`float_checkpoint` loads them)."""
        if self.kind == "artifact":
            raise CaloquantError(
                f"{self.name}: a reduced-precision artifact directory, where a float32 model "
                "(checkpoint .pt, Keras .hdf5 or built-in name) is needed"
            )
        return self

    def float_checkpoint(self) -> Any:
        """The float32 :class:`~caloquant.models.Checkpoint` (a Keras file converted on the fly);
        a one-line error for an artifact."""
        self.require_float()
        if self.kind == "keras":
            from caloquant.models.keras import import_keras_3dgan

            return import_keras_3dgan(self.path)
        from caloquant.models.checkpoint import load_checkpoint

        return load_checkpoint(self.path)


def model_ref(model: str | os.PathLike[str] | None) -> ModelRef:
    """The one resolver of "what is this model reference?" (see :class:`ModelRef`)."""
    path = resolve_model(model)
    kind = (
        "artifact"
        if path.is_dir()
        else "keras"
        if path.suffix.lower() in (".hdf5", ".h5")
        else "checkpoint"
    )
    return ModelRef(DEFAULT_MODEL if model is None else str(model), path, kind)
