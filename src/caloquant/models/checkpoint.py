"""Model specification, energy conditioning and the caloquant checkpoint format.

A checkpoint is one ``torch.save`` file holding plain data only (loaded with
``weights_only=True``, so it cannot run code):

    {"caloquant_checkpoint": 1,
     "spec": {arch, noise_dim, latent_dim, grid, energy_range_gev, conditioning, hparams},
     "generator": state_dict, "discriminator": state_dict | None,
     "provenance": {...}}
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError, reason
from caloquant.fileio import atomic_path
from caloquant.models.conv2d import Conv2DDiscriminator, Conv2DGenerator
from caloquant.models.gan3d import Discriminator3DGAN, Generator3DGAN
from caloquant.models.two_stage import TwoStageGenerator

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ArchInfo:
    generator: Callable[..., nn.Module]
    discriminator: Callable[..., nn.Module] | None
    description: str


ARCHITECTURES: dict[str, ArchInfo] = {
    "3dgan-conv3d": ArchInfo(
        Generator3DGAN, Discriminator3DGAN, "CERN 3DGAN, Conv3D generator (Keras 2 original)"
    ),
    "3dgan-conv2d": ArchInfo(
        Conv2DGenerator,
        Conv2DDiscriminator,
        "Conv2D 3DGAN generator of the reduced-precision paper",
    ),
}


def _two_stage_generator(shape: str, energy_hidden: int = 32, **kw: Any) -> nn.Module:
    return TwoStageGenerator(_arch(shape).generator(**kw), energy_hidden)


def _two_stage_discriminator(shape: str, energy_hidden: int = 32, **kw: Any) -> nn.Module | None:
    disc = _arch(shape).discriminator  # the shape network's: it judges whole showers
    return disc(**kw) if disc is not None else None


def _arch(name: str) -> ArchInfo:
    if name not in ARCHITECTURES or name == TWO_STAGE:
        raise CaloquantError(f"'{name}' is not a shape network of a two-stage model")
    return ARCHITECTURES[name]


TWO_STAGE = "two-stage"
ARCHITECTURES[TWO_STAGE] = ArchInfo(
    _two_stage_generator,
    _two_stage_discriminator,
    "two-stage: Ecal/Ep from a conditional flow, the shape from a GAN generator (models.two_stage)",
)


def register_architecture(name: str, info: ArchInfo) -> None:
    """Make a new generator architecture loadable from checkpoints."""
    ARCHITECTURES[name] = info


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a generator and to use it correctly.

    ``conditioning`` says how the incident energy enters the network:
    ``{"rule": "scale", "energy_unit_gev": 100}`` means latent = noise * Ep / 100 GeV;
    ``{"rule": "concat", "energy_unit_gev": 100}`` means latent = [noise, Ep / 100 GeV].
    """

    arch: str
    noise_dim: int
    latent_dim: int
    grid: tuple[int, ...]
    energy_range_gev: tuple[float, float]
    conditioning: dict[str, Any] = field(
        default_factory=lambda: {"rule": "scale", "energy_unit_gev": 100.0}
    )
    hparams: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["energy_range_gev"] = list(self.energy_range_gev)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        try:
            return cls(
                arch=str(d["arch"]),
                noise_dim=int(d["noise_dim"]),
                latent_dim=int(d["latent_dim"]),
                grid=tuple(int(g) for g in d["grid"]),
                energy_range_gev=(float(d["energy_range_gev"][0]), float(d["energy_range_gev"][1])),
                conditioning=dict(d.get("conditioning", {})),
                hparams=dict(d.get("hparams", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CaloquantError(f"model spec is incomplete or malformed ({exc!r})") from None


SPEC_3DGAN = ModelSpec(
    arch="3dgan-conv3d",
    noise_dim=200,
    latent_dim=200,
    grid=(25, 25, 25),
    energy_range_gev=(100.0, 500.0),
    conditioning={"rule": "scale", "energy_unit_gev": 100.0},
    hparams={"leaky_relu_slope": 0.3, "batchnorm_eps": 1e-3},
)


def spec_conv2d(width: float = 1.0) -> ModelSpec:
    """Spec of the paper's Conv2D generator (``width`` scales the channel counts)."""
    return ModelSpec(
        arch="3dgan-conv2d",
        noise_dim=200,
        latent_dim=200,
        grid=(25, 25, 25),
        energy_range_gev=(2.0, 500.0),
        conditioning={"rule": "scale", "energy_unit_gev": 100.0},
        hparams={"arch_kwargs": {"width": width}, "leaky_relu_slope": 0.3, "batchnorm_eps": 1e-3},
    )


def two_stage_spec(shape: ModelSpec, energy_hidden: int = 32) -> ModelSpec:
    """The two-stage model (:mod:`caloquant.models.two_stage`) around the shape network of
    ``shape``: one more noise value (the energy's) and the incident energy concatenated
    (``[noise, Ep / 100 GeV]``); the shape network's own conditioning is applied inside."""
    if shape.conditioning.get("rule") != "scale" or shape.arch == TWO_STAGE:
        raise CaloquantError(f"{shape.arch}: not a shape network for a two-stage model")
    kwargs = {"shape": shape.arch, "energy_hidden": energy_hidden}
    kwargs.update(shape.hparams.get("arch_kwargs", {}))
    return replace(
        shape,
        arch=TWO_STAGE,
        noise_dim=shape.noise_dim + 1,
        latent_dim=shape.latent_dim + 2,
        conditioning={"rule": "concat", "energy_unit_gev": 100.0},
        hparams={**shape.hparams, "arch_kwargs": kwargs},
    )


def shape_spec(spec: ModelSpec) -> ModelSpec:
    """The spec of a two-stage model's shape network (``spec`` itself for other models)."""
    if spec.arch != TWO_STAGE:
        return spec
    kwargs = dict(spec.hparams["arch_kwargs"])
    arch = kwargs.pop("shape")
    kwargs.pop("energy_hidden", None)
    return replace(
        spec,
        arch=arch,
        noise_dim=spec.noise_dim - 1,
        latent_dim=spec.latent_dim - 2,
        conditioning={"rule": "scale", "energy_unit_gev": 100.0},
        hparams={**spec.hparams, "arch_kwargs": kwargs},
    )


def condition_latent(noise: np.ndarray, energies_gev: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Apply the model's energy-conditioning rule: raw N(0,1) noise (N, noise_dim) -> latent."""
    noise = np.asarray(noise, dtype=np.float32)
    e = np.asarray(energies_gev, dtype=np.float32).reshape(-1, 1) / np.float32(
        spec.conditioning.get("energy_unit_gev", 100.0)
    )
    rule = spec.conditioning.get("rule", "scale")
    if rule == "scale":
        return noise * e
    if rule == "concat":
        return np.concatenate([noise, e], axis=1)
    raise CaloquantError(f"unknown energy-conditioning rule '{rule}'")


@dataclass
class Checkpoint:
    spec: ModelSpec
    generator: nn.Module
    discriminator: nn.Module | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def build(spec: ModelSpec) -> tuple[nn.Module, nn.Module | None]:
    if spec.arch not in ARCHITECTURES:
        raise CaloquantError(
            f"unknown architecture '{spec.arch}' (known: {', '.join(ARCHITECTURES)})"
        )
    info = ARCHITECTURES[spec.arch]
    kwargs = dict(spec.hparams.get("arch_kwargs", {}))
    try:
        gen = info.generator(**kwargs)
        # the discriminator shares the generator's architecture arguments (e.g. the width)
        disc = info.discriminator(**kwargs) if info.discriminator else None
    except TypeError as exc:
        raise CaloquantError(f"architecture '{spec.arch}' does not take {kwargs} ({exc})") from None
    return gen, disc


def weights_digest(module: nn.Module) -> str:
    """Hex sha256 of a module's state (names and tensor bytes): the key of what was computed
    from these weights (evaluation showers, QAT states)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(
            v.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
        )  # any dtype
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write a checkpoint atomically."""
    from caloquant.version import __version__

    payload = {
        "caloquant_checkpoint": CHECKPOINT_VERSION,
        "spec": ckpt.spec.to_dict(),
        "generator": ckpt.generator.state_dict(),
        "discriminator": ckpt.discriminator.state_dict()
        if ckpt.discriminator is not None
        else None,
        "provenance": {"caloquant_version": __version__, **ckpt.provenance},
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint in eval mode, or fail with a one-line reason."""
    p = Path(path)
    if not p.exists():
        raise CaloquantError(f"{p}: model file not found")
    if p.is_dir():
        raise CaloquantError(f"{p}: is a directory, expected a caloquant checkpoint (.pt)")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle before refusing it
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        AttributeError,
        ImportError,
    ) as exc:
        raise CaloquantError(f"{p}: corrupt or unreadable checkpoint ({reason(exc)})") from None
    except pickle.UnpicklingError:
        raise CaloquantError(
            f"{p}: corrupt, or a pickle of objects other than weights "
            "(never unpickled: loading one can run code)"
        ) from None
    except Exception as exc:  # other errors of a damaged file
        raise CaloquantError(
            f"{p}: corrupt or unreadable checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or "caloquant_checkpoint" not in payload:
        raise CaloquantError(f"{p}: not a caloquant checkpoint (no 'caloquant_checkpoint' marker)")
    if payload["caloquant_checkpoint"] > CHECKPOINT_VERSION:
        raise CaloquantError(
            f"{p}: checkpoint version {payload['caloquant_checkpoint']} "
            "is newer than this caloquant"
        )
    spec = ModelSpec.from_dict(payload.get("spec", {}))
    gen, disc = build(spec)
    _load_state(gen, payload.get("generator"), p, "generator")
    if disc is not None and payload.get("discriminator") is not None:
        _load_state(disc, payload["discriminator"], p, "discriminator")
    else:
        disc = None
    gen.eval()
    if disc is not None:
        disc.eval()
    return Checkpoint(spec, gen, disc, dict(payload.get("provenance", {})))


def _load_state(module: nn.Module, state: Any, p: Path, what: str) -> None:
    if not isinstance(state, dict):
        raise CaloquantError(f"{p}: checkpoint has no {what} weights")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[1].strip().rstrip(".") if len(lines) > 1 else reason(exc)
        raise CaloquantError(
            f"{p}: {what} weights do not fit the architecture ({detail})"
        ) from None
    for name, t in state.items():
        if torch.is_floating_point(t) and not torch.isfinite(t).all():
            raise CaloquantError(f"{p}: {what} weight '{name}' contains NaN or Inf")
