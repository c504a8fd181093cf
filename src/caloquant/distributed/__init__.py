"""Mass production on Dask: sharded, resumable, fault-tolerant shower datasets.

``generate(out_dir, GenerateConfig(n, model=... | engine=..., energy_range=... |
energies=...))`` makes the dataset; ``caloquant.data.open_sharded`` (or ``open_showers``)
reads it back as one sample.

Only :class:`GenerateConfig` is imported with the package: the command line builds its
options from it, and the rest (Dask, HDF5) is imported on first use, like ``caloquant``'s
own stages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from caloquant.distributed.config import ENGINES, GenerateConfig

if TYPE_CHECKING:
    from caloquant.distributed.api import GenerateProgress, GenerateResult, generate
    from caloquant.distributed.cluster import connect, local_cluster, security_from
    from caloquant.distributed.plan import plan_shards, shard_seed
    from caloquant.distributed.producers import ModelProducer, ShardProducer, producer_for

_LAZY = {
    "GenerateProgress": "api",
    "GenerateResult": "api",
    "generate": "api",
    "connect": "cluster",
    "local_cluster": "cluster",
    "security_from": "cluster",
    "plan_shards": "plan",
    "shard_seed": "plan",
    "ModelProducer": "producers",
    "ShardProducer": "producers",
    "producer_for": "producers",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"caloquant.distributed.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'caloquant.distributed' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
