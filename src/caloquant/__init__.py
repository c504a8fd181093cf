"""caloquant: reduced-precision calorimeter-shower GANs that stay physically right."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("caloquant")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from caloquant.errors import CaloquantError

__all__ = ["CaloquantError", "__version__"]
