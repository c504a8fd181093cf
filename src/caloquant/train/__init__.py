"""Training the 3DGAN family (the Conv3D original and the paper's Conv2D generator) with the
authors' recipes: streaming HDF5 data, bf16 autocast, resumable checkpoints, per-epoch physics
validation with best-epoch selection, data-parallel across processes and machines (torchrun).

>>> from caloquant.train import TrainConfig, train
>>> result = train(TrainConfig(data=["g4_*.h5"], out="runs/c2d", model="conv2d", width=0.5))
>>> result.model  # runs/c2d/model.pt, the selected epoch, in GeV
"""

from __future__ import annotations

import lazy_loader

from caloquant.train.config import TrainConfig as TrainConfig

# the names of __init__.pyi, imported on first use (lazy_loader); the configuration
# objects above are imported with the package (the command line reads its defaults there)
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
