"""Shower data: the 3DGAN and CaloChallenge HDF5 layouts, chunked reads, atomic writes."""

from caloquant.data.energies import energies_for
from caloquant.data.formats import (
    FORMATS,
    MEV_PER_GEV,
    Format,
    ShowerReader,
    ShowerWriter,
    check_chunk,
    open_showers,
    provenance,
    read_showers,
    summarize,
    write_showers,
)

__all__ = [
    "FORMATS",
    "MEV_PER_GEV",
    "Format",
    "ShowerReader",
    "ShowerWriter",
    "check_chunk",
    "energies_for",
    "open_showers",
    "provenance",
    "read_showers",
    "summarize",
    "write_showers",
]
