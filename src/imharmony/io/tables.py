"""Feature tables: CSV and Parquet, one row per sample, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ._atomic import atomic_path

__all__ = ["read_table", "write_table"]

_PARQUET = {".parquet", ".pq"}


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in _PARQUET


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a feature table (CSV, TSV or Parquet, chosen by the file suffix).

    Raises
    ------
    DataError
        If the file does not exist, cannot be parsed, or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path of the feature table.")
    try:
        if _is_parquet(path):
            try:
                df = pd.read_parquet(path)
            except ImportError as exc:  # pragma: no cover - depends on the optional extra
                raise DataError(
                    f"{path}: reading Parquet needs pyarrow; install it with "
                    "'pip install imharmony[parquet]'."
                ) from exc
        else:
            sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
            df = pd.read_csv(path, sep=sep)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot be read as a table ({exc}).") from exc
    if df.shape[0] == 0:
        raise DataError(f"{path}: the table has no rows.")
    return df


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a table atomically as CSV or Parquet (by suffix). Returns the path written."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if _is_parquet(path):
            df.to_parquet(tmp, index=False)
        else:
            sep = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
            # chunks of >= 256 rows: pandas' default (10^5 cells) is one row per chunk on a
            # 10^5-column table, and every chunk walks every column
            chunk = max(256, 100_000 // max(1, df.shape[1]))
            df.to_csv(tmp, index=False, sep=sep, float_format="%.17g", chunksize=chunk)
    return path
