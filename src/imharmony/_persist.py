"""The model-file envelope shared by every learned model (ComBat, the Nyúl standardizer, ...).

A model is one JSON *manifest* ``MODEL.json`` plus, when it has arrays, one ``.npz`` beside it
whose name carries the first hex digits of its SHA-256 (``MODEL.<digest>.npz``)::

    {"format": "imharmony.model", "envelope_version": 1,
     "kind": "imharmony.combat", "kind_version": 2, "imharmony_version": "...",
     "content": {...every field that affects results...},
     "arrays": {"file": "MODEL.<digest>.npz", "sha256": "...", "bytes": N,
                "entries": {"beta": {"dtype": "<f8", "shape": [q, G]}, ...}} | null,
     "checksums": {"<field>": "<sha256 of its canonical JSON>", ...}}

Replacing a model is one atomic step: the new ``.npz`` is written under its own (new) name first,
then the manifest is renamed over the old one; only after that is the old ``.npz`` removed. A kill
or a failed write at any point leaves either the old model or the new one, never a mixed pair.

Arrays too large to hold twice in memory (per-voxel estimates of millions of voxels) can be written
block by block (:class:`ColumnBlocks`, stored in Fortran order so that a block of columns is one
contiguous run of bytes) and read back lazily (``load_model(..., lazy=...)`` returns a
:class:`StoredArray` that reads blocks of columns from the verified file).

Loading is safe for a file from a stranger and bounded: sizes are checked before anything is read
in full (the manifest's size; the ``.npz``'s size, members, compression and every array's declared
dtype and shape against what the model's own fields imply), every field of the manifest is under a
checksum (a mismatch names the field), the ``.npz`` is hashed before it is parsed, and nothing is
ever unpickled. Errors are :class:`~imharmony.errors.ModelFileError` naming the file and the field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import ModelFileError
from .io._atomic import atomic_path, temporary_path

__all__ = [
    "ArraySpec",
    "ColumnBlocks",
    "ModelFile",
    "StoredArray",
    "check",
    "load_model",
    "save_model",
]

ENVELOPE = "imharmony.model"
ENVELOPE_VERSION = 1

#: Largest manifest read (bytes): feature names of 10^6 features fit easily.
MAX_MANIFEST_BYTES = 256 * 2**20
#: Largest ``.npz`` read (bytes).
MAX_ARRAYS_BYTES = 8 * 2**30
#: Array dtypes a model file may hold (no object, no structured types).
_DTYPES = {"f": "floating", "i": "integer", "u": "integer", "b": "boolean"}
_DIGITS = 16  # hex digits of the .npz digest kept in its file name


@dataclass(frozen=True)
class ArraySpec:
    """What an array of a model must be: its shape and one of the dtype kinds ``"f"/"i"/"b"``."""

    shape: tuple[int, ...]
    kinds: str = "f"


@dataclass(frozen=True)
class ColumnBlocks:
    """An array to save without holding it whole: ``blocks()`` yields consecutive blocks of its
    columns (slices along the last axis, first to last); it is stored in Fortran order."""

    shape: tuple[int, ...]
    dtype: Any
    blocks: Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class StoredArray:
    """An array of a verified model file, read on demand (``load_model(..., lazy=...)``)."""

    file: Path
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool

    def columns(self, start: int, stop: int) -> np.ndarray:
        """The columns ``start:stop`` (last axis) as an in-memory array, reading only them."""
        lead = math.prod(self.shape[:-1])
        count = (stop - start) * lead
        data = np.fromfile(self.file, dtype=self.dtype, count=count,
                           offset=self.offset + start * lead * self.dtype.itemsize)
        if data.size != count:
            raise ModelFileError(f"{self.file}: truncated while reading.")
        return data.reshape((*self.shape[:-1], stop - start), order="F")

    def read(self) -> np.ndarray:
        """The whole array."""
        count = math.prod(self.shape)
        data = np.fromfile(self.file, dtype=self.dtype, count=count, offset=self.offset)
        if data.size != count:
            raise ModelFileError(f"{self.file}: truncated while reading.")
        return data.reshape(self.shape, order="F" if self.fortran else "C")


@dataclass
class ModelFile:
    """A loaded, verified model file: its content fields and its arrays."""

    path: Path
    content: dict[str, Any]
    arrays: dict[str, Any] = field(default_factory=dict)  # ndarray, or StoredArray if lazy
    imharmony_version: str = ""


# ------------------------------------------------------------------------------------------------
# writing


def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True
    ).encode("ascii")


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()


def _npz_pattern(stem: str) -> re.Pattern[str]:
    return re.compile(re.escape(stem) + r"\.[0-9a-f]{" + str(_DIGITS) + r"}\.npz")


def save_model(
    path: str | os.PathLike[str],
    *,
    kind: str,
    version: int,
    content: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray | ColumnBlocks] | None = None,
) -> Path:
    """Write a model as a whole: its ``.npz`` under a new name, then the manifest atomically.

    Parameters
    ----------
    path : path-like
        The manifest, ending in ``.json``.
    kind, version : str, int
        What the model is (e.g. ``"imharmony.combat"``) and the version of its content schema.
    content : mapping
        JSON-serializable fields (no NaN or infinity); each gets its own checksum.
    arrays : mapping of str to ndarray or ColumnBlocks, optional
        Numeric arrays (float, int or bool), saved uncompressed in the ``.npz``; a
        :class:`ColumnBlocks` is written block by block.

    Returns
    -------
    Path
        ``path``. Older ``.npz`` files of the same model (and orphans of an interrupted save)
        are removed once the new manifest is in place.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ModelFileError(f"{path}: a model is saved as MODEL.json (plus arrays beside it).")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder; give a file name ending in .json.")
    content = dict(content)
    try:
        checksums = {k: _digest(v) for k, v in content.items()}
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: model content is not JSON-safe ({exc}).") from exc
    stem = path.name[: -len(path.suffix)]
    record: dict[str, Any] | None = None
    if arrays:
        clean: dict[str, np.ndarray | ColumnBlocks] = {}
        for name, arr in arrays.items():
            a = arr if isinstance(arr, ColumnBlocks) else np.asarray(arr)
            if np.dtype(a.dtype).kind not in _DTYPES:
                raise ModelFileError(f"array {name!r} of dtype {a.dtype} cannot be saved.")
            clean[name] = a
        with temporary_path(path.with_suffix(".npz")) as tmp:
            # what numpy.savez writes (uncompressed: sizes on disk bound what loading reads)
            with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
                for name, a in clean.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        if isinstance(a, ColumnBlocks):
                            _write_blocks(member, name, a)
                        else:
                            np.lib.format.write_array(member, a, allow_pickle=False)
            sha = _file_sha256(tmp)
            npz = path.with_name(f"{stem}.{sha[:_DIGITS]}.npz")
            os.replace(tmp, npz)
        record = {
            "file": npz.name,
            "sha256": sha,
            "bytes": npz.stat().st_size,
            "entries": {
                k: {"dtype": np.dtype(a.dtype).str, "shape": [int(s) for s in a.shape]}
                for k, a in clean.items()
            },
        }
    doc = {
        "format": ENVELOPE,
        "envelope_version": ENVELOPE_VERSION,
        "kind": kind,
        "kind_version": int(version),
        "imharmony_version": __version__,
        "content": content,
        "arrays": record,
        "checksums": {**checksums, "<arrays>": _digest(record), "<kind>": _digest(kind)},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    keep = record["file"] if record else None
    for other in path.parent.iterdir():
        if other.name != keep and _npz_pattern(stem).fullmatch(other.name):
            with contextlib.suppress(OSError):
                other.unlink()
    return path


def _write_blocks(out: Any, name: str, spec: ColumnBlocks) -> None:
    """An ``.npy`` in Fortran order from consecutive blocks of columns."""
    dtype = np.dtype(spec.dtype)
    shape = tuple(int(s) for s in spec.shape)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": True,
              "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    done = 0
    for block in spec.blocks():
        block = np.asarray(block, dtype=dtype)
        if block.shape[:-1] != shape[:-1] or done + block.shape[-1] > shape[-1]:
            raise ModelFileError(f"array {name!r}: a block of shape {block.shape} does not fit "
                                 f"the declared {shape}.")
        out.write(np.ascontiguousarray(block.T).tobytes())
        done += block.shape[-1]
    if done != shape[-1]:
        raise ModelFileError(f"array {name!r}: its blocks hold {done} of {shape[-1]} columns.")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# reading


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a model file")


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; check the path.")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ModelFileError(
            f"{path}: {size} bytes is larger than any model manifest "
            f"({MAX_MANIFEST_BYTES} bytes at most); this is not a model file."
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"{path}: not a model file (invalid JSON: {str(exc)[:200]}); it may be truncated or "
            "corrupted — save the model again."
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: not an imharmony model file (JSON {type(doc).__name__}).")
    return doc


def load_model(
    path: str | os.PathLike[str],
    *,
    kind: str,
    version: int,
    validate: Callable[[dict[str, Any]], Mapping[str, ArraySpec]],
    lazy: Collection[str] = (),
) -> ModelFile:
    """Read and verify a model written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
        The manifest (``MODEL.json``).
    kind, version : str, int
        The expected kind and content version; anything else is refused with a clear message.
    validate : callable
        Called with the content (checksums verified) before any array is read: it type-checks
        every field (raising ``ModelFileError`` via :func:`check`) and returns the exact
        :class:`ArraySpec` of every array, which the ``.npz`` must match.
    lazy : collection of str
        Arrays returned as :class:`StoredArray` (header and whole-file checksum verified,
        the values read on demand) instead of being read into memory.

    Raises
    ------
    ModelFileError
        Missing, truncated, tampered, inconsistent, oversized, other kind or other version.
    """
    path = Path(path)
    doc = _read_manifest(path)
    if doc.get("format") != ENVELOPE:
        legacy = doc.get("format")
        if isinstance(legacy, str) and legacy.startswith("imharmony."):
            raise ModelFileError(
                f"{path}: a {legacy} model in the format of an older imharmony, which did not "
                "protect every field with a checksum; re-fit the model with this version."
            )
        raise ModelFileError(f"{path}: not an imharmony model file (no 'format' of {ENVELOPE}).")
    if doc.get("envelope_version") != ENVELOPE_VERSION:
        raise ModelFileError(
            f"{path}: model envelope version {doc.get('envelope_version')!r} is not supported by "
            f"imharmony {__version__} (it reads version {ENVELOPE_VERSION}); re-fit the model or "
            "use the imharmony version that wrote it."
        )
    if doc.get("kind") != kind:
        raise ModelFileError(
            f"{path}: holds a {doc.get('kind')!r} model, not a {kind!r} model; give the right file."
        )
    if doc.get("kind_version") != version:
        raise ModelFileError(
            f"{path}: {kind} model version {doc.get('kind_version')!r} is not supported by "
            f"imharmony {__version__} (it reads version {version}); re-fit the model with this "
            "version."
        )
    content, record, sums = doc.get("content"), doc.get("arrays"), doc.get("checksums")
    if not isinstance(content, dict) or not isinstance(sums, dict):
        raise ModelFileError(f"{path}: field 'content' or 'checksums' is missing or not an object.")
    expected = {**{k: _digest(v) for k, v in content.items()}, "<arrays>": _digest(record)}
    expected["<kind>"] = _digest(kind)
    bad = sorted(k for k in expected.keys() | sums.keys() if expected.get(k) != sums.get(k))
    if bad:
        names = ", ".join(repr(k.strip("<>")) for k in bad)
        raise ModelFileError(
            f"{path}: field(s) {names} do not match their checksum; the model file was edited or "
            "corrupted. Restore it or re-fit the model."
        )
    specs = dict(validate(content))
    arrays = _read_arrays(path, record, specs, lazy) if specs or record is not None else {}

    version_text = doc.get("imharmony_version")
    return ModelFile(
        path, content, arrays, version_text if isinstance(version_text, str) else ""
    )


def _read_arrays(
    path: Path, record: Any, specs: Mapping[str, ArraySpec], lazy: Collection[str] = ()
) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ModelFileError(f"{path}: field 'arrays' is missing; the model needs its arrays.")
    name, sha, size = record.get("file"), record.get("sha256"), record.get("bytes")
    entries = record.get("entries")
    if not (
        isinstance(name, str)
        and isinstance(sha, str)
        and isinstance(size, int)
        and isinstance(entries, dict)
    ):
        raise ModelFileError(f"{path}: field 'arrays' is malformed (file, sha256, bytes, entries).")
    # a plain file name beside the manifest, carrying the digest (the manifest may be renamed)
    if (
        Path(name).name != name
        or name.startswith(".")
        or not name.endswith(f".{sha[:_DIGITS]}.npz")
    ):
        raise ModelFileError(f"{path}: field 'arrays.file' ({name!r}) is not this model's arrays.")
    if set(entries) != set(specs):
        raise ModelFileError(
            f"{path}: field 'arrays.entries' lists {sorted(entries)}, expected {sorted(specs)}."
        )
    budget = 0
    for key, spec in specs.items():
        entry = entries[key]
        shape = entry.get("shape") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        try:
            dt = np.dtype(dtype) if isinstance(dtype, str) else None
        except TypeError:
            dt = None
        if dt is None or dt.kind not in spec.kinds or list(spec.shape) != shape:
            raise ModelFileError(
                f"{path}: array {key!r} is declared as {dtype} {shape}, but the model's fields "
                f"imply shape {list(spec.shape)} of kind {spec.kinds!r}; the model is inconsistent."
            )
        budget += math.prod(spec.shape) * dt.itemsize
    npz = path.with_name(name)
    if not npz.is_file():
        raise ModelFileError(
            f"{path}: its arrays file {name} is missing; keep the .json and .npz together."
        )
    actual = npz.stat().st_size
    if actual != size or size > MAX_ARRAYS_BYTES or budget > size:
        raise ModelFileError(
            f"{npz}: {actual} bytes where the model declares {size} (arrays of {budget} bytes); "
            "the file is truncated, replaced or not this model's."
        )
    if _file_sha256(npz) != sha:
        raise ModelFileError(
            f"{npz}: checksum does not match {path.name}; the files are corrupted or from "
            "different models."
        )
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(npz) as zf, open(npz, "rb") as raw:
            infos = {i.filename: i for i in zf.infolist()}
            if set(infos) != {f"{k}.npy" for k in specs}:
                raise ModelFileError(f"{npz}: its members do not match the model's arrays.")
            for key, spec in specs.items():
                info = infos[f"{key}.npy"]
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise ModelFileError(f"{npz}: member {key!r} is compressed or oversized.")
                with zf.open(info) as fh:
                    if key in lazy:
                        out[key] = _stored_npy(fh, raw, info, npz, key, entries[key], spec)
                    else:
                        out[key] = _read_npy(fh, npz, key, entries[key], spec)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{npz}: not a valid arrays file ({exc}).") from exc
    return out


def _npy_header(
    fh: Any, npz: Path, key: str, entry: dict[str, Any], spec: ArraySpec
) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    major, minor = fmt.read_magic(fh)
    if (major, minor) == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    if list(shape) != list(spec.shape) or dtype.str != entry["dtype"] or dtype.hasobject:
        raise ModelFileError(
            f"{npz}: array {key!r} holds {dtype} {list(shape)}, not the declared "
            f"{entry['dtype']} {list(spec.shape)}."
        )
    return shape, fortran, dtype


def _stored_npy(fh: Any, raw: Any, info: zipfile.ZipInfo, npz: Path, key: str,
                entry: dict[str, Any], spec: ArraySpec) -> StoredArray:
    """Where the values of a stored (uncompressed) member start in the ``.npz``."""
    shape, fortran, dtype = _npy_header(fh, npz, key, entry, spec)
    if len(shape) > 1 and not fortran:  # columns could not be read without the whole array
        raise ModelFileError(
            f"{npz}: array {key!r} is stored in C order; an array read block by block must be "
            "stored in Fortran order, as imharmony writes it. Re-fit the model."
        )
    raw.seek(info.header_offset)
    local = raw.read(30)  # the member's local header: its name and extra field lengths at 26
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ModelFileError(f"{npz}: member {key!r} has no valid local header.")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len + fh.tell()
    if start + math.prod(shape) * dtype.itemsize > info.header_offset + 30 + name_len + \
            extra_len + info.file_size:
        raise ModelFileError(f"{npz}: array {key!r} is truncated.")
    return StoredArray(npz, start, dtype, tuple(shape), bool(fortran))


def _read_npy(fh: Any, npz: Path, key: str, entry: dict[str, Any], spec: ArraySpec) -> np.ndarray:
    shape, fortran, dtype = _npy_header(fh, npz, key, entry, spec)
    count = math.prod(shape)
    data = fh.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ModelFileError(f"{npz}: array {key!r} is truncated.")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


# ------------------------------------------------------------------------------------------------
# field checks for ``validate`` callbacks


def check(path: str | os.PathLike[str], name: str, value: Any, ok: bool, expected: str) -> Any:
    """Return ``value`` if ``ok``, else raise :class:`ModelFileError` naming the field.

    ``expected`` says what the field must be ("a list of str", "an int >= 0", ...).
    """
    if not ok:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ModelFileError(
            f"{path}: field {name!r} must be {expected}; got {shown}. The model file was edited "
            "or corrupted; re-fit the model."
        )
    return value


def is_label(value: Any) -> bool:
    """A site/level label as JSON holds it: str, int, bool or a finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def is_str_list(value: Any) -> bool:
    """A JSON list of strings."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def is_int(value: Any, low: int = 0, high: int | None = None) -> bool:
    """An int (not a bool) in ``[low, high]``."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def is_table(
    value: Any, columns: Mapping[str, Callable[[Any], bool]], n: int | None = None
) -> bool:
    """A JSON object of equal-length lists (a table by columns): exactly ``columns``, each entry
    passing its column's test, ``n`` rows when given."""
    if not isinstance(value, dict) or set(value) != set(columns):
        return False
    lengths = {len(v) for v in value.values() if isinstance(v, list)}
    if len(lengths) > 1 or (value and not lengths) or any(
        not isinstance(v, list) for v in value.values()
    ):
        return False
    if n is not None and lengths and lengths != {n}:
        return False
    return all(all(test(x) for x in value[c]) for c, test in columns.items())


def is_number(value: Any, *, none_ok: bool = False) -> bool:
    """A finite JSON number (not a bool), or ``None`` when ``none_ok``."""
    if value is None:
        return none_ok
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
