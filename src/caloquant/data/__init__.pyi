"""The public names of ``caloquant.data``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .checks import check_chunk as check_chunk
from .energies import (
    Energies as Energies,
    SampleConfig as SampleConfig,
    energies_for as energies_for,
)
from .formats import (
    FORMATS as FORMATS,
    MEV_PER_GEV as MEV_PER_GEV,
    Format as Format,
    ShowerReader as ShowerReader,
    check_format as check_format,
)
from .sharded import (
    SHARD_MANIFEST as SHARD_MANIFEST,
    SHARDED_VERSION as SHARDED_VERSION,
    ShardedReader as ShardedReader,
    file_sha256 as file_sha256,
    is_sharded as is_sharded,
    open_sharded as open_sharded,
    read_shard_manifest as read_shard_manifest,
    shard_name as shard_name,
    verify_shards as verify_shards,
)
from .source import (
    open_showers as open_showers,
    read_showers as read_showers,
    summarize as summarize,
)
from .writers import (
    COMPRESSIONS as COMPRESSIONS,
    ShowerWriter as ShowerWriter,
    compression_options as compression_options,
    provenance as provenance,
    write_showers as write_showers,
)
