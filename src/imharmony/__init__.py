"""imharmony: harmonize quantitative images and features across sites without erasing biology."""

from ._version import __version__
from .errors import HarmonizationError
from .image import Image

__all__ = ["HarmonizationError", "Image", "__version__"]
