"""Shower data: the 3DGAN and CaloChallenge HDF5 layouts, chunked reads, atomic writes,
sharded datasets.

Modules, each importing only those before it: ``checks`` (shower contents), ``formats`` (file
layouts and the file reader), ``writers``, ``sharded`` (sharded datasets, read through file
readers), ``source`` (:func:`open_showers`: a file or a sharded dataset, one interface);
``energies`` (incident energies of a run) stands alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

from caloquant.data.energies import Energies, SampleConfig, energies_for

if TYPE_CHECKING:
    from caloquant.data.checks import check_chunk
    from caloquant.data.formats import FORMATS, MEV_PER_GEV, Format, ShowerReader, check_format
    from caloquant.data.sharded import (
        SHARD_MANIFEST,
        SHARDED_VERSION,
        ShardedReader,
        file_sha256,
        is_sharded,
        open_sharded,
        read_shard_manifest,
        shard_name,
        verify_shards,
    )
    from caloquant.data.source import open_showers, read_showers, summarize
    from caloquant.data.writers import (
        COMPRESSIONS,
        ShowerWriter,
        compression_options,
        provenance,
        write_showers,
    )

# imported on first use (lazy_loader): submodule -> its public names; the configuration
# objects above are imported with the package (the command line reads its defaults there)
_LAZY = {
    "checks": ["check_chunk"],
    "formats": ["FORMATS", "MEV_PER_GEV", "Format", "ShowerReader", "check_format"],
    "sharded": [
        "SHARD_MANIFEST",
        "SHARDED_VERSION",
        "ShardedReader",
        "file_sha256",
        "is_sharded",
        "open_sharded",
        "read_shard_manifest",
        "shard_name",
        "verify_shards",
    ],
    "source": ["open_showers", "read_showers", "summarize"],
    "writers": [
        "COMPRESSIONS",
        "ShowerWriter",
        "compression_options",
        "provenance",
        "write_showers",
    ],
}
__getattr__ = lazy_loader.attach(__name__, submod_attrs=_LAZY)[0]

__all__ = [
    "COMPRESSIONS",
    "Energies",
    "SampleConfig",
    "check_format",
    "FORMATS",
    "MEV_PER_GEV",
    "SHARDED_VERSION",
    "SHARD_MANIFEST",
    "Format",
    "ShardedReader",
    "ShowerReader",
    "ShowerWriter",
    "check_chunk",
    "compression_options",
    "energies_for",
    "file_sha256",
    "is_sharded",
    "open_sharded",
    "open_showers",
    "provenance",
    "read_shard_manifest",
    "read_showers",
    "shard_name",
    "summarize",
    "verify_shards",
    "write_showers",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
