"""The public names of ``caloquant.distributed``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .api import (
    GenerateProgress as GenerateProgress,
    GenerateResult as GenerateResult,
    generate as generate,
)
from .cluster import (
    connect as connect,
    local_cluster as local_cluster,
    security_from as security_from,
)
from .config import ENGINES as ENGINES, GenerateConfig as GenerateConfig
from .plan import plan_shards as plan_shards, shard_seed as shard_seed
from .producers import (
    ModelProducer as ModelProducer,
    ShardProducer as ShardProducer,
    producer_for as producer_for,
)
