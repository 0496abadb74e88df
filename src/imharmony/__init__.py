"""imharmony: harmonize quantitative images and features across sites without erasing biology.

The public API is listed in ``__all__``; everything else is internal.
"""

from ._version import __version__
from .errors import HarmonizationError
from .features import ComBat
from .image import Image
from .io import read_table, write_table

__all__ = [
    "ComBat",
    "HarmonizationError",
    "Image",
    "__version__",
    "read_table",
    "write_table",
]
