"""Harmonize a batch of images listed in a manifest: resolution, grid, intensities.

One manifest row per image. Columns (:data:`MANIFEST_COLUMNS`, any other column is an error that
names it, with the closest known name):

``path`` (required)
    Image file or DICOM folder; relative paths are relative to the manifest's folder.
``site`` (required)
    Site / scanner label, reported in the summary.
``mask`` (optional)
    Mask on the image's grid (non-zero = inside): the region normalization statistics come
    from; it is resampled alongside the image and written beside it.
``source_fwhm`` (optional)
    Native resolution in mm: one number, or ``"x;y;z"`` per array axis.
``id`` (optional)
    Output name; by default the image file name without its suffix.
MR metadata (optional)
    DICOM keywords (``RepetitionTime``, ``EchoTime``, ``FlipAngle``, ...) or protocol-table
    columns (``repetition_time_ms``, ...; :data:`MR_METADATA_COLUMNS`); when present, every row
    must be harmonizable with the first one
    (:func:`imharmony.physics.compatibility.require_harmonizable`) before anything runs.

Per row, in this order: match the resolution to the common target on the native grid; resample
to a new spacing (each image keeps its extent and orientation) or onto one common grid (a
reference image's, or the first row's: orientation, origin, spacing and shape; masks by nearest
neighbour); normalize the intensities inside the (resampled) mask — per image, or with the
Nyúl standardizer fitted on the whole batch. A run that selects none of these steps is refused.
Outputs go to ``output_dir/<name>.nii.gz`` (``<name>_mask.nii.gz`` for the mask) and a JSON
sidecar ``<name>.json`` with the parameters and the applied steps; every file is written
atomically and the sidecar last, so a row whose sidecar exists with the same parameters is
complete and is skipped when the batch is run again. ``summary.csv`` beside the outputs lists
every row with its status (``done``, ``skipped``, ``failed``) and, for failures, the reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .._deprecate import renamed_value
from .._validation import did_you_mean, format_items
from .._version import __version__
from ..errors import DataError, HarmonizationError, OutputError
from ..image import Image
from ..io._atomic import atomic_path, check_outputs
from ..io.images import IMAGE_SUFFIXES, image_kind
from ..io.tables import read_table, write_table

__all__ = [
    "FORMER_NORMALIZERS",
    "GRIDS",
    "MANIFEST_COLUMNS",
    "MR_METADATA_COLUMNS",
    "NORMALIZERS",
    "NYUL_MODEL_NAME",
    "ManifestError",
    "harmonize_images",
    "parse_fwhm",
    "read_manifest",
]

logger = logging.getLogger(__name__)

Normalize = Literal["zscore", "robust_zscore", "whitestripe", "nyul", "none"]
#: Intensity normalizations, by name (``nyul``: Nyúl & Udupa's standardizer fitted on the batch).
NORMALIZERS: tuple[str, ...] = ("zscore", "robust_zscore", "whitestripe", "nyul", "none")
#: Former names of ``normalize`` choices, still accepted with a DeprecationWarning.
FORMER_NORMALIZERS: dict[str, str] = {"robust": "robust_zscore"}

#: Where the common grid comes from, besides a reference image: ``first`` = the first row's image.
GRIDS: tuple[str, ...] = ("first",)

#: Manifest columns with a meaning (besides :data:`MR_METADATA_COLUMNS`); any other is an error.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "site", "mask", "source_fwhm", "id")

#: File name, in the output folder, of the Nyúl standardizer fitted on the batch.
NYUL_MODEL_NAME = "nyul_model.json"

#: Manifest columns that carry MR acquisition parameters (DICOM keywords or protocol-table names).
MR_METADATA_COLUMNS: tuple[str, ...] = (
    "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle", "MagneticFieldStrength",
    "ScanningSequence", "SequenceVariant", "ImageType", "ContrastBolusAgent",
    "AcquisitionContrast", "repetition_time_ms", "echo_time_ms", "inversion_time_ms",
    "flip_angle_deg", "field_strength_t", "scanning_sequence", "sequence_variant",
    "image_type", "contrast_agent", "acquisition_contrast",
)

SUMMARY_NAME = "summary.csv"
_MANIFEST_HINT = (
    "write a manifest with one row per image and columns path, site (required), mask, "
    "source_fwhm, id (optional)."
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ManifestError(DataError):
    """The manifest is unusable as a whole (missing columns, duplicate output names)."""


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------


def _stem(path: str) -> str:
    name = Path(path.rstrip("/\\")).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def parse_fwhm(value: Any, *, where: str = "source_fwhm") -> float | tuple[float, ...] | None:
    """Parse a FWHM cell: one number, or ``"x;y;z"``; blank gives None."""
    if _blank(value):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        parts = [float(value)]
    else:
        try:
            parts = [float(p) for p in str(value).split(";") if p.strip()]
        except ValueError:
            parts = []
        if not parts:
            raise DataError(
                f"{where}: {value!r} is not a FWHM; give one number (mm) or 'x;y;z'."
            )
    if any(not math.isfinite(p) or p < 0 for p in parts):
        raise DataError(f"{where}: {value!r} must be finite and >= 0 (mm).")
    return parts[0] if len(parts) == 1 else tuple(parts)


def read_manifest(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    ignore_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Read and check a manifest; resolve paths and output names.

    Parameters
    ----------
    manifest : path-like or DataFrame
        The manifest table (CSV, TSV or Parquet) or an already loaded DataFrame.
    base_dir : path-like, optional
        Folder relative paths are resolved against; default the manifest's folder (the working
        directory for a DataFrame).
    ignore_columns : sequence of str
        Columns with no meaning here that the manifest may hold (e.g. the covariates of a
        manifest shared with ``imharmony voxelwise``); they are left alone. Any other column
        outside :data:`MANIFEST_COLUMNS` and :data:`MR_METADATA_COLUMNS` is an error.

    Returns
    -------
    DataFrame
        The manifest with extra columns ``_path``, ``_mask`` (absolute paths or None) and
        ``_name`` (unique output name), in the original row order.

    Raises
    ------
    ManifestError
        If ``manifest`` is a folder or an image rather than a table, ``path`` or ``site`` is
        missing, a column is neither one of :data:`MANIFEST_COLUMNS` nor of
        :data:`MR_METADATA_COLUMNS`, a path cell is blank, or two rows would write the same
        output name.
    """
    if isinstance(manifest, pd.DataFrame):
        df = manifest.copy()
        where = "manifest"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        where = str(manifest)
        kind = image_kind(manifest)
        if kind is not None:
            raise ManifestError(
                f"{where} is {'a folder' if kind == 'folder' else 'an ' + kind.lower()}, not a "
                f"manifest CSV; {_MANIFEST_HINT}"
            )
        df = read_table(manifest)
        base = Path(base_dir) if base_dir is not None else Path(manifest).resolve().parent
    for col in ("path", "site"):
        if col not in df.columns:
            raise ManifestError(
                f"{where}: no '{col}' column{did_you_mean(col, map(str, df.columns))} (found "
                f"{list(df.columns)}); {_MANIFEST_HINT}"
            )
    if isinstance(ignore_columns, str):
        ignore_columns = [ignore_columns]
    known = (*MANIFEST_COLUMNS, *MR_METADATA_COLUMNS)
    unknown = [str(c) for c in df.columns if c not in known and str(c) not in ignore_columns]
    if unknown:
        hints = ", ".join(f"{c!r}{did_you_mean(c, known)}" for c in unknown)
        raise ManifestError(
            f"{where}: unknown column(s) {hints}; rename or remove them, or ignore them "
            "(--ignore-column COL, ignore_columns=[...]). The manifest's columns are "
            f"{', '.join(MANIFEST_COLUMNS)} and MR metadata "
            f"({format_items(MR_METADATA_COLUMNS, 4)})."
        )
    if len(df) == 0:
        raise ManifestError(f"{where}: the manifest has no rows.")
    df = df.reset_index(drop=True)

    def resolve(value: Any) -> str | None:
        if _blank(value):
            return None
        p = Path(str(value).strip()).expanduser()
        return str(p if p.is_absolute() else (base / p))

    blank = [i for i, v in enumerate(df["path"]) if _blank(v)]
    if blank:
        raise ManifestError(
            f"{where}: the 'path' cell is empty in row(s) {[i + 1 for i in blank]} (1 = first "
            "data row); every row needs an image path."
        )
    df["_path"] = [resolve(v) for v in df["path"]]
    df["_mask"] = [resolve(v) for v in df["mask"]] if "mask" in df.columns else None
    if "id" in df.columns:
        names = [str(v).strip() if not _blank(v) else _stem(str(p)) for v, p in
                 zip(df["id"], df["path"], strict=True)]
    else:
        names = [_stem(str(p)) for p in df["path"]]
    names = [_SAFE_NAME.sub("_", n).strip("._") or "image" for n in names]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ManifestError(
                f"{where}: rows {seen[name] + 1} and {i + 1} would both write '{name}'; add an "
                "'id' column with a unique name per row."
            )
        seen[name] = i
    df["_name"] = names
    return df


def _check_harmonizable(df: pd.DataFrame) -> None:
    """Refuse the batch when MR metadata columns show acquisitions that cannot be harmonized."""
    cols = [c for c in MR_METADATA_COLUMNS if c in df.columns]
    if not cols:
        return
    from ..physics.compatibility import require_harmonizable

    table = df[cols].copy()
    table.index = pd.Index(df["_name"], name="image")
    logger.info("checking harmonizability of %d MR acquisitions (columns %s)", len(df), cols)
    require_harmonizable(table)


# ---------------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------------


def _normalize(img: Image, mask: Image | None, how: str, contrast: str, outside: str,
               standardizer: Any = None) -> Image:
    from ..imaging.intensity import robust_zscore, whitestripe, zscore

    if how == "zscore":
        return zscore(img, mask, outside=outside)  # type: ignore[arg-type]
    if how == "robust_zscore":
        return robust_zscore(img, mask, outside=outside)  # type: ignore[arg-type]
    if how == "whitestripe":
        return whitestripe(img, mask, contrast=contrast, outside=outside)  # type: ignore[arg-type]
    if how == "nyul":
        return standardizer.transform(img, mask)  # type: ignore[no-any-return]
    return img


def _grid_of(img: Image) -> dict[str, Any]:
    """The voxel grid of an image's spatial axes (at most 3) as plain data (JSON-able).

    Returns
    -------
    dict
        ``shape``, ``spacing``, ``origin`` (lists) and ``direction`` (a list of rows).
    """
    n = min(img.ndim, 3)
    return {
        "shape": [int(k) for k in img.array.shape[:n]],
        "spacing": [float(v) for v in img.spacing[:n]],
        "origin": [float(v) for v in img.origin[:n]],
        "direction": np.asarray(img.direction, dtype=float)[:n, :n].tolist(),
    }


def _grid_image(grid: Mapping[str, Any]) -> Image:
    """An image of zeros on ``grid`` (a broadcast view: no voxel memory), for its geometry."""
    zeros = np.broadcast_to(np.zeros((), np.uint8), tuple(grid["shape"]))
    return Image(zeros, grid["spacing"], grid["origin"], np.asarray(grid["direction"]))


def _warn_if_aliasing(name: str, target: Any, img: Image) -> None:
    tgt = np.broadcast_to(np.asarray(target, float), (min(img.ndim, 3),))
    coarse = [i for i in range(len(tgt)) if tgt[i] < img.spacing[i]]
    if coarse:
        logger.warning(
            "%s: target FWHM %s is below the new spacing on axes %s; the resampled image may "
            "alias", name, tuple(tgt), coarse,
        )


def _geometry(task: dict[str, Any]) -> tuple[Image, Image | None]:
    """Read a row's image and mask, match the resolution, bring both to the common grid."""
    from ..imaging.resample import resample, resample_mask, resample_to_grid
    from ..imaging.resolution import match_resolution
    from ..io.images import read_image

    params = task["params"]
    img = read_image(task["path"])
    mask = read_image(task["mask"]) if task["mask"] else None
    if mask is not None:
        difference = img.grid_difference(mask)
        if difference:
            raise DataError(
                f"{task['mask']}: the mask is not on the image's grid ({task['path']}): "
                f"{difference}; the mask must be on the image's grid."
            )
    source, target = params["source_fwhm"], params["target_fwhm"]
    matched = target is not None
    if matched:
        if source is None:
            raise DataError(
                f"{task['path']}: no source_fwhm in the manifest for this row, but the "
                "resolution is to be matched; fill the row's source_fwhm (mm, 'x;y;z')."
            )
        img = match_resolution(img, source, target)
    # after matching, the matched blur band-limits every image alike; an extra anti-aliasing
    # blur would differ between native grids and undo the matching
    if params["grid"] is not None:
        reference = _grid_image(params["grid"])
        img = resample_to_grid(img, reference, interpolation=params["interpolation"],
                               anti_alias=not matched)
        if mask is not None:
            mask = resample_to_grid(mask, reference, interpolation="nearest")
            mask = mask.with_array(mask.array != 0)
    elif params["spacing"] is not None:
        img = resample(img, params["spacing"], interpolation=params["interpolation"],
                       anti_alias=not matched)
        if mask is not None:
            mask = resample_mask(mask, params["spacing"])
    else:
        return img, mask
    if matched:
        _warn_if_aliasing(task["name"], target, img)
    return img, mask


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _write_json(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=True) + "\n")


def _fingerprint(path: str | Path | None) -> Any:
    """Size and modification time of a file, or of every file under a folder (stat only)."""
    if path is None:
        return None
    p = Path(path)
    try:
        if p.is_dir():
            return sorted(
                [str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                for f in p.rglob("*")
                if f.is_file()
            )
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _done_before(
    sidecar: Path, params: dict[str, Any], inputs: dict[str, Any], outputs: list[Path]
) -> bool:
    """True when a previous run completed this row with the same parameters, from the same
    inputs (unchanged since), and its outputs are still the files it wrote."""
    try:
        previous = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(previous, dict) or previous.get("parameters") != _jsonable(params):
        return False
    if previous.get("input_fingerprints") != _jsonable(inputs):
        return False
    recorded = previous.get("output_fingerprints")
    if not isinstance(recorded, dict):
        return False
    return all(
        recorded.get(str(p)) is not None and recorded.get(str(p)) == _fingerprint(p)
        for p in outputs
    )


def _process_row(task: dict[str, Any]) -> dict[str, Any]:
    """Harmonize one image; never raises (failures come back in the result)."""
    from ..io.images import write_image

    start = time.perf_counter()
    result: dict[str, Any] = {"row": task["row"], "status": "failed", "reason": "",
                              "error_kind": "", "output": "", "mask_output": ""}
    params = task["params"]
    out_dir = Path(task["output_dir"])
    name = task["name"]
    out_path = out_dir / f"{name}{task['suffix']}"
    mask_out = out_dir / f"{name}_mask{task['suffix']}"
    sidecar = out_dir / f"{name}.json"
    inputs = {"image": _fingerprint(task["path"]), "mask": _fingerprint(task["mask"])}
    expected = [out_path, mask_out] if task["mask"] else [out_path]
    try:
        if not task["overwrite"] and _done_before(sidecar, params, inputs, expected):
            result.update(status="skipped", reason="already done with the same parameters",
                          output=str(out_path),
                          mask_output=str(mask_out) if task["mask"] else "")
            return result
        img, mask = _geometry(task)
        img = _normalize(img, mask, params["normalize"], params["contrast"], params["outside"],
                         task.get("standardizer"))
        outputs = [str(write_image(img, out_path))]
        if mask is not None:
            outputs.append(str(write_image(mask, mask_out, dtype=np.uint8)))
            result["mask_output"] = str(mask_out)
        _write_json({
            "imharmony": __version__,
            "input": task["path"],
            "mask": task["mask"],
            "site": task["site"],
            "parameters": params,
            "outputs": outputs,
            "input_fingerprints": inputs,
            "output_fingerprints": {p: _fingerprint(p) for p in outputs},
            "history": img.meta.get("history", []),
        }, sidecar)
        result.update(status="done", output=str(out_path))
    except HarmonizationError as exc:
        result.update(reason=str(exc), error_kind="input")
    except MemoryError:
        result.update(reason="out of memory; run with fewer workers", error_kind="internal")
    except Exception as exc:
        logger.debug("row %s failed", task["row"], exc_info=True)
        result.update(reason=f"{type(exc).__name__}: {exc}", error_kind="internal")
    finally:
        result["seconds"] = round(time.perf_counter() - start, 3)
    return result


# ---------------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------------


def _common_target(df: pd.DataFrame, fwhms: list[Any]) -> tuple[float, ...] | float | None:
    """The coarsest source FWHM per axis over all rows (the coarsest site)."""
    valid = [f for f in fwhms if f is not None]
    if not valid:
        return None
    n = max(len(f) if isinstance(f, tuple) else 1 for f in valid)
    if n == 1:
        return max(float(f) for f in valid)
    per_axis = np.array([np.broadcast_to(np.asarray(f, float), (n,)) for f in valid
                         if not isinstance(f, tuple) or len(f) == n])
    worst = per_axis.max(axis=0)
    sites = df["site"].astype(str).tolist()
    coarsest = {sites[i] for i, f in enumerate(fwhms) if f is not None and np.any(
        np.broadcast_to(np.asarray(f, float), (n,)) >= worst - 1e-12)}
    logger.info("target FWHM (coarsest source per axis): %s, from site(s) %s",
                tuple(worst), sorted(coarsest))
    return tuple(float(v) for v in worst)


def _worker_failed(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {"row": task["row"], "status": "failed",
            "reason": f"worker process failed: {type(exc).__name__}: {exc}",
            "error_kind": "internal", "output": "", "mask_output": "", "seconds": 0.0}


def _run_on_cluster(scheduler: str, pending: list[dict[str, Any]],
                    record: Callable[[dict[str, Any]], None]) -> None:
    """Run the rows as tasks on a Dask cluster (one task per row), recording as they finish."""
    from distributed import as_completed

    from ..scale.cluster import dask_client

    with dask_client(scheduler) as client:
        futures = {client.submit(_process_row, task, pure=False): task for task in pending}
        for fut in as_completed(list(futures)):
            try:
                res = fut.result()
            except Exception as exc:  # a worker died or lost the task
                res = _worker_failed(futures[fut], exc)
            record(res)


def _common_grid(
    reference: Image | str | os.PathLike[str] | None, grid: str | None, df: pd.DataFrame
) -> dict[str, Any] | None:
    """The grid every image is put on (see :func:`_grid_of`), or None."""
    if grid == "first":
        reference = str(df["_path"].iat[0])
    if reference is None:
        return None
    if isinstance(reference, Image):
        ref = reference
    else:
        from ..io.images import read_image

        ref = read_image(reference)
    if min(ref.ndim, 3) < 2:
        raise DataError(
            f"reference {reference if not isinstance(reference, Image) else 'image'} has "
            f"{ref.ndim} spatial axis; a grid needs 2 or 3."
        )
    common = _grid_of(ref)
    logger.info("common grid (%s): shape %s, spacing %s mm, origin %s",
                "first row" if grid == "first" else "reference", common["shape"],
                common["spacing"], common["origin"])
    return common


def _nyul_standardizer(
    path: Path, load: bool, tasks: list[dict[str, Any]], where: str | None
) -> Any:
    """Load the Nyúl standardizer from ``path``, or fit it on the rows and save it there.

    The fit streams the rows (one image in memory at a time) after their resolution and grid
    steps, with each row's mask; a row that fails those steps is left out (and fails again,
    with its reason, when the rows run).
    """
    from ..imaging import HistogramStandardizer

    if load:
        logger.info("Nyúl standardizer loaded from %s", path)
        return HistogramStandardizer.load(path)
    left_out: list[str] = []

    def prepared() -> Iterator[tuple[Image, Image | None]]:
        for task in tasks:
            try:
                yield _geometry(task)
            except HarmonizationError as exc:
                left_out.append(task["name"])
                logger.warning("%s: left out of the Nyúl fit: %s", task["name"], exc)

    # fit takes the images and the masks as two iterables and asks for each image's mask right
    # after the image: hand it over through a one-item queue (itertools.tee would keep up to
    # 57 prepared images alive in its buffer)
    mask_of_last: list[Image | None] = []

    def images() -> Iterator[Image]:
        for img, mask in prepared():
            mask_of_last.append(mask)
            yield img

    def masks() -> Iterator[Image | None]:
        while mask_of_last:
            yield mask_of_last.pop()

    try:
        model = HistogramStandardizer().fit(images(), masks())
    except DataError as exc:
        if len(left_out) == len(tasks):
            raise DataError(
                "normalize='nyul': no image of the manifest could be prepared to fit the "
                f"standardizer (e.g. {left_out[0] if left_out else 'none'}); fix the rows or "
                "give a fitted model (nyul_model)."
            ) from exc
        raise
    model.save(path, metadata={"manifest": where, "images": model.n_images_,
                               "left_out": left_out})
    logger.info("Nyúl standardizer fitted on %d images, saved to %s", model.n_images_, path)
    return model


def harmonize_images(
    manifest: str | os.PathLike[str] | pd.DataFrame,
    output_dir: str | os.PathLike[str],
    *,
    spacing: float | Sequence[float] | None = None,
    reference: Image | str | os.PathLike[str] | None = None,
    grid: Literal["first"] | None = None,
    target_fwhm: float | Sequence[float] | Literal["coarsest"] | None = "coarsest",
    normalize: Normalize = "none",
    nyul_model: str | os.PathLike[str] | None = None,
    contrast: Literal["T1w", "T2w"] = "T1w",
    interpolation: Literal["linear", "bspline", "nearest"] = "linear",
    outside: Literal["keep", "zero", "nan"] = "keep",
    workers: int = 1,
    overwrite: bool = False,
    check_harmonizable: bool = True,
    suffix: str = ".nii.gz",
    base_dir: str | os.PathLike[str] | None = None,
    ignore_columns: Sequence[str] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
    scheduler: str | None = None,
) -> pd.DataFrame:
    """Harmonize every image of a manifest and write the results and a summary.

    Parameters
    ----------
    manifest : path-like or DataFrame
        One row per image (see the module documentation for the columns).
    output_dir : path-like
        Folder for the outputs, the JSON sidecars and ``summary.csv`` (created if needed).
    spacing : float or sequence of float, optional
        New voxel spacing (mm) for every image (IBSI grid, see
        :func:`~imharmony.imaging.resample.resample`): each image keeps its own extent, centre
        and orientation, so images of different fields of view stay on different grids.
        Default: keep each image's grid.
    reference : Image or path-like, optional
        Put every image (and mask) on the grid of this image — its orientation, origin, spacing
        and shape — with :func:`~imharmony.imaging.resample.resample_to_grid`, so that every
        output has exactly that grid (``Image.same_grid``). Masks are resampled by nearest
        neighbour; reference voxels outside an image's extent are 0. Excludes ``spacing``.
    grid : {"first"}, optional
        ``"first"``: the reference is the image of the manifest's first row (see
        :data:`GRIDS`). Excludes ``reference`` and ``spacing``.
    target_fwhm : float, sequence of float, "coarsest" or None
        Common resolution (mm, per array axis) to match. ``"coarsest"`` (default) uses the
        per-axis maximum of the manifest's ``source_fwhm`` (the coarsest site), and does nothing
        when the manifest has no ``source_fwhm`` column; None never matches resolution.
    normalize : {"zscore", "robust_zscore", "whitestripe", "nyul", "none"}
        Intensity normalization (:data:`NORMALIZERS`), inside the row's mask when it has one
        (``"robust"``, the former name of ``"robust_zscore"``, is deprecated).
        ``"nyul"``: the Nyúl & Udupa standardizer
        (:class:`~imharmony.imaging.HistogramStandardizer`), fitted on the batch after the
        resolution and grid steps (landmarks inside each row's mask) and applied to every row;
        it is saved beside the outputs (:data:`NYUL_MODEL_NAME`) unless ``nyul_model`` is given.
    nyul_model : path-like, optional
        With ``normalize="nyul"``: a model file (JSON + ``.npz``). When it exists, the
        standardizer is loaded from it and applied (nothing is fitted); otherwise it is fitted
        on the batch and saved there.
    contrast : {"T1w", "T2w"}
        Weighting, for WhiteStripe.
    interpolation : {"linear", "bspline", "nearest"}
        Interpolation for the images (masks are always linear + threshold 0.5).
    outside : {"keep", "zero", "nan"}
        Voxels outside the mask after normalization (see :mod:`imharmony.imaging.intensity`).
    workers : int
        Number of worker processes (1 runs in this process).
    overwrite : bool
        Recompute rows that a previous run completed with the same parameters.
    check_harmonizable : bool
        Check MR metadata columns, if any, with
        :func:`~imharmony.physics.compatibility.require_harmonizable` before processing.
    suffix : str
        Output image format, by suffix (default ``.nii.gz``).
    base_dir : path-like, optional
        Folder relative manifest paths are resolved against (default: the manifest's folder).
    ignore_columns : sequence of str
        Manifest columns to leave alone (see :func:`read_manifest`); any other unknown column
        is an error.
    progress : callable, optional
        Called in this process with each row's result (a dict) as soon as it is known.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running Dask scheduler: the rows run as tasks on its workers
        (which must see the same filesystem) instead of local processes; ``workers`` is then
        ignored. See :func:`imharmony.scale.cluster.dask_client`.

    Returns
    -------
    DataFrame
        The summary, one row per manifest row in manifest order: ``name``, ``path``, ``mask``,
        ``site``, ``status`` (done / skipped / failed), ``reason``, ``error_kind`` (``input``
        for bad input, ``internal`` otherwise), ``output``, ``mask_output``, ``source_fwhm``,
        ``target_fwhm``, ``spacing``, ``normalize``, ``seconds``. It is also written to
        ``output_dir/summary.csv``.

    Raises
    ------
    ManifestError
        If the manifest as a whole is unusable.
    imharmony.physics.compatibility.NotHarmonizableError
        If MR metadata columns show acquisitions that cannot be harmonized together.
    DataError
        For invalid options (normalization, spacing, FWHM, workers, reference/grid), and when
        no step is selected (no resolution matching, no spacing or grid, no normalization):
        a run that would only copy the images.
    imharmony.errors.ModelFileError
        If ``nyul_model`` exists but is not a valid standardizer file.

    Notes
    -----
    Resolution is matched before resampling, on each image's native grid, so the Gaussian is
    applied where the native blur is defined; the resampling then skips its own anti-aliasing
    filter, which would add a blur that depends on each native grid (warned about when the
    target FWHM is below the new spacing). Failed rows do not stop the others.

    With ``normalize="nyul"`` and no saved model, the rows' resolution and grid steps run
    twice: once, in this process and one image at a time, to fit the standardizer, then with
    the normalization (in ``workers`` processes or on the ``scheduler``).
    """
    normalize = renamed_value(normalize, FORMER_NORMALIZERS, "harmonize_images(normalize=...)")
    if normalize not in NORMALIZERS:
        raise DataError(f"normalize must be one of {list(NORMALIZERS)}; got {normalize!r}.")
    if nyul_model is not None and normalize != "nyul":
        raise DataError(
            f"nyul_model is used with normalize='nyul' only; got normalize={normalize!r}."
        )
    if normalize == "nyul" and outside != "keep":
        raise DataError(
            f"outside={outside!r} applies to zscore, robust and whitestripe; the Nyúl "
            "standardizer maps every voxel (use outside='keep')."
        )
    if grid is not None and grid not in GRIDS:
        raise DataError(f"grid must be one of {list(GRIDS)} or None; got {grid!r}.")
    if reference is not None and grid is not None:
        raise DataError("give either a reference image or grid='first', not both.")
    if spacing is not None and (reference is not None or grid is not None):
        raise DataError(
            "give either spacing or a reference grid (reference / grid='first'), not both: "
            "the reference grid fixes the spacing."
        )
    if not isinstance(workers, int) or workers < 1:
        raise DataError(f"workers must be a positive integer; got {workers!r}.")
    if suffix not in IMAGE_SUFFIXES or suffix == ".nhdr":
        raise DataError(f"suffix must be one of .nii.gz, .nii, .nrrd, .mha, .mhd; got {suffix!r}.")
    df = read_manifest(manifest, base_dir, ignore_columns=ignore_columns)
    if check_harmonizable:
        _check_harmonizable(df)
    common_grid = _common_grid(reference, grid, df)
    out_dir = Path(output_dir)

    # per-row source FWHM; a bad cell fails that row only
    fwhms: list[Any] = []
    row_errors: dict[int, str] = {}
    has_fwhm = "source_fwhm" in df.columns
    for i in range(len(df)):
        try:
            value = df["source_fwhm"].iloc[i] if has_fwhm else None
            fwhms.append(parse_fwhm(value, where=f"row {i + 1} source_fwhm"))
        except DataError as exc:
            fwhms.append(None)
            row_errors[i] = str(exc)
    if isinstance(target_fwhm, str):
        if target_fwhm != "coarsest":
            raise DataError(
                f"target_fwhm must be a number, one per axis, 'coarsest' or None; got "
                f"{target_fwhm!r}."
            )
        target = _common_target(df, fwhms) if has_fwhm else None
        if has_fwhm and target is None:
            raise ManifestError(
                "the manifest's source_fwhm column is empty; fill it or pass target_fwhm=None."
            )
    elif target_fwhm is None:
        target = None
    else:
        target = parse_fwhm(
            target_fwhm if np.ndim(target_fwhm) == 0 else ";".join(map(str, target_fwhm)),
            where="target_fwhm",
        )
    if target is not None and not has_fwhm:
        raise ManifestError(
            "a target FWHM was given but the manifest has no 'source_fwhm' column; add each "
            "image's native resolution (mm, one number or 'x;y;z')."
        )
    spacing_p: Any = None
    if spacing is not None:
        spacing_p = float(spacing) if np.ndim(spacing) == 0 else [float(s) for s in spacing]
    if target is None and spacing_p is None and common_grid is None and normalize == "none":
        raise DataError(
            "nothing to do: no step selected, and a run would only copy the images. Choose at "
            "least one of spacing (--spacing), reference or grid (--reference, --grid first), "
            "target_fwhm with a source_fwhm column (--target-fwhm) or normalize (--normalize)."
        )

    tasks = []
    for i, row in df.iterrows():
        params = {
            "source_fwhm": fwhms[int(i)] if target is not None else None,
            "target_fwhm": target,
            "spacing": spacing_p,
            "grid": common_grid,
            "interpolation": interpolation,
            "normalize": normalize,
            "contrast": contrast if normalize == "whitestripe" else None,
            "outside": outside,
            "suffix": suffix,
        }
        tasks.append({
            "row": int(i), "path": row["_path"], "name": row["_name"],
            "mask": None if _blank(row["_mask"]) else str(row["_mask"]),
            "site": str(row["site"]), "params": params, "output_dir": str(out_dir),
            "suffix": suffix, "overwrite": overwrite,
        })

    # no output may overwrite an input (e.g. --output-dir = the images' own folder)
    written = [out_dir / SUMMARY_NAME]
    for task in tasks:
        written += [out_dir / f"{task['name']}{suffix}", out_dir / f"{task['name']}.json"]
        if task["mask"]:
            written.append(out_dir / f"{task['name']}_mask{suffix}")
    nyul_path = None
    if normalize == "nyul":
        nyul_path = Path(nyul_model) if nyul_model is not None else out_dir / NYUL_MODEL_NAME
    load_nyul = nyul_model is not None and Path(nyul_model).is_file()
    check_outputs(
        [None if isinstance(manifest, pd.DataFrame) else manifest,
         None if reference is None or isinstance(reference, Image) else reference,
         nyul_path if load_nyul else None,
         *(t["path"] for t in tasks), *(t["mask"] for t in tasks)],
        written + ([nyul_path] if nyul_path is not None and not load_nyul else []),
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{out_dir}: cannot be used as the output folder ({exc.strerror or exc}); give a "
            "writable folder."
        ) from exc
    if nyul_path is not None:
        ready = [t for t in tasks if t["row"] not in row_errors]
        standardizer = _nyul_standardizer(nyul_path, load_nyul, ready, where=str(manifest)
                                          if not isinstance(manifest, pd.DataFrame) else None)
        fitted = {"landmarks": standardizer.landmarks_.tolist(),
                  "standard_landmarks": standardizer.standard_landmarks_.tolist()}
        for task in tasks:
            task["standardizer"] = standardizer
            task["params"]["nyul"] = fitted

    results: dict[int, dict[str, Any]] = {}

    def record(res: dict[str, Any]) -> None:
        results[res["row"]] = res
        task = tasks[res["row"]]
        if res["status"] == "failed":
            logger.warning("%s: failed: %s", task["name"], res["reason"])
        if progress is not None:
            progress({**res, "name": task["name"], "total": len(tasks)})

    pending = []
    for task in tasks:
        if task["row"] in row_errors:
            record({"row": task["row"], "status": "failed", "reason": row_errors[task["row"]],
                    "error_kind": "input", "output": "", "mask_output": "", "seconds": 0.0})
        else:
            pending.append(task)
    if scheduler is not None:
        _run_on_cluster(scheduler, pending, record)
    elif workers == 1 or len(pending) <= 1:
        for task in pending:
            record(_process_row(task))
    else:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx) as ex:
            futures = {ex.submit(_process_row, task): task for task in pending}
            for fut in cf.as_completed(futures):
                task = futures[fut]
                try:
                    res = fut.result()
                except Exception as exc:  # a worker died (e.g. killed for memory)
                    res = _worker_failed(task, exc)
                record(res)

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return ";".join(f"{x:g}" for x in v) if isinstance(v, tuple | list) else f"{v:g}"

    summary = pd.DataFrame([
        {
            "name": task["name"],
            "path": task["path"],
            "mask": task["mask"] or "",
            "site": task["site"],
            "status": results[task["row"]]["status"],
            "reason": results[task["row"]]["reason"],
            "error_kind": results[task["row"]]["error_kind"],
            "output": results[task["row"]]["output"],
            "mask_output": results[task["row"]]["mask_output"],
            "source_fwhm": fmt(task["params"]["source_fwhm"]),
            "target_fwhm": fmt(target),
            "spacing": fmt(spacing_p),
            "normalize": normalize,
            "seconds": results[task["row"]]["seconds"],
        }
        for task in tasks
    ])
    write_table(summary, out_dir / SUMMARY_NAME)
    counts = summary["status"].value_counts().to_dict()
    logger.info("harmonized %d images: %s; summary in %s", len(summary), counts,
                out_dir / SUMMARY_NAME)
    return summary
