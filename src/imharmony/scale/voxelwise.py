"""Voxel-wise ComBat of image stacks, out of core, on a local or remote Dask cluster.

Every voxel inside a mask is a feature and every image a sample. The images named in a
manifest are read once, each by one task, into a chunked on-disk Zarr store (samples x masked
voxels, float32); ComBat is then fitted block by block over voxels
(:func:`imharmony.scale.combat.fit_dask`) and the corrected voxels are written back into copies
of the input images (same file name, same header and geometry, voxels outside the mask
unchanged). Nothing holds the whole stack in memory: a task holds one image, or one block of
voxels of every image.

Files
-----
``MODEL_DIR/model.json``
    Format, parameters, sites, covariate encoding, the manifest columns used, the grid (shape,
    affine) and the per-batch priors; written last, so its presence means the model is complete.
``MODEL_DIR/estimates.zarr``
    Per-voxel estimates (rows named by :func:`imharmony.scale.combat.unpack_estimates`).
``MODEL_DIR/mask.nii.gz``
    The mask, so that ``apply`` needs no ``--mask``.
``OUTPUT_DIR/.imharmony-voxelwise/``
    The work store: the stack, the moments and the corrected stack (uncompressed: measured
    data do not compress enough to pay for the time), and one marker per finished step or
    image. A run that is interrupted resumes from the markers when started again with the same
    inputs; a run with other inputs starts afresh. Removed when the run completes.

The manifest is a CSV/TSV/Parquet table with an ``image`` column (NIfTI ``.nii`` or
``.nii.gz``, paths relative to the manifest's folder), the batch column and the covariate
columns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..errors import DataError, ModelFileError
from ..io._atomic import atomic_path
from ..io.tables import read_table

__all__ = ["IMAGE_COLUMN", "apply_voxelwise", "fit_voxelwise"]

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
FORMAT = "imharmony.voxelwise"
FORMAT_VERSION = 1
WORK_NAME = ".imharmony-voxelwise"
_SUFFIXES = (".nii.gz", ".nii")
#: Bytes of one float64 block (all images x a run of voxels) that a task works on.
_BLOCK_BYTES = 16 << 20

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------
# inputs: manifest, mask, grids (all checked before anything is written)


@dataclass
class _Stack:
    table: pd.DataFrame
    paths: list[Path]
    mask: np.ndarray  # bool, on the grid
    affine: np.ndarray
    n_voxels: int


def _read_manifest(manifest: str | os.PathLike[str], columns: Sequence[str]) -> tuple[
    pd.DataFrame, list[Path]
]:
    manifest = Path(manifest)
    table = read_table(manifest)
    needed = [IMAGE_COLUMN, *columns]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(
            f"{manifest}: no column(s) {missing} (found {list(table.columns)}); the manifest needs "
            f"one row per image with an {IMAGE_COLUMN!r} column and the batch/covariate columns."
        )
    base = manifest.resolve().parent
    paths: list[Path] = []
    for i, cell in enumerate(table[IMAGE_COLUMN].tolist()):
        if not isinstance(cell, str) or not cell.strip():
            raise DataError(f"{manifest}: row {i + 1} has no {IMAGE_COLUMN!r} path.")
        path = Path(cell)
        path = path if path.is_absolute() else base / path
        if not path.name.lower().endswith(_SUFFIXES):
            raise DataError(
                f"{manifest}: row {i + 1}: {cell!r} is not a NIfTI file (.nii or .nii.gz); "
                "convert it first (imharmony convert)."
            )
        if not path.is_file():
            raise DataError(f"{manifest}: row {i + 1}: {path} does not exist.")
        paths.append(path)
    names = [p.name for p in paths]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise DataError(
            f"{manifest}: several rows have the file name(s) {dup[:5]}; outputs keep the input's "
            "name, so rename those images."
        )
    return table.reset_index(drop=True), paths


def _load_grid(path: Path) -> Any:
    import nibabel as nib

    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DataError(f"{path}: cannot be read as NIfTI ({exc}).") from exc


def _read_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, Any]:
    img = _load_grid(Path(path))
    mask = np.asanyarray(img.dataobj) != 0
    if mask.ndim != 3:
        raise DataError(f"{path}: a mask must be a 3-D image; got shape {mask.shape}.")
    if not mask.any():
        raise DataError(f"{path}: the mask is empty (no non-zero voxel).")
    return mask, np.asarray(img.affine, dtype=np.float64), img


def _check_grids(paths: list[Path], mask_path: Path, mask_name: str) -> None:
    """Every image on the mask's grid (:meth:`imharmony.Image.grid_difference`, headers only)."""
    from ..io.images import read_nifti_grid

    mask = read_nifti_grid(mask_path)
    for path in paths:
        grid = read_nifti_grid(path)
        if grid.array.shape != mask.array.shape:
            raise DataError(
                f"{path}: image shape {grid.array.shape} differs from the mask's "
                f"{mask.array.shape} ({mask_name}); every image must be on the mask's grid "
                "(resample it, e.g. with imharmony images --spacing)."
            )
        difference = mask.grid_difference(grid)
        if difference:
            raise DataError(
                f"{path}: its grid differs from the mask's ({mask_name}): {difference}; resample "
                "the image onto the mask's grid."
            )


def _outputs(paths: list[Path], output_dir: Path) -> list[Path]:
    outs = [output_dir / p.name for p in paths]
    inputs = {p.resolve() for p in paths}
    clash = [o for o in outs if o.resolve() in inputs]
    if clash:
        raise DataError(
            f"--output-dir {output_dir} would overwrite the input {clash[0]}; inputs are never "
            "modified: choose another output folder."
        )
    return outs


def _fingerprint(*parts: Any, paths: Sequence[Path] = ()) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _chunk_voxels(n_images: int, n_voxels: int, memory_limit: int | None) -> int:
    """Voxels per block: a float64 block of every image fits ``_BLOCK_BYTES`` (or a 16th of the
    memory limit), at least 1,024 voxels."""
    budget = _BLOCK_BYTES if memory_limit is None else min(_BLOCK_BYTES, memory_limit // 16)
    return int(min(n_voxels, max(1024, budget // (8 * max(n_images, 1)))))


# ---------------------------------------------------------------------------------------------
# the work store


class _Work:
    """The resumable work folder of one run: Zarr arrays plus a marker per finished unit."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.root = root
        meta = root / "run.json"
        if root.exists():
            try:
                same = json.loads(meta.read_text()).get("fingerprint") == fingerprint
            except (OSError, ValueError):
                same = False
            if not same:
                logger.info("%s: other inputs than the interrupted run; starting afresh", root)
                shutil.rmtree(root)
        (root / "done").mkdir(parents=True, exist_ok=True)
        if not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps({"fingerprint": fingerprint}))

    def done(self, key: str) -> bool:
        return (self.root / "done" / key).exists()

    def mark(self, key: str) -> None:
        (self.root / "done" / key).touch()

    def path(self, name: str) -> str:
        return str(self.root / name)


@functools.lru_cache(maxsize=2)
def _mask_of(mask_path: str) -> np.ndarray:
    """The mask as booleans, read once per worker process (every task of a run uses it)."""
    import nibabel as nib

    return np.asanyarray(nib.load(mask_path).dataobj) != 0


def _rows_per_task(n_voxels: int) -> int:
    """Images per read/write task: their masked voxels (float32) stay within 64 MiB, at most 16.
    A task writes whole stored chunks of that many images, so the store has few, large files."""
    return int(max(1, min(16, (64 << 20) // (4 * max(n_voxels, 1)))))


def _ingest_rows(paths: list[str], mask_path: str, store: str, first: int,
                 markers: list[str]) -> int:
    """Task: read some images, write their masked voxels as rows ``first...`` of the stack."""
    import nibabel as nib
    import zarr

    mask = _mask_of(mask_path)
    slab = np.empty((len(paths), int(mask.sum())), dtype=np.float32)
    for k, path in enumerate(paths):
        slab[k] = np.asarray(nib.load(path).get_fdata(dtype=np.float32))[mask]
    zarr.open_array(store, mode="r+")[first : first + len(paths), :] = slab
    for marker in markers:
        Path(marker).touch()
    return len(paths)


def _write_rows(paths: list[str], mask_path: str, store: str, first: int, outs: list[str],
                markers: list[str]) -> int:
    """Task: each input image with its masked voxels replaced by its row of the result."""
    import nibabel as nib
    import zarr

    mask = _mask_of(mask_path)
    slab = zarr.open_array(store, mode="r")[first : first + len(paths), :]
    for k, (path, out) in enumerate(zip(paths, outs, strict=True)):
        img = nib.load(path)
        dtype = np.float64 if img.get_data_dtype() == np.float64 else np.float32
        data = np.asarray(img.get_fdata(dtype=dtype))
        data[mask] = slab[k]
        header = img.header.copy()
        header.set_data_dtype(dtype)
        result = type(img)(data, img.affine, header)
        result.header.set_slope_inter(1.0, 0.0)
        with atomic_path(out) as tmp:
            nib.save(result, tmp)
    for marker in markers:
        Path(marker).touch()
    return len(paths)


def _run_groups(client: Any, work: _Work, func: Callable[..., int], stage: str,
                columns: list[list[str]], common: tuple[Any, ...], per_task: int,
                progress: Progress | None) -> None:
    """Run ``func`` on the groups of rows (fixed by row index) not finished by an earlier run."""
    from distributed import as_completed

    total = len(columns[0])
    jobs = []
    for first in range(0, total, per_task):
        rows = range(first, min(total, first + per_task))
        if all(work.done(f"{stage}-{i}") for i in rows):
            continue
        markers = [work.path(f"done/{stage}-{i}") for i in rows]
        cols = [col[first : first + len(rows)] for col in columns]
        jobs.append((cols[0], *common, first, *cols[1:], markers))
    finished = total - sum(len(job[0]) for job in jobs)
    if finished:
        logger.info("resuming: %d of %d images already %s", finished, total,
                    "in the stack" if stage == "read" else "written")
    if progress is not None:
        progress(stage, finished, total)
    futures = [client.submit(func, *job, pure=False) for job in jobs]
    for fut in as_completed(futures):
        finished += fut.result()
        if progress is not None:
            progress(stage, finished, total)


def _ingest(client: Any, work: _Work, paths: list[Path], mask_path: Path, n_voxels: int,
            chunk: int, progress: Progress | None) -> Any:
    import dask.array as da
    import zarr

    store = work.path("stack.zarr")
    per_task = _rows_per_task(n_voxels)
    if not work.done("stack-created"):
        zarr.create_array(store, shape=(len(paths), n_voxels), chunks=(per_task, chunk),
                          dtype="float32", overwrite=True, compressors=None)
        work.mark("stack-created")
    _run_groups(client, work, _ingest_rows, "read", [[str(p) for p in paths]],
                (str(mask_path), store), per_task, progress)
    # one task per block of voxels of every image (not one per stored chunk)
    return da.from_zarr(store, chunks=(len(paths), chunk))


def _stash(work: _Work, chunk: int) -> Callable[[Any, str], Any]:
    """Keep an intermediate array in the work store (computed once; reused on resume)."""
    import dask.array as da

    def stash(arr: Any, name: str) -> Any:
        store = work.path(f"{name}.zarr")
        if not work.done(name):
            arr.to_zarr(store, overwrite=True, compressors=None)
            work.mark(name)
        return da.from_zarr(store)

    return stash


def _write_outputs(client: Any, work: _Work, result: Any, paths: list[Path], outs: list[Path],
                   mask_path: Path, chunk: int, progress: Progress | None) -> None:
    import dask.array as da
    import zarr

    store = work.path("harmonized.zarr")
    n, V = result.shape
    per_task = _rows_per_task(V)
    if not work.done("harmonized"):
        target = zarr.create_array(store, shape=(n, V), chunks=(per_task, chunk),
                                   dtype=result.dtype, overwrite=True, compressors=None)
        # stored chunks lie inside the blocks: every chunk is written by exactly one task
        da.store(result, target, lock=False)
        work.mark("harmonized")
    _run_groups(client, work, _write_rows, "write", [[str(p) for p in paths],
                [str(o) for o in outs]], (str(mask_path), store), per_task, progress)


# ---------------------------------------------------------------------------------------------
# the model directory


def _save_model(model_dir: Path, estimates: Any, doc: dict[str, Any], mask_img: Any) -> None:
    import nibabel as nib

    model_dir.mkdir(parents=True, exist_ok=True)
    part = model_dir / "estimates.zarr.part"
    if part.exists():
        shutil.rmtree(part)
    estimates.to_zarr(str(part), overwrite=True, compressors=None)
    final = model_dir / "estimates.zarr"
    if final.exists():
        shutil.rmtree(final)
    os.replace(part, final)
    with atomic_path(model_dir / "mask.nii.gz") as tmp:
        mask = np.asanyarray(mask_img.dataobj) != 0
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine), tmp)
    with atomic_path(model_dir / "model.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))


def _json_list(value: Any) -> Any:
    """Arrays as JSON lists, NaN as null."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return [None if not np.isfinite(x) else float(x) for x in arr.reshape(-1)]
    return arr.tolist()


def _load_model(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model.json"
    if not path.is_file():
        raise ModelFileError(
            f"{model_dir}: no model.json; give the --model folder written by `imharmony "
            "voxelwise fit` (a run that did not finish leaves none)."
        )
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: not a voxel-wise model (invalid JSON: {exc}).") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an imharmony voxel-wise model.")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {doc.get('format_version')!r} is not supported by "
            f"imharmony {__version__} (it reads {FORMAT_VERSION}); refit the model."
        )
    for name in ("estimates.zarr", "mask.nii.gz"):
        if not (model_dir / name).exists():
            raise ModelFileError(f"{model_dir}: {name} is missing; keep the model folder whole.")
    return doc


# ---------------------------------------------------------------------------------------------
# the two entry points


def _covariate_frame(table: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame | None:
    return table[list(covariates)] if covariates else None


def fit_voxelwise(
    manifest: str | os.PathLike[str],
    *,
    mask: str | os.PathLike[str],
    batch: str,
    covariates: Sequence[str] = (),
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    scheduler: str | None = None,
    memory_limit: int | None = None,
    mean_only: bool = False,
    eb: bool = True,
    reference_batch: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fit voxel-wise ComBat on the images of a manifest and write the harmonized images.

    Parameters
    ----------
    manifest : path-like
        Table with an ``image`` column (NIfTI paths, relative to the manifest's folder), the
        ``batch`` column and the ``covariates`` columns.
    mask : path-like
        3-D mask on the images' grid (non-zero = harmonized voxel).
    batch : str
        Column of the site/scanner labels.
    covariates : sequence of str
        Columns whose effects are preserved (numeric: continuous; other: categorical).
    model_dir, output_dir : path-like
        Where the model folder and the harmonized images (the inputs' file names) go.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running Dask scheduler; default a local cluster.
    memory_limit : int, optional
        Bytes for the local worker (and the block size is kept within a 16th of it).
    mean_only, eb, reference_batch
        As for :class:`imharmony.ComBat`.
    progress : callable, optional
        ``progress(stage, done, total)`` with stage ``"read"``, ``"fit"`` or ``"write"``.

    Returns
    -------
    dict
        ``n_images``, ``n_voxels``, ``sites``, ``n_iter``, ``n_adjusted``, ``outputs``.

    Raises
    ------
    DataError, DesignError
        For a bad manifest, a mask/image grid mismatch, an image of another shape, or a design
        ComBat cannot fit; raised before anything is written.
    """
    from ..features.estimators import ComBat
    from .cluster import dask_client
    from .combat import apply_dask, fit_dask

    table, paths = _read_manifest(manifest, [batch, *covariates])
    mask_arr, affine, mask_img = _read_mask(mask)
    _check_grids(paths, Path(mask), str(mask))
    # absolute: workers of a cluster do not share this process's working directory
    output_dir, model_dir = Path(output_dir).resolve(), Path(model_dir).resolve()
    outs = _outputs(paths, output_dir)
    model = ComBat(mean_only=mean_only, eb=eb, reference_batch=reference_batch)
    n, V = len(paths), int(mask_arr.sum())
    levels, codes, C, ref, encoder = model.learn_design(
        n, table[batch].to_numpy(), _covariate_frame(table, covariates)
    )
    chunk = _chunk_voxels(n, V, memory_limit)
    fingerprint = _fingerprint("fit", batch, list(covariates), chunk, mean_only, eb,
                               str(reference_batch), table.to_json(),
                               paths=[*paths, Path(mask)])
    with dask_client(scheduler, memory_limit=memory_limit) as client:
        work = _Work(output_dir / WORK_NAME, fingerprint)  # nothing is written before this
        X = _ingest(client, work, paths, Path(mask).resolve(), V, chunk, progress)
        if progress is not None:
            progress("fit", 0, 1)
        estimates, info = fit_dask(X, codes, len(levels), C, method="parametric" if eb else "none",
                                   mean_only=mean_only, ref=ref, tol=float(model.tol),
                                   max_iter=int(model.max_iter), stash=_stash(work, chunk))
        doc = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "imharmony_version": __version__,
            "params": {k: (str(v) if k == "reference_batch" and v is not None else v)
                       for k, v in model.get_params().items()},
            "batch_column": batch, "covariate_columns": list(covariates),
            "batches": list(levels), "reference_index": ref, "covariates": encoder.spec,
            "shape": list(mask_arr.shape), "affine": affine.tolist(), "n_voxels": V,
            "chunk_voxels": chunk,
            "info": {k: _json_list(v) for k, v in info.items()},
        }
        _save_model(model_dir, estimates, doc, mask_img)
        if progress is not None:
            progress("fit", 1, 1)
        import dask.array as da

        est = da.from_zarr(str(model_dir / "estimates.zarr"))
        result = apply_dask(X, codes, est, info["batch_sizes"], C, ref=ref, dtype=np.float32)
        _write_outputs(client, work, result, paths, outs, Path(mask).resolve(), chunk, progress)
    shutil.rmtree(work.root, ignore_errors=True)
    logger.info("voxel-wise ComBat: %d images x %d voxels, %d sites; model in %s", n, V,
                len(levels), model_dir)
    return {"n_images": n, "n_voxels": V, "sites": list(levels),
            "n_iter": np.asarray(info["n_iter"]).tolist(), "n_adjusted": int(info["n_adjusted"]),
            "outputs": [str(o) for o in outs]}


def apply_voxelwise(
    manifest: str | os.PathLike[str],
    *,
    model_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    scheduler: str | None = None,
    memory_limit: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Harmonize new images of the learned sites with a model written by :func:`fit_voxelwise`.

    The manifest needs the ``image`` column and the batch and covariate columns named at fit.
    Images must be on the model's grid; a site not seen at fit raises
    :class:`~imharmony.errors.UnseenBatchError` before anything is written.

    Returns
    -------
    dict
        ``n_images``, ``n_voxels``, ``outputs``.
    """
    import dask.array as da

    from ..features.estimators import ComBat
    from .cluster import dask_client
    from .combat import apply_dask

    model_dir, output_dir = Path(model_dir).resolve(), Path(output_dir).resolve()
    doc = _load_model(model_dir)
    batch, covariates = doc["batch_column"], list(doc["covariate_columns"])
    table, paths = _read_manifest(manifest, [batch, *covariates])
    mask_path = (model_dir / "mask.nii.gz").resolve()
    mask_arr, _, _ = _read_mask(mask_path)
    if list(mask_arr.shape) != doc["shape"] or int(mask_arr.sum()) != doc["n_voxels"]:
        raise ModelFileError(f"{model_dir}: mask.nii.gz does not match model.json.")
    _check_grids(paths, mask_path, f"the model's mask {mask_path}")
    outs = _outputs(paths, output_dir)
    model = ComBat()
    model.set_design(doc["batches"], doc["covariates"], doc["reference_index"])
    n, V = len(paths), int(doc["n_voxels"])
    codes, C = model.encode_samples(n, table[batch].to_numpy(),
                                    _covariate_frame(table, covariates))
    chunk = _chunk_voxels(n, V, memory_limit)
    fingerprint = _fingerprint("apply", str(model_dir.resolve()), chunk, table.to_json(),
                               paths=[*paths, model_dir / "model.json"])
    with dask_client(scheduler, memory_limit=memory_limit) as client:
        work = _Work(output_dir / WORK_NAME, fingerprint)  # nothing is written before this
        X = _ingest(client, work, paths, mask_path, V, chunk, progress)
        est = da.from_zarr(str(model_dir / "estimates.zarr"))
        sizes = np.asarray(doc["info"]["batch_sizes"], dtype=int)
        result = apply_dask(X, codes, est, sizes, C, ref=doc["reference_index"],
                            dtype=np.float32)
        _write_outputs(client, work, result, paths, outs, mask_path, chunk, progress)
    shutil.rmtree(work.root, ignore_errors=True)
    return {"n_images": n, "n_voxels": V, "outputs": [str(o) for o in outs]}
