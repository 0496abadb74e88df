"""Feature tables: CSV and Parquet, one row per sample, written atomically."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ._atomic import atomic_path

__all__ = ["TABLE_SUFFIXES", "read_table", "write_json", "write_table"]

logger = logging.getLogger(__name__)

_PARQUET = {".parquet", ".pq"}
#: Suffixes of the files read as tables (a command taking an image or a table tells them apart).
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".tab", ".txt", *sorted(_PARQUET))


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in _PARQUET


def _separator(path: Path) -> str:
    """The column separator of a text table: tab for .tsv/.tab, else the most frequent of
    ``,``, ``;`` and tab on the header line (spreadsheets in many locales write ``;``)."""
    if path.suffix.lower() in {".tsv", ".tab"}:
        return "\t"
    with path.open("r", encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    sep = max(counts, key=lambda k: counts[k])
    if counts[sep] == 0:
        return ","
    if sep != ",":
        logger.info("%s: %r-separated columns detected", path, sep)
    return sep


def _decimal_commas(df: pd.DataFrame) -> bool:
    """True when text columns hold numbers written with a decimal comma ("1,5")."""
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c].dtype)]
    for c in text:
        values = df[c].dropna().astype(str)
        if len(values) and values.str.fullmatch(r"\s*[-+]?\d+,\d+([eE][-+]?\d+)?\s*").mean() > 0.8:
            return True
    return False


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a feature table (CSV, TSV or Parquet, chosen by the file suffix).

    The separator of a text table is detected from its header line (``,``, ``;`` or tab; a
    ``;``-separated table may use decimal commas).

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
            sep = _separator(path)
            df = pd.read_csv(path, sep=sep)
            if sep == ";" and _decimal_commas(df):
                logger.info("%s: ';'-separated with decimal commas", path)
                df = pd.read_csv(path, sep=sep, decimal=",")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot be read as a table ({exc}).") from exc
    if df.shape[0] == 0:
        raise DataError(f"{path}: the table has no rows.")
    if df.shape[1] == 1:
        header = str(df.columns[0])
        other = next((s for s in ("|", " ") if s in header.strip()), None)
        if other is not None:
            raise DataError(
                f"{path}: 1 column found ({header[:60]!r}) — is the file {other!r}-separated? "
                "Save it with ',', ';' or tab between the columns."
            )
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


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars and arrays to Python, NaN and infinities to null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        return [_plain(v) for v in list(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def write_json(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write machine-readable results as strict JSON (NaN written as null), atomically.

    Returns the path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_plain(doc), indent=2, allow_nan=False) + "\n",
                       encoding="utf-8")
    return path
