"""caloquant's version, readable from every layer without importing the package façade."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("caloquant")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
