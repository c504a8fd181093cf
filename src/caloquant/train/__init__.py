"""Training the 3DGAN family (the Conv3D original and the paper's Conv2D generator) with the
authors' recipes: streaming HDF5 data, bf16 autocast, resumable checkpoints, per-epoch physics
validation with best-epoch selection, data-parallel across processes and machines (torchrun).

>>> from caloquant.train import TrainConfig, train
>>> result = train(TrainConfig(data=["g4_*.h5"], out="runs/c2d", model="conv2d", width=0.5))
>>> result.model  # runs/c2d/model.pt, the selected epoch, in GeV
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.train.config import TrainConfig

if TYPE_CHECKING:
    from caloquant.train.ddp import Dist
    from caloquant.train.recipes import RECIPES, Recipe, get_recipe
    from caloquant.train.run import TrainResult, load_run_state, train
    from caloquant.train.trainer import Trainer

# imported on first use (lazy_loader): submodule -> its public names; the configuration
# objects above are imported with the package (the command line reads its defaults there)
_LAZY = {
    "ddp": ["Dist"],
    "recipes": ["RECIPES", "Recipe", "get_recipe"],
    "run": ["TrainResult", "load_run_state", "train"],
    "trainer": ["Trainer"],
}
__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "RECIPES",
    "Dist",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "get_recipe",
    "load_run_state",
    "train",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
