"""visionkit: verified, fast computer-vision components on PyTorch, and the CLI around them.

Subpackages are imported on demand (``import visionkit.ops``), so importing ``visionkit`` is cheap.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionkit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
