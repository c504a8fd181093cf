"""Drawing showers: energies, raw noise, conditioning and batched generation.

Randomness is reproducible and independent of the batch size: the seed is split into one
stream for energies and one for noise, and noise is drawn row block by row block from a
single stream (numpy's generator fills rows sequentially, so blocks concatenate to the
same array as one big draw).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from caloquant.errors import CaloquantError
from caloquant.models.checkpoint import ModelSpec, condition_latent
from caloquant.runtime import torch_threads


class ShowerGenerator(Protocol):
    """Anything that maps conditioned latents (n, latent_dim) to showers (n, *grid) in GeV."""

    spec: ModelSpec

    def generate(self, latent: np.ndarray) -> np.ndarray: ...


@dataclass
class TorchGenerator:
    """A PyTorch generator module in eval mode, float32, on the CPU."""

    spec: ModelSpec
    module: nn.Module
    threads: int | None = None

    def generate(self, latent: np.ndarray) -> np.ndarray:
        with torch_threads(self.threads), torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32)))
        return out.float().numpy()


def check_energy_range(
    energies: np.ndarray, spec: ModelSpec, allow_extrapolation: bool = False
) -> None:
    lo, hi = spec.energy_range_gev
    if allow_extrapolation:
        return
    bad = (energies < lo) | (energies > hi)
    if np.any(bad):
        raise CaloquantError(
            f"{int(bad.sum())} energies outside the model's valid range {lo:g}-{hi:g} GeV "
            f"(min {energies.min():g}, max {energies.max():g}); "
            "--allow-extrapolation forces them"
        )


class NoiseStream:
    """Raw N(0, 1) noise rows, drawn in blocks from one seeded stream, or read from an array."""

    def __init__(self, n: int, dim: int, seed: int, noise: np.ndarray | None = None) -> None:
        self.n, self.dim = n, dim
        if noise is not None:
            noise = np.asarray(noise)
            if noise.ndim != 2 or noise.shape != (n, dim):
                raise CaloquantError(
                    f"noise has shape {noise.shape}, expected ({n}, {dim}) float32"
                )
            if noise.dtype.kind != "f":
                raise CaloquantError(f"noise has dtype {noise.dtype}, expected float32")
            if not np.all(np.isfinite(noise)):
                raise CaloquantError("noise contains NaN or Inf")
        self._noise = noise
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed).spawn(2)[1]))
        self._pos = 0

    def take(self, k: int) -> np.ndarray:
        if self._noise is not None:
            block = self._noise[self._pos : self._pos + k].astype(np.float32)
        else:
            block = self._rng.standard_normal((k, self.dim), dtype=np.float32)
        self._pos += k
        return block


def generate_batches(
    model: ShowerGenerator,
    energies: np.ndarray,
    seed: int = 0,
    noise: np.ndarray | None = None,
    batch: int = 64,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (showers GeV, energies GeV) batches for the given energies."""
    if batch < 1:
        raise CaloquantError(f"batch size must be positive, got {batch}")
    n = energies.shape[0]
    stream = NoiseStream(n, model.spec.noise_dim, seed, noise)
    for start in range(0, n, batch):
        e = energies[start : start + batch]
        latent = condition_latent(stream.take(len(e)), e, model.spec)
        yield model.generate(latent), e


def sample_showers(
    model: ShowerGenerator,
    energies: np.ndarray,
    seed: int = 0,
    noise: np.ndarray | None = None,
    batch: int = 64,
) -> np.ndarray:
    """All showers for ``energies`` in memory (for small samples and tests): the blocks of
    :func:`generate_batches` joined. Not ``generate``: that name is the generator's own method
    (``ShowerGenerator.generate(latent)``) and mass production (``caloquant.generate``)."""
    return np.concatenate(
        [s for s, _ in generate_batches(model, energies, seed, noise, batch)], axis=0
    )
