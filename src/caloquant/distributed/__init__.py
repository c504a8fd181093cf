"""Mass production on Dask: sharded, resumable, fault-tolerant shower datasets.

``generate(out_dir, n, model=... | engine=..., energy_range=... | energies=...)`` makes the
dataset; ``caloquant.data.open_sharded`` (or ``open_showers``) reads it back as one sample.
"""

from caloquant.distributed.api import GenerateProgress, GenerateResult, generate
from caloquant.distributed.cluster import connect, local_cluster, security_from
from caloquant.distributed.plan import plan_shards, shard_seed
from caloquant.distributed.producers import ENGINES, ModelProducer, ShardProducer, model_sha256, producer_for

__all__ = [
    "ENGINES",
    "GenerateProgress",
    "GenerateResult",
    "ModelProducer",
    "ShardProducer",
    "connect",
    "generate",
    "local_cluster",
    "model_sha256",
    "plan_shards",
    "producer_for",
    "security_from",
    "shard_seed",
]
