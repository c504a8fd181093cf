"""The random state of a training process: seeding per rank and the saved generator states
(torch, numpy, python) as plain data that a checkpoint loads with ``weights_only``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_process(seed: int, rank: int) -> None:
    """Seed torch, numpy and python for this rank's stream of random draws."""
    a, b, c = np.random.SeedSequence([seed, rank, 1]).generate_state(3)
    torch.manual_seed(int(a))
    np.random.seed(int(b))
    random.seed(int(c))


def rng_state() -> dict[str, Any]:
    """torch / numpy / python global generator states as plain data (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [version, list(mt), gauss],
    }


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, mt, gauss = st["python"]
    random.setstate((version, tuple(mt), gauss))
