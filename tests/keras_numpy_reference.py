"""An independent float64 numpy implementation of the Keras 3DGAN, read straight from the
Keras HDF5 weight files. It shares no code with caloquant's importer or PyTorch model: it
works channels-last, as Keras does, so layout mistakes in the port cannot cancel out.
"""

from __future__ import annotations

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def load(path: str) -> dict[str, np.ndarray]:
    """{'<layer>/<weight>': array} with the model-group prefix stripped."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as h5:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                parts = name.split("/")
                out["/".join(parts[-2:]).replace(":0", "")] = np.asarray(obj, dtype=np.float64)

        h5.visititems(visit)
    return out


def conv_valid(x: np.ndarray, k: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x (X, Y, Z, C) channels-last, k (kx, ky, kz, C, O): cross-correlation, 'valid'."""
    win = sliding_window_view(x, k.shape[:3], axis=(0, 1, 2))  # (X', Y', Z', C, kx, ky, kz)
    y = np.tensordot(win, k, axes=([4, 5, 6, 3], [0, 1, 2, 3]))
    return y if b is None else y + b


def pad(x: np.ndarray, before: tuple[int, int, int], after: tuple[int, int, int]) -> np.ndarray:
    return np.pad(x, [(before[0], after[0]), (before[1], after[1]), (before[2], after[2]), (0, 0)])


def same(x: np.ndarray, k: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    ks = k.shape[:3]
    return conv_valid(pad(x, tuple((s - 1) // 2 for s in ks), tuple(s // 2 for s in ks)), k, b)


def lrelu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.3 * x)


def bn(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return (x - w[f"{name}/moving_mean"]) / np.sqrt(w[f"{name}/moving_variance"] + 1e-3) * w[
        f"{name}/gamma"
    ] + w[f"{name}/beta"]


def up(x: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    for ax, r in enumerate(f):
        x = np.repeat(x, r, axis=ax)
    return x


def generator(w: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """One latent (200,) -> shower (25, 25, 25)."""
    h = (z @ w["dense_1/kernel"] + w["dense_1/bias"]).reshape(7, 7, 8, 8)
    h = up(
        bn(lrelu(same(h, w["conv3d_1/kernel"], w["conv3d_1/bias"])), w, "batch_normalization_1"),
        (2, 2, 2),
    )
    h = pad(h, (2, 2, 0), (2, 2, 0))
    h = up(
        bn(
            lrelu(conv_valid(h, w["conv3d_2/kernel"], w["conv3d_2/bias"])),
            w,
            "batch_normalization_2",
        ),
        (2, 2, 3),
    )
    h = pad(h, (1, 0, 3), (1, 0, 3))
    h = lrelu(conv_valid(h, w["conv3d_3/kernel"], w["conv3d_3/bias"]))
    h = np.maximum(conv_valid(h, w["conv3d_4/kernel"], None), 0.0)
    return h[..., 0]


def discriminator(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[float, float, float]:
    """One shower (25, 25, 25) -> (p_real, aux, ecal), inference mode (no dropout)."""
    h = lrelu(same(x[..., None], w["conv3d_5/kernel"], w["conv3d_5/bias"]))
    for conv, norm, p in (
        ("conv3d_6", "batch_normalization_3", 2),
        ("conv3d_7", "batch_normalization_4", 2),
        ("conv3d_8", "batch_normalization_5", 1),
    ):
        h = bn(
            lrelu(conv_valid(pad(h, (p, p, p), (p, p, p)), w[f"{conv}/kernel"], w[f"{conv}/bias"])),
            w,
            norm,
        )
    X, Y, Z, C = h.shape
    h = (
        h[: X // 2 * 2, : Y // 2 * 2, : Z // 2 * 2]
        .reshape(X // 2, 2, Y // 2, 2, Z // 2, 2, C)
        .mean(axis=(1, 3, 5))
    )
    f = h.reshape(-1)
    p = 1.0 / (1.0 + np.exp(-(f @ w["generation/kernel"] + w["generation/bias"])[0]))
    aux = (f @ w["auxiliary/kernel"] + w["auxiliary/bias"])[0]
    return float(p), float(aux), float(x.sum())
