"""Reading and writing images and feature tables."""

from ._atomic import atomic_path
from .tables import read_table, write_table

__all__ = ["atomic_path", "read_table", "write_table"]
