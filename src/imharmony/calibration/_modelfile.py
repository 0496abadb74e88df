"""Model files of the calibration estimators: the project's JSON + ``.npz`` envelope.

The layout is ComBat's (:meth:`imharmony.ComBat.save`): a JSON document with ``format``,
``format_version``, ``imharmony_version``, ``params``, ``metadata`` and ``arrays`` (the ``.npz``
beside it, named by its file name and SHA-256), loaded without pickle. This is the one place the
calibration estimators read and write it, so switching them to a shared envelope module is a
change here only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ModelFileError
from ..io._atomic import atomic_path

__all__ = ["check_shapes", "load_envelope", "reading", "save_envelope"]


def save_envelope(
    path: str | os.PathLike[str],
    *,
    fmt: str,
    version: int,
    params: dict[str, Any],
    state: dict[str, Any],
    arrays: dict[str, np.ndarray],
    metadata: dict[str, Any] | None,
) -> Path:
    """Write ``path`` (JSON) and its arrays (same stem, ``.npz``), both atomically."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ModelFileError(f"{path}: a model is saved as .json (plus .npz); rename it.")
    npz_path = path.with_suffix(".npz")
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    doc = {
        "format": fmt,
        "format_version": version,
        "imharmony_version": __version__,
        "params": params,
        "state": state,
        "arrays": {
            "file": npz_path.name,
            "sha256": hashlib.sha256(npz_path.read_bytes()).hexdigest(),
        },
        "metadata": dict(metadata or {}),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    return path


def load_envelope(
    path: str | os.PathLike[str], *, fmt: str, version: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a model written by :func:`save_envelope`; returns the JSON document and the arrays."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file.")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a model file (invalid JSON: {exc}).") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ModelFileError(f"{path}: not an {fmt} model file (format {found!r}).")
    if doc.get("format_version") != version:
        raise ModelFileError(
            f"{path}: model format version {doc.get('format_version')!r} is not supported by "
            f"imharmony {__version__} (it reads version {version}); refit the model."
        )
    try:
        name = doc["arrays"]["file"]
        if Path(name).name != name:
            raise ModelFileError(f"{path}: invalid array file name {name!r} in the model.")
        npz_path = path.with_name(name)
        if not npz_path.is_file():
            raise ModelFileError(
                f"{path}: its arrays file {name} is missing; keep the .json and .npz together."
            )
        blob = npz_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != doc["arrays"]["sha256"]:
            raise ModelFileError(
                f"{npz_path}: checksum does not match {path.name}; the files are corrupted or "
                "from different models."
            )
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise ModelFileError(f"{path}: corrupted model ({type(exc).__name__}: {exc}).") from exc
    return doc, arrays


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn a missing key or a wrong type met while rebuilding a model into a ModelFileError."""
    try:
        yield
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: corrupted {what} ({type(exc).__name__}: {exc}).") from exc


def check_shapes(path: str | os.PathLike[str], arrays: dict[str, np.ndarray],
                 expected: dict[str, tuple[int, ...]]) -> None:
    """Refuse a model file whose arrays do not have the shapes its JSON implies."""
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ModelFileError(
                f"{path}: array {name!r} has shape {arrays[name].shape}, expected {shape}; the "
                "model file is inconsistent."
            )
