"""Mass production on Dask: sharded, resumable, fault-tolerant shower datasets.

``generate(out_dir, GenerateConfig(n, model=... | engine=..., energy_range=... |
energies=...))`` makes the dataset; ``caloquant.data.open_sharded`` (or ``open_showers``)
reads it back as one sample.

Only :class:`GenerateConfig` is imported with the package: the command line builds its
options from it, and the rest (Dask, HDF5) is imported on first use, like ``caloquant``'s
own stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.distributed.config import ENGINES, GenerateConfig

if TYPE_CHECKING:
    from caloquant.distributed.api import GenerateProgress, GenerateResult, generate
    from caloquant.distributed.cluster import connect, local_cluster, security_from
    from caloquant.distributed.plan import plan_shards, shard_seed
    from caloquant.distributed.producers import ModelProducer, ShardProducer, producer_for

# imported on first use (lazy_loader): submodule -> its public names
_LAZY = {
    "api": ["GenerateProgress", "GenerateResult", "generate"],
    "cluster": ["connect", "local_cluster", "security_from"],
    "plan": ["plan_shards", "shard_seed"],
    "producers": ["ModelProducer", "ShardProducer", "producer_for"],
}


__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "ENGINES",
    "GenerateConfig",
    "GenerateProgress",
    "GenerateResult",
    "ModelProducer",
    "ShardProducer",
    "connect",
    "generate",
    "local_cluster",
    "plan_shards",
    "producer_for",
    "security_from",
    "shard_seed",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
