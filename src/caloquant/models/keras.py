"""Import the public Keras 2 weight files of the CERN 3DGAN into a caloquant checkpoint.

Keras stores ``save_weights`` files as ``<model>/<layer>/<weight>:0`` datasets, with the
layer order in the ``weight_names`` attribute. Layouts converted here:
Dense kernel (in, out) -> Linear weight (out, in); Conv3D kernel (kx, ky, kz, in, out)
-> Conv3d weight (out, in, kx, ky, kz); BatchNorm gamma/beta/moving_mean/moving_variance
-> weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError, reason
from caloquant.fileio import file_sha256
from caloquant.models.checkpoint import SPEC_3DGAN, Checkpoint, build


def _layer_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name: array}} for every weight in a Keras 2 weights file."""
    if not path.exists():
        raise CaloquantError(f"{path}: Keras weights file not found")
    if not h5py.is_hdf5(path):
        raise CaloquantError(f"{path}: not an HDF5 file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise CaloquantError(f"{path}: unreadable HDF5 file ({reason(exc)})") from None
    with h5:
        if "layer_names" not in h5.attrs:
            raise CaloquantError(f"{path}: not a Keras weights file (no 'layer_names' attribute)")
        out: dict[str, dict[str, np.ndarray]] = {}
        for top in h5.attrs["layer_names"]:
            top = top.decode() if isinstance(top, bytes) else str(top)
            g = h5[top]
            for wn in g.attrs.get("weight_names", []):
                wn = wn.decode() if isinstance(wn, bytes) else str(wn)
                layer, weight = wn.split("/")[-2], wn.split("/")[-1].split(":")[0]
                out.setdefault(layer, {})[weight] = np.asarray(g[wn])
        return out


def _by_kind(weights: dict[str, dict[str, np.ndarray]], kind: str) -> list[dict[str, np.ndarray]]:
    """Layers whose name is ``kind`` or ``kind_<n>``, in numeric order."""
    pat = re.compile(rf"^{kind}(?:_(\d+))?$")
    found = [(int(m.group(1) or 0), name) for name in weights if (m := pat.match(name))]
    return [weights[name] for _, name in sorted(found)]


def _conv(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(w.transpose(4, 3, 0, 1, 2)))


def _dense(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(w.T))


def _assign(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    for name, t in expected.items():
        if name.endswith("num_batches_tracked"):
            state.setdefault(name, torch.zeros((), dtype=torch.long))
            continue
        if name not in state:
            raise CaloquantError(f"{path}: not a 3DGAN Conv3D {what}: no weights for '{name}'")
        if tuple(state[name].shape) != tuple(t.shape):
            raise CaloquantError(
                f"{path}: not a 3DGAN Conv3D {what}: '{name}' has shape "
                f"{tuple(state[name].shape)}, expected {tuple(t.shape)}"
            )
    module.load_state_dict(state, strict=True)


def _bn(prefix: str, layer: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.from_numpy(layer["gamma"]),
        f"{prefix}.bias": torch.from_numpy(layer["beta"]),
        f"{prefix}.running_mean": torch.from_numpy(layer["moving_mean"]),
        f"{prefix}.running_var": torch.from_numpy(layer["moving_variance"]),
    }


def _generator_state(w: dict[str, dict[str, np.ndarray]], path: Path) -> dict[str, torch.Tensor]:
    dense, convs, bns = (
        _by_kind(w, "dense"),
        _by_kind(w, "conv3d"),
        _by_kind(w, "batch_normalization"),
    )
    if len(dense) != 1 or len(convs) != 4 or len(bns) != 2:
        raise CaloquantError(
            f"{path}: not a 3DGAN Conv3D generator (found {len(dense)} Dense, {len(convs)} Conv3D, "
            f"{len(bns)} BatchNorm layers; expected 1, 4, 2)"
        )
    try:
        s = {
            "dense.weight": _dense(dense[0]["kernel"]),
            "dense.bias": torch.from_numpy(dense[0]["bias"]),
        }
        for i, c in enumerate(convs, start=1):
            s[f"conv{i}.weight"] = _conv(c["kernel"])
            if "bias" in c:
                s[f"conv{i}.bias"] = torch.from_numpy(c["bias"])
        s.update(_bn("bn1", bns[0]))
        s.update(_bn("bn2", bns[1]))
    except (KeyError, ValueError) as exc:
        raise CaloquantError(
            f"{path}: not a 3DGAN Conv3D generator (missing or malformed weight {exc})"
        ) from None
    return s


def _discriminator_state(
    w: dict[str, dict[str, np.ndarray]], path: Path
) -> dict[str, torch.Tensor]:
    convs, bns = _by_kind(w, "conv3d"), _by_kind(w, "batch_normalization")
    if len(convs) != 4 or len(bns) != 3 or "generation" not in w or "auxiliary" not in w:
        raise CaloquantError(
            f"{path}: not a 3DGAN Conv3D discriminator "
            f"(found {len(convs)} Conv3D, {len(bns)} BatchNorm layers, "
            f"heads {sorted(set(w) & {'generation', 'auxiliary'})}; "
            "expected 4, 3, generation + auxiliary)"
        )
    try:
        s = {
            "conv1.weight": _conv(convs[0]["kernel"]),
            "conv1.bias": torch.from_numpy(convs[0]["bias"]),
        }
        for i, c in enumerate(convs[1:]):
            s[f"convs.{i}.weight"] = _conv(c["kernel"])
            s[f"convs.{i}.bias"] = torch.from_numpy(c["bias"])
        for i, b in enumerate(bns):
            s.update(_bn(f"bns.{i}", b))
        for head in ("generation", "auxiliary"):
            s[f"{head}.weight"] = _dense(w[head]["kernel"])
            s[f"{head}.bias"] = torch.from_numpy(w[head]["bias"])
    except (KeyError, ValueError) as exc:
        raise CaloquantError(
            f"{path}: not a 3DGAN Conv3D discriminator (missing or malformed weight {exc})"
        ) from None
    return s


def import_keras_3dgan(
    generator: str | os.PathLike[str], discriminator: str | os.PathLike[str] | None = None
) -> Checkpoint:
    """Convert the Keras 2 3DGAN weight file(s) into a :class:`Checkpoint` (eval mode)."""
    gpath = Path(generator)
    gen, disc = build(SPEC_3DGAN)
    _assign(gen, _generator_state(_layer_weights(gpath), gpath), gpath, "generator")
    provenance = {
        "source": "keras",
        "keras_generator": gpath.name,
        "keras_generator_sha256": file_sha256(gpath),
    }
    if discriminator is not None:
        dpath = Path(discriminator)
        assert disc is not None
        _assign(disc, _discriminator_state(_layer_weights(dpath), dpath), dpath, "discriminator")
        provenance |= {
            "keras_discriminator": dpath.name,
            "keras_discriminator_sha256": file_sha256(dpath),
        }
        disc.eval()
    else:
        disc = None
    gen.eval()
    return Checkpoint(SPEC_3DGAN, gen, disc, provenance)
