"""Voxel-wise ComBat of image stacks, out of core, on a local or remote Dask cluster.

Every voxel inside a mask is a feature and every image a sample. ``fit`` reads each image named
in a manifest once and adds its masked voxels to its site's per-voxel sums (the sufficient
statistics of ComBat's least-squares step, by the shifted-data algorithm of
:func:`imharmony.features.combat.fit_combat`: one chain of tasks per site, so the sums are the
same on any cluster); the per-voxel moments follow from the sums
(:func:`imharmony.features.combat.moments_from_sums`; the few voxels the sums cannot serve, with
a missing or infinite value or a residual that lost its digits, get the in-memory
:func:`~imharmony.features.combat.chunk_moments` of their values read again), then ComBat is
fitted block by block over voxels (:func:`imharmony.scale.combat.fit_moments`) and the model is
saved. Then ``fit`` harmonizes the images exactly as ``apply`` does: each task takes some images
of one site, corrects their masked voxels with that site's per-voxel coefficients
(:func:`imharmony.features.combat.correction_coefficients`, the same arithmetic as the in-memory
ComBat) and writes each output as a copy of its input (same file name, header and geometry,
voxels outside the mask unchanged). Every image is read twice (once for the sums, once to write
its output) and nothing holds the stack in memory: a task holds one image and one site's sums or
coefficients, the main process one block of voxels of the per-voxel statistics. What is held
whole is per voxel, not per image: the per-voxel moments (``5 n_sites + n_covariates + 1`` rows
of float64) while ComBat is fitted, when they fit ``_MOMENTS_IN_MEMORY`` (else they are stored),
and the per-site coefficients (``n_sites x (2 + n_covariates)`` rows) while the outputs are
written.

An uncompressed ``.nii`` of float32/float64 without scaling is read and written as raw bytes:
its masked voxels are gathered from the file and the output is the file's bytes with those
voxels replaced (no decoding of the rest). Other inputs (``.nii.gz``, scaled integers) go through
nibabel.

Files
-----
``MODEL_DIR/model.json`` (+ ``model.<digest>.npz``)
    The model in the project's model envelope (:mod:`imharmony._persist`, kind
    ``imharmony.voxelwise``): the ComBat model of the masked voxels (the fields and arrays of an
    :class:`imharmony.ComBat` model file, per-voxel arrays in Fortran order), the mask, the grid
    and the manifest columns used. Checksummed, type-checked when loaded and replaced as a whole.
``OUTPUT_DIR/.imharmony-voxelwise/``
    The work store: each site's sums, the per-voxel moments (when not held in memory) and
    estimates (``.npy``, uncompressed: measured data do not compress enough to pay for the
    time), and one marker per finished step or image. A run that is interrupted resumes from
    the markers when started again with the same inputs (the images of a site whose sums were
    not finished are read again; moments that were held in memory are computed again from the
    sums); a run with other inputs starts afresh. The sums are removed once the moments are
    stored (else once the model is saved), the moments and estimates once the model is saved,
    the rest when the run completes. The per-site coefficients of the correction are computed
    from the model file into memory, never stored.

The manifest is a CSV/TSV/Parquet table with an ``image`` column (NIfTI ``.nii`` or
``.nii.gz``, paths relative to the manifest's folder), the batch column and the covariate
columns.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _persist
from ..errors import DataError, ModelFileError
from ..io._atomic import atomic_path
from ..io.tables import read_table

__all__ = ["IMAGE_COLUMN", "apply_voxelwise", "fit_voxelwise"]

logger = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
MODEL_KIND = "imharmony.voxelwise"
MODEL_VERSION = 2  # 1 was a format of its own (model.json + estimates.zarr + mask.nii.gz)
MODEL_FILE = "model.json"
WORK_NAME = ".imharmony-voxelwise"
_SUFFIXES = (".nii.gz", ".nii")
#: Bytes of one float64 block of per-voxel statistics (a run of voxels) that a task works on.
_BLOCK_BYTES = 16 << 20
#: Voxels per piece of a per-image operation that should stay in the CPU's cache (float64:
#: 512 KiB per array).
_CACHE_VOXELS = 1 << 16
#: Bytes of per-voxel moments a fit keeps in the cluster's memory rather than in the work store.
_MOMENTS_IN_MEMORY = 512 << 20
#: Voxels per block when the main process streams per-voxel arrays (model file, coefficients).
_STREAM_VOXELS = 1 << 18

Progress = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------------
# inputs: manifest, mask, grids (all checked before anything is written)


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


def _read_mask(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    img = _load_grid(Path(path))
    mask = np.asanyarray(img.dataobj) != 0
    if mask.ndim != 3:
        raise DataError(f"{path}: a mask must be a 3-D image; got shape {mask.shape}.")
    if not mask.any():
        raise DataError(f"{path}: the mask is empty (no non-zero voxel).")
    return mask, np.asarray(img.affine, dtype=np.float64)


def _check_grids(paths: list[Path], mask: Any, mask_name: str) -> None:
    """Every image on the mask's grid (an :class:`imharmony.Image` from
    :func:`~imharmony.io.images.read_nifti_grid`; :meth:`imharmony.Image.grid_difference`,
    headers only)."""
    from ..io.images import read_nifti_grid

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


def _chunk_voxels(n_rows: int, n_voxels: int, memory_limit: int | None) -> int:
    """Voxels per block of the per-voxel statistics (moments, estimates: ``n_rows`` rows of
    float64 at most, whatever the number of images; counted as at least 32): a block fits
    ``_BLOCK_BYTES`` (or a 16th of the memory limit), at least 1,024 voxels."""
    budget = _BLOCK_BYTES if memory_limit is None else min(_BLOCK_BYTES, memory_limit // 16)
    return int(min(n_voxels, max(1024, budget // (8 * max(32, n_rows)))))


# ---------------------------------------------------------------------------------------------
# the work store


class _Work:
    """The resumable work folder of one run: stored arrays plus a marker per finished unit."""

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

    def drop(self, *names: str) -> None:
        """Remove stores no later step reads (few, large files: cheap)."""
        for name in names:
            (self.root / name).unlink(missing_ok=True)

    def mask(self, mask: np.ndarray) -> str:
        """The mask as ``mask.npy`` (what every task reads), written once per run."""
        path = self.root / "mask.npy"
        if not self.done("mask"):
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.asarray(mask, dtype=bool))
            self.mark("mask")
        return str(path)


@dataclass(frozen=True)
class _BlockFile:
    """A float64 array (rows x columns) in a ``.npy`` of the work store, kept block by block of
    ``chunk`` columns: block ``[a, b)`` is the contiguous (rows, b - a) C-ordered run of values
    from ``rows * a``, so a task writes or reads a block in one call (no Zarr: no event loop,
    no copy through chunk encoding)."""

    path: str
    rows: int
    columns: int
    chunk: int

    def create(self) -> None:
        """Size the file (its values are written by :meth:`write`)."""
        np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float64,
                                  shape=(self.rows * self.columns,))

    def _offset(self, a: int) -> int:
        arr = np.load(self.path, mmap_mode="r")  # the header's length; nothing is read
        offset = int(arr.offset)
        del arr
        return offset + self.rows * a * 8

    def write(self, a: int, block: np.ndarray) -> None:
        """Write the block of columns ``[a, a + block.shape[1])``."""
        data = np.ascontiguousarray(block, dtype=np.float64)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data.tobytes(), self._offset(a))
        finally:
            os.close(fd)

    def read(self, a: int, b: int) -> np.ndarray:
        """The block of columns ``[a, b)``."""
        count = self.rows * (b - a)
        data = np.fromfile(self.path, dtype=np.float64, count=count, offset=self._offset(a))
        if data.size != count:
            raise DataError(f"{self.path}: truncated (the work store was changed); run again.")
        return data.reshape(self.rows, b - a)

    def starts(self) -> range:
        return range(0, self.columns, self.chunk)

    def dask(self) -> Any:
        """The array as a Dask array, one block per stored block."""
        import dask
        import dask.array as da

        read = dask.delayed(self.read, pure=False)
        return da.concatenate([
            da.from_delayed(read(a, min(self.columns, a + self.chunk)),
                            shape=(self.rows, min(self.columns, a + self.chunk) - a),
                            dtype=np.float64, meta=np.empty((0, 0)))
            for a in self.starts()], axis=1)

    def put(self, columns: np.ndarray, values: np.ndarray) -> None:
        """Replace some columns (sorted) by ``values`` (rows, columns.size)."""
        block_of = columns // self.chunk
        for k in np.unique(block_of):
            a = int(k) * self.chunk
            b = min(self.columns, a + self.chunk)
            block = self.read(a, b)
            here = block_of == k
            block[:, columns[here] - a] = values[:, here]
            self.write(a, block)


@contextmanager
def _timed(step: str) -> Iterator[None]:
    """Log (INFO) how long a step of the main process took (``imharmony -v`` shows it)."""
    start = time.perf_counter()
    yield
    logger.info("step %s: %.1f s", step, time.perf_counter() - start)


def _mask_of(mask_path: str) -> np.ndarray:
    """The mask (read once per worker process and run) as a flat boolean array in the order NIfTI
    stores voxels (Fortran order). Masked voxels are numbered in that order everywhere (sums,
    model): gathering them from an image file is then one sequential pass."""
    st = os.stat(mask_path)  # every run writes its own mask.npy at the same path: key on the file
    return _load_mask(mask_path, st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=2)
def _load_mask(mask_path: str, mtime_ns: int, size: int, inode: int) -> np.ndarray:
    return np.ascontiguousarray(np.load(mask_path).T).reshape(-1)


# ---------------------------------------------------------------------------------------------
# reading and writing one image


def _raw_layout(img: Any, path: Path) -> tuple[int, np.dtype] | None:
    """``(offset, dtype)`` of the voxels of an uncompressed, unscaled float NIfTI, else None."""
    import nibabel as nib

    if not path.name.lower().endswith(".nii") or not isinstance(
        img, nib.Nifti1Image | nib.Nifti2Image
    ):
        return None
    dtype = img.header.get_data_dtype()
    if dtype.kind != "f" or dtype.itemsize not in (4, 8) or len(img.shape) != 3:
        return None
    if img.header.get_slope_inter() not in ((None, None), (1.0, 0.0)):
        return None
    offset = int(img.dataobj.offset)
    if path.stat().st_size < offset + math.prod(img.shape) * dtype.itemsize:
        return None
    return offset, dtype


def _masked_values(path: Path, mask_path: str) -> np.ndarray:
    """The masked voxels of an image as float32."""
    import nibabel as nib

    mask = _mask_of(mask_path)
    img = nib.load(path)
    raw = _raw_layout(img, path)
    if raw is None:
        return _fortran(np.asarray(img.get_fdata(dtype=np.float32)))[mask]
    offset, dtype = raw
    flat = np.fromfile(path, dtype=dtype, count=mask.size, offset=offset)
    return flat[mask].astype(np.float32, copy=False)


def _fortran(volume: np.ndarray) -> np.ndarray:
    """A 3-D volume's voxels as a flat array in Fortran order (a view when the volume is
    Fortran-ordered, as nibabel returns NIfTI data)."""
    return volume.T.reshape(-1)


#: Alignment of memory, offsets and sizes that writes bypassing the page cache need.
_ALIGN = 4096


def _aligned_bytes(size: int) -> np.ndarray:
    """An uninitialized uint8 buffer of ``size`` bytes starting on an ``_ALIGN`` boundary."""
    raw = np.empty(size + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + size]


def _write_uncached(path: Path, data: np.ndarray) -> None:
    """Write ``data`` (from :func:`_aligned_bytes`) as the file ``path``, bypassing the page
    cache (``O_DIRECT``) for its whole ``_ALIGN`` blocks where the system and filesystem allow
    it, the rest buffered. Outputs are written once and not read back by the run: on the
    measured machine, putting gigabytes of them through the page cache cost more time than the
    disk itself (a page cache write of 408 MB/s against 1.3 GB/s direct)."""
    view = memoryview(data)
    done = 0
    whole = data.size - data.size % _ALIGN
    direct = getattr(os, "O_DIRECT", 0)
    if direct and whole:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | direct)
        except OSError:  # e.g. tmpfs: no O_DIRECT
            fd = -1
        if fd >= 0:
            try:
                while done < whole:
                    n = os.write(fd, view[done:whole])
                    done += max(n, 0)
                    if n <= 0 or n % _ALIGN:
                        break  # a short write: the rest buffered
            except OSError:  # alignment refused by the device: the rest buffered
                pass
            finally:
                os.close(fd)
    fd = os.open(path, os.O_WRONLY | (0 if done else os.O_TRUNC))
    try:
        while done < data.size:
            done += os.pwrite(fd, view[done:], done)
    finally:
        os.close(fd)


def _correct_in_pieces(x: np.ndarray,
                       correct: Callable[[np.ndarray, int, int], np.ndarray]) -> np.ndarray:
    """``x`` (masked voxels of an image) with each piece ``x[a:b]`` replaced in place by
    ``correct(y, a, b)``, y a float64 copy of the piece that ``correct`` may overwrite (rounded
    to x's dtype): pieces that stay in the CPU's cache, the same arithmetic on every voxel."""
    piece = min(x.size, _CACHE_VOXELS)
    buf = np.empty(piece)
    for a in range(0, x.size, piece):
        b = min(x.size, a + piece)
        y = buf[: b - a]
        y[...] = x[a:b]
        x[a:b] = correct(y, a, b)
    return x


def _write_corrected(path: Path, out: Path, mask_path: str,
                     correct: Callable[[np.ndarray, int, int], np.ndarray]) -> None:
    """Write ``out``: the input with its masked voxels x replaced piece by piece by
    ``correct(x[a:b], a, b)`` (:func:`_correct_in_pieces`); float32 output for float32 (or
    integer) input, float64 for float64."""
    import nibabel as nib

    mask = _mask_of(mask_path)
    img = nib.load(path)
    raw = _raw_layout(img, path)
    if raw is not None:
        offset, dtype = raw
        data = _aligned_bytes(path.stat().st_size)
        with open(path, "rb") as fh:
            if fh.readinto(data) != data.size:
                raise DataError(f"{path}: the file changed while it was read; run again.")
        flat = data[offset : offset + mask.size * dtype.itemsize].view(dtype)
        flat[mask] = _correct_in_pieces(flat[mask], correct)  # rounded to the file's dtype
        with atomic_path(out) as tmp:
            _write_uncached(tmp, data)
        return
    dtype = np.float64 if img.get_data_dtype() == np.float64 else np.float32
    volume = np.asfortranarray(img.get_fdata(dtype=dtype))
    flat = _fortran(volume)  # a view: assigning to it writes the volume
    flat[mask] = _correct_in_pieces(flat[mask], correct)
    header = img.header.copy()
    header.set_data_dtype(dtype)
    result = type(img)(volume, img.affine, header)
    result.header.set_slope_inter(1.0, 0.0)
    with atomic_path(out) as tmp:
        nib.save(result, tmp)


# ---------------------------------------------------------------------------------------------
# tasks (run on the workers)


def _rows_per_task(n_voxels: int) -> int:
    """Images per read/write task: their masked voxels (float32) stay within 64 MiB, at most 16
    (a task reads and writes one image at a time; fewer tasks, less scheduling)."""
    return int(max(1, min(16, (64 << 20) // (4 * max(n_voxels, 1)))))


def _accumulate(paths: list[str], mask_path: str, shift_path: str, covariates: np.ndarray,
                acc: dict[str, np.ndarray] | None, markers: list[str],
                final: tuple[str, str, str] | None) -> Any:
    """Task: read some images of one site and add them to the site's shifted sums.

    ``acc`` holds the site's running sums (updated in place: each site's tasks form a chain, run
    in the order of the manifest), per voxel: of ``y = x - K``, ``y^2`` and ``c y`` for each
    covariate ``c`` (the shifted-data algorithm of :func:`~imharmony.features.combat.fit_combat`,
    ``K`` one image), and the extremes of ``x``. The last task of a chain saves them to the first
    two paths of ``final``, then creates the third (the site's marker), and returns None.
    """
    K = np.load(shift_path)
    if acc is None:
        acc = {"sums": np.zeros((2 + covariates.shape[1], K.size)),
               "range": np.stack([np.full(K.size, np.inf, np.float32),
                                  np.full(K.size, -np.inf, np.float32)])}
    sums, extremes = acc["sums"], acc["range"]
    # voxels in pieces that stay in the CPU's cache across the operations on them (the same
    # operations on every voxel as on whole rows, a third of the memory traffic)
    piece = min(K.size, _CACHE_VOXELS)
    y, tmp = np.empty(piece), np.empty(piece)
    for path, c, marker in zip(paths, covariates, markers, strict=True):
        x = _masked_values(Path(path), mask_path)
        for a in range(0, K.size, piece):
            b = min(K.size, a + piece)
            ya, ta = y[: b - a], tmp[: b - a]
            np.subtract(x[a:b], K[a:b], out=ya, dtype=np.float64)
            sums[0, a:b] += ya
            sums[1, a:b] += np.multiply(ya, ya, out=ta)
            for k, ck in enumerate(c):
                sums[2 + k, a:b] += np.multiply(ya, ck, out=ta)
            np.minimum(extremes[0, a:b], x[a:b], out=extremes[0, a:b])
            np.maximum(extremes[1, a:b], x[a:b], out=extremes[1, a:b])
        Path(marker).touch()
    if final is None:
        return acc
    for path, arr in zip(final[:2], (sums, extremes), strict=True):
        with atomic_path(path) as tmp_path, open(tmp_path, "wb") as fh:
            np.save(fh, arr)
    Path(final[2]).touch()
    return None


def _write_rows(paths: list[str], mask_path: str, coef: np.ndarray | None,
                covariates: np.ndarray, outs: list[str], markers: list[str]) -> int:
    """Task: harmonize some images of one site with its coefficients ``coef`` (2 + q, V), and
    write them (None: the reference site, returned exactly as given)."""
    from ..features.combat import correct_rows

    scratch = None if coef is None or not covariates.shape[1] else np.empty((1, _CACHE_VOXELS))
    for path, out, c, marker in zip(paths, outs, covariates, markers, strict=True):
        def correct(x: np.ndarray, a: int, b: int, c: np.ndarray = c) -> np.ndarray:
            if coef is None:  # the reference site is returned exactly as given
                return x
            row = x[None]
            return correct_rows(row, coef[0, a:b], coef[1, a:b], c[None], coef[2:, a:b], out=row,
                                scratch=None if scratch is None else scratch[:, : b - a])[0]

        _write_corrected(Path(path), Path(out), mask_path, correct)
        Path(marker).touch()
    return len(paths)


def _submit(client: Any, work: _Work, func: Callable[..., int], stage: str,
            groups: list[tuple[list[int], tuple[Any, ...]]], total: int,
            progress: Progress | None) -> None:
    """Run ``func(*args, markers)`` for every group of rows not all finished by an earlier run;
    each row has the marker ``{stage}-{row}``."""
    from distributed import as_completed

    jobs = []
    finished = total
    for rows, args in groups:
        if all(work.done(f"{stage}-{i}") for i in rows):
            continue
        finished -= len(rows)
        jobs.append((*args, [work.path(f"done/{stage}-{i}") for i in rows]))
    if finished:
        logger.info("resuming: %d of %d images already written", finished, total)
    if progress is not None:
        progress(stage, finished, total)
    futures = [client.submit(func, *job, pure=False) for job in jobs]
    for fut in as_completed(futures):
        finished += fut.result()
        if progress is not None:
            progress(stage, finished, total)


def _chains(client: Any, work: _Work, paths: list[Path], codes: np.ndarray, C: np.ndarray,
            mask_file: str, n_voxels: int, progress: Progress | None) -> None:
    """Read every image once into its site's shifted sums (one chain of tasks per site; the
    sums of a site whose chain finished in an earlier run are kept, other sites start over)."""
    from distributed import wait

    n = len(paths)
    J = int(codes.max()) + 1
    per_task = _rows_per_task(n_voxels)
    shift = work.path("shift.npy")
    if not work.done("shift"):  # the first image of the first site, as fit_combat shifts
        with atomic_path(shift) as tmp, open(tmp, "wb") as fh:
            np.save(fh, _masked_values(paths[int(np.flatnonzero(codes == 0)[0])], mask_file))
        work.mark("shift")
    for i in np.flatnonzero([not work.done(f"sums-{j}") for j in codes]):
        (work.root / "done" / f"read-{i}").unlink(missing_ok=True)  # read again

    def read() -> int:
        return sum(work.done(f"read-{i}") for i in range(n))

    finished = read()
    if finished:
        logger.info("resuming: the sums of %d of %d images were saved", finished, n)
    if progress is not None:
        progress("read", finished, n)
    ends = []
    for j in range(J):
        if work.done(f"sums-{j}"):
            continue
        acc = None
        rows = np.flatnonzero(codes == j)
        for k in range(0, rows.size, per_task):
            part = rows[k : k + per_task]
            final = ((work.path(f"sums-{j}.npy"), work.path(f"range-{j}.npy"),
                      work.path(f"done/sums-{j}")) if k + per_task >= rows.size else None)
            acc = client.submit(
                _accumulate, [str(paths[i]) for i in part], mask_file, shift, C[part], acc,
                [work.path(f"done/read-{i}") for i in part], final,
                pure=False, priority=J - j,  # one site after another: few sums held at once
            )
        ends.append((j, acc))
    pending = [fut for _, fut in ends]
    while pending:
        # returns as soon as every chain has finished (waking up in between for the progress)
        with contextlib.suppress(TimeoutError):
            wait(pending, timeout=0.05 if finished == 0 else 0.5)
        pending = [fut for fut in pending if not fut.done()]
        now = read()
        if progress is not None and now != finished:
            finished = now
            progress("read", finished, n)
    for _, fut in ends:
        fut.result()  # raises a task's error (the sites that finished keep their sums)


def _moments(client: Any, work: _Work, paths: list[Path], codes: np.ndarray, C: np.ndarray,
             mask_file: str, n_voxels: int, chunk: int, fit: dict[str, Any],
             progress: Progress | None) -> tuple[Any, list[tuple[bool, np.ndarray]] | None]:
    """The per-voxel moments (:func:`~imharmony.scale.combat.pack_moments`) in the work store,
    from the sites' shifted sums (:func:`~imharmony.features.combat.moments_from_sums`). The
    voxels the sums cannot serve (a missing or infinite value, or a sum of squares that lost
    its digits) get the in-memory :func:`~imharmony.features.combat.chunk_moments` of their
    values read again from the images. Returns the moments as a Dask array and, when they were
    made in this run, the :func:`~imharmony.scale.combat.first_pass` of each of its blocks
    (``fit``: its ``mean_only`` and ``ref``)."""
    if work.done("moments"):
        if progress is not None:
            progress("read", len(paths), len(paths))
        return _moments_file(work, codes, C, n_voxels, chunk).dask(), None
    with _timed("reading the images into per-site sums"):
        _chains(client, work, paths, codes, C, mask_file, n_voxels, progress)
    with _timed("per-voxel moments from the sums"):
        return _moments_from_sums(work, paths, codes, C, mask_file, n_voxels, chunk, fit)


def _moments_file(work: _Work, codes: np.ndarray, C: np.ndarray, n_voxels: int,
                  chunk: int) -> _BlockFile:
    """Where the moments are stored: ``moments.npy``, blocks of ``chunk`` voxels."""
    from .combat import moment_rows

    J = int(codes.max()) + 1
    return _BlockFile(work.path("moments.npy"), moment_rows(J, C.shape[1]), n_voxels, chunk)


def _moments_from_sums(work: _Work, paths: list[Path], codes: np.ndarray, C: np.ndarray,
                       mask_file: str, n_voxels: int, chunk: int, fit: dict[str, Any],
                       ) -> tuple[Any, list[tuple[bool, np.ndarray]] | None]:
    """One task per block of ``chunk`` voxels (:func:`_moments_block`); then the voxels the
    sums cannot serve, by :func:`_exact_moments` (their first passes are then left to
    :func:`~imharmony.scale.combat.fit_moments`). The moments stay in the cluster's memory when
    they fit :data:`_MOMENTS_IN_MEMORY` (and a quarter of ``memory_limit``), else they are
    stored (``moments.npy``)."""
    import dask
    import dask.array as da

    out = _moments_file(work, codes, C, n_voxels, chunk)
    keep = out.rows * n_voxels * 8 <= fit["in_memory"]
    if not keep:
        out.create()
    task = dask.delayed(_moments_block, pure=False, nout=3)
    ends = [min(n_voxels, a + chunk) for a in out.starts()]
    parts = [task(str(work.root), None if keep else out, a, b, codes, C,
                  {"mean_only": fit["mean_only"], "ref": fit["ref"]})
             for a, b in zip(out.starts(), ends, strict=True)]
    mom = None
    if keep:
        mom = da.concatenate([da.from_delayed(p[0], shape=(out.rows, b - a), dtype=np.float64,
                                              meta=np.empty((0, 0)))
                              for p, a, b in zip(parts, out.starts(), ends, strict=True)], axis=1)
        mom, exact, passes = dask.persist(mom, [p[1] for p in parts], [p[2] for p in parts])
        exact, passes = dask.compute(exact, passes)
    else:
        exact, passes = dask.compute([p[1] for p in parts], [p[2] for p in parts])
    voxels = np.concatenate(exact)
    first: list[tuple[bool, np.ndarray]] | None = list(passes)
    if voxels.size:
        if mom is not None:  # stored after all, to be mended in place
            out.create()
            write = dask.delayed(out.write, pure=False)
            dask.compute(*[write(a, block) for block, a in
                           zip(mom.to_delayed().ravel(), out.starts(), strict=True)])
            mom = None
        _exact_moments(paths, mask_file, out, voxels, codes, C)
        first = None  # the blocks holding those voxels changed
    if mom is not None:  # not marked: a run that resumes computes them again from the sums
        return mom, first
    work.mark("moments")
    # no later step reads the sums: removed before their pages are written back to the disk
    _drop_sums(work, codes)
    return out.dask(), first


def _drop_sums(work: _Work, codes: np.ndarray) -> None:
    J = int(codes.max()) + 1
    work.drop("shift.npy", *(f"{name}-{j}.npy" for name in ("sums", "range") for j in range(J)))


def _site_columns(root: str, name: str, n_sites: int, a: int, b: int) -> np.ndarray:
    """Columns a:b of the saved arrays ``name-{site}.npy`` of every site (mapped only while
    they are copied: mapped pages count as resident memory)."""
    return np.stack([_columns_of(os.path.join(root, f"{name}-{j}.npy"), slice(None), a, b)
                     for j in range(n_sites)])


def _moments_block(root: str, out: _BlockFile | None, a: int, b: int, codes: np.ndarray,
                   C: np.ndarray, fit: dict[str, Any],
                   ) -> tuple[np.ndarray | None, np.ndarray, tuple[bool, np.ndarray]]:
    """Task: the moments of voxels a:b from the sites' sums, written into their block of the
    moments file ``out`` (or returned: None); returns them (or None), the voxels the sums cannot
    serve and the block's :func:`~imharmony.scale.combat.first_pass`."""
    from ..features.combat import design_solver, moments_from_sums
    from .combat import first_pass, pack_moments

    J, q = int(codes.max()) + 1, C.shape[1]
    s = _site_columns(root, "sums", J, a, b)  # (J, 2 + q, G)
    K = np.load(os.path.join(root, "shift.npy"), mmap_mode="r")
    shift = np.asarray(K[a:b], dtype=np.float64)
    del K
    with np.errstate(invalid="ignore", over="ignore"):
        mom, lossy, candidates = moments_from_sums(
            s[:, 0], s[:, 1], s[:, 2:], shift, [np.flatnonzero(codes == j) for j in range(J)],
            C, design_solver(codes, J, C))
    extremes = _site_columns(root, "range", J, a, b)
    mom["constant"] = candidates & (extremes[:, 0] == extremes[:, 1])
    mom["unusable"] = np.zeros(b - a, dtype=bool)
    block = pack_moments(mom, J, q)
    exact = a + np.flatnonzero(lossy | ~np.isfinite(s[:, :2]).all(axis=(0, 1)))
    passed = first_pass(block, np.bincount(codes, minlength=J), q, **fit)
    if out is None:
        return block, exact, passed
    out.write(a, block)
    return None, exact, passed


def _exact_moments(paths: list[Path], mask_file: str, out: _BlockFile, voxels: np.ndarray,
                   codes: np.ndarray, C: np.ndarray) -> None:
    """The moments of some voxels by the in-memory code, from their values read again from the
    images (in pieces of at most 64 MiB of float32 values; each piece reads every image)."""
    from ..features.combat import chunk_moments
    from .combat import pack_moments

    n, J = len(paths), int(codes.max()) + 1
    width = max(1, (64 << 20) // (4 * n))
    logger.info("%d voxels hold missing or infinite values or lose digits in the sums: their "
                "moments are computed from their values", voxels.size)
    for a in range(0, voxels.size, width):
        cols = voxels[a : a + width]
        x = np.empty((n, cols.size), dtype=np.float32)
        for i, path in enumerate(paths):
            x[i] = _masked_values(path, mask_file)[cols]
        bad = np.isinf(x).any(axis=0)
        if bad.any():
            raise DataError(
                f"masked voxel(s) {cols[bad][:5].tolist()} (numbered in the mask's storage "
                "order) hold infinite values in some image; replace them (NaN is accepted as "
                "missing and ignored in estimation)."
            )
        mom = chunk_moments(x.astype(np.float64), codes, J, C)
        out.put(cols, pack_moments(mom, J, C.shape[1]))


def _store_estimates(work: _Work, estimates: Any) -> str:
    """The per-voxel estimates in the work store as one ``.npy`` file (rows x voxels, each row
    contiguous), so that the model file is streamed from it reading each row once. Every block
    of the estimates is one task that writes its columns of each row in place (no rechunking,
    no copy through the main process)."""
    import dask

    path = work.path("estimates.npy")
    if work.done("estimates"):
        return path
    R, V = estimates.shape
    target = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(R, V))
    offset = int(target.offset)  # the header's length: the file is sized, nothing is mapped
    del target
    starts = np.cumsum((0, *estimates.chunks[1][:-1])).tolist()
    write = dask.delayed(_write_columns, pure=False)
    dask.compute(*[write(block, path, offset, V, a)
                   for block, a in zip(estimates.to_delayed().ravel(), starts, strict=True)])
    work.mark("estimates")
    return path


def _write_columns(block: np.ndarray, path: str, offset: int, n_columns: int,
                   start: int) -> None:
    """Task: write a block of columns of a float64 C-ordered ``.npy`` file (``offset`` bytes of
    header, ``n_columns`` columns) in place, from column ``start``."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for r, row in enumerate(np.asarray(block, dtype=np.float64)):
            os.pwrite(fd, np.ascontiguousarray(row).tobytes(),
                      offset + (r * n_columns + start) * 8)
    finally:
        os.close(fd)


def _columns_of(path: str, rows: slice, a: int, b: int) -> np.ndarray:
    """Rows ``rows``, columns a:b of a saved 2-D array (mapped only while they are copied:
    mapped pages count as resident memory)."""
    arr = np.load(path, mmap_mode="r")
    out = np.array(arr[rows, a:b])
    del arr
    return out


# ---------------------------------------------------------------------------------------------
# the model (the project's model envelope, kind imharmony.voxelwise)

#: ComBat's arrays that hold one value (or a column of values) per voxel.
_PER_VOXEL = ("grand_mean", "var_pooled", "beta", "gamma_hat", "delta_hat", "gamma_star",
              "delta_star", "adjusted")
#: The per-voxel arrays :func:`~imharmony.features.combat.correction_coefficients` reads.
_CORRECTION_ARRAYS = ("grand_mean", "var_pooled", "beta", "gamma_star", "delta_star", "adjusted")


def _save_model(path: Path, model: Any, estimates: str, info: dict[str, Any],
                content: dict[str, Any], mask: np.ndarray) -> None:
    """Write the model: ComBat's fields and arrays (per-voxel ones streamed from the estimates
    store block by block), the mask and the voxel-wise fields."""
    from .._validation import label_key
    from ..features.combat import reasons_of
    from ..features.estimators import fit_array_specs
    from .combat import estimate_rows

    J, q = len(model.batches_), len(model.covariate_columns_)
    V, step = int(np.load(estimates, mmap_mode="r").shape[1]), _STREAM_VOXELS
    where = estimate_rows(J, q)

    def rows(name: str, a: int) -> np.ndarray:
        return _columns_of(estimates, where[name], a, min(V, a + step))

    def blocks(name: str) -> Callable[[], Iterator[np.ndarray]]:
        def gen() -> Iterator[np.ndarray]:
            for a in range(0, V, step):
                if name == "adjusted":
                    yield rows("reason", a)[0] == 0
                elif name in ("grand_mean", "var_pooled"):
                    yield rows(name, a)[0]
                else:
                    yield rows(name, a)
        return gen

    reasons: dict[str, str] = {}
    for a in range(0, V, step):
        reason = rows("reason", a)[0].astype(np.int8)
        reasons.update({str(g): why for g, why in reasons_of(reason, offset=a).items()})
    specs = fit_array_specs(J, V, q)
    arrays: dict[str, Any] = {
        name: _persist.ColumnBlocks(specs[name].shape,
                                    bool if specs[name].kinds == "b" else np.float64, blocks(name))
        for name in _PER_VOXEL
    }
    arrays.update({k: np.asarray(info[k]) for k in ("batch_sizes", "gamma_bar", "tau2",
                                                   "a_prior", "b_prior", "n_iter",
                                                   "converged")})
    arrays["mask"] = np.asarray(mask, dtype=bool)
    combat = {
        "batches": [label_key(b) for b in model.batches_.tolist()],
        "reference_index": model.reference_index_, "n_features": V, "feature_names": None,
        "covariates": model.covariate_spec_, "unadjusted": dict(reasons), "reasons": reasons,
    }
    doc = {"params": model._params_for_file(), "combat": combat, **content}
    path.parent.mkdir(parents=True, exist_ok=True)
    _persist.save_model(path, kind=MODEL_KIND, version=MODEL_VERSION, content=doc,
                        arrays=arrays)


def _load_model(model_dir: Path) -> tuple[_persist.ModelFile, Any]:
    """The verified model file (per-voxel arrays left on disk) and a ComBat holding its design."""
    from ..features.estimators import ComBat

    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise ModelFileError(
            f"{model_dir}: no {MODEL_FILE}; give the --model folder written by `imharmony "
            "voxelwise fit` (a run that did not finish leaves none)."
        )
    made: dict[str, Any] = {}

    def validate(c: dict[str, Any]) -> dict[str, _persist.ArraySpec]:
        made["model"] = ComBat._from_file_params(path, c)
        combat = _persist.check(path, "combat", c.get("combat"),
                                isinstance(c.get("combat"), dict), "an object")
        specs = ComBat._single_arrays(path, combat, c["params"], "combat.")
        _persist.check(path, "batch_column", c.get("batch_column"),
                       isinstance(c.get("batch_column"), str), "a column name")
        _persist.check(path, "covariate_columns", c.get("covariate_columns"),
                       _persist.is_str_list(c.get("covariate_columns")), "a list of column names")
        shape = _persist.check(path, "shape", c.get("shape"),
                               isinstance(c.get("shape"), list) and len(c["shape"]) == 3
                               and all(_persist.is_int(d, 1) for d in c["shape"]),
                               "a list of 3 ints >= 1")
        affine = c.get("affine")
        _persist.check(path, "affine", affine,
                       isinstance(affine, list) and len(affine) == 4
                       and all(isinstance(r, list) and len(r) == 4 for r in affine)
                       and all(_persist.is_number(v) for r in affine for v in r),
                       "a 4 x 4 list of finite numbers")
        _persist.check(path, "info", c.get("info"), isinstance(c.get("info"), dict),
                       "an object")
        specs["mask"] = _persist.ArraySpec(tuple(shape), "b")
        return specs

    loaded = _persist.load_model(path, kind=MODEL_KIND, version=MODEL_VERSION,
                                 validate=validate, lazy=_PER_VOXEL)
    c = loaded.content
    n_voxels = int(loaded.arrays["mask"].sum())
    _persist.check(path, "combat.n_features", c["combat"]["n_features"],
                   c["combat"]["n_features"] == n_voxels,
                   f"{n_voxels}, the voxels of the model's mask")
    model = made["model"]
    model.set_design(c["combat"]["batches"], c["combat"]["covariates"],
                     c["combat"]["reference_index"])
    return loaded, model


def _coefficients(loaded: _persist.ModelFile, model: Any) -> np.ndarray:
    """Per-site, per-voxel coefficients (J, 2 + q, V) of the correction x* = a x + c + C b
    (:func:`~imharmony.features.combat.correction_coefficients`), computed block by block from
    the model file. Held in memory (a few rows per voxel): written to the work store, they
    would add dirty pages that compete with the outputs for the disk."""
    from ..features.combat import CombatFit, correction_coefficients

    arrays = loaded.arrays
    J, q = len(model.batches_), len(model.covariate_columns_)
    V = int(loaded.content["combat"]["n_features"])
    block = min(V, _STREAM_VOXELS)
    coef = np.empty((J, 2 + q, V))
    small = {k: np.asarray(arrays[k]) for k in ("batch_sizes", "gamma_bar", "tau2", "a_prior",
                                                 "b_prior", "n_iter", "converged")}
    for a in range(0, V, block):
        b = min(V, a + block)
        used = {k: arrays[k].columns(a, b) for k in _CORRECTION_ARRAYS}
        unused = np.broadcast_to(np.nan, used["gamma_star"].shape)  # not read by the correction
        fit = CombatFit(**small, **used, gamma_hat=unused, delta_hat=unused)
        scale, const, beta = correction_coefficients(fit)
        coef[:, 0, a:b], coef[:, 1, a:b], coef[:, 2:, a:b] = scale, const, beta
    return coef


# ---------------------------------------------------------------------------------------------
# harmonizing the images (the second half of fit, all of apply)


def _harmonize(client: Any, work: _Work, loaded: _persist.ModelFile, model: Any,
               codes: np.ndarray, C: np.ndarray, paths: list[Path], outs: list[Path],
               mask_file: str, progress: Progress | None) -> None:
    ref = model.reference_index_
    with _timed("per-site coefficients"):
        coef = _coefficients(loaded, model)
        # one copy per site on the cluster (none on a local one: same process), which the
        # site's write tasks share; the reference site is returned exactly as given
        sites = [None if j == ref else client.scatter(coef[j], hash=False)
                 for j in range(coef.shape[0])]
        del coef
    V = int(loaded.content["combat"]["n_features"])
    per_task = _rows_per_task(V)
    groups = []
    for j in range(len(model.batches_)):
        rows = np.flatnonzero(codes == j)
        for k in range(0, rows.size, per_task):
            part = rows[k : k + per_task].tolist()
            groups.append((part, ([str(paths[i]) for i in part], mask_file, sites[j],
                                  np.asarray(C[part], dtype=np.float64),
                                  [str(outs[i]) for i in part])))
    with _timed("correcting and writing the images"):
        _submit(client, work, _write_rows, "write", groups, len(paths), progress)


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
    from ..io.images import nifti_grid
    from .cluster import dask_client, release_memory
    from .combat import estimate_rows, fit_moments, moment_rows

    table, paths = _read_manifest(manifest, [batch, *covariates])
    mask_arr, affine = _read_mask(mask)
    _check_grids(paths, nifti_grid(mask_arr.shape, affine, mask), str(mask))
    # absolute: workers of a cluster do not share this process's working directory
    output_dir, model_dir = Path(output_dir).resolve(), Path(model_dir).resolve()
    outs = _outputs(paths, output_dir)
    model = ComBat(mean_only=mean_only, eb=eb, reference_batch=reference_batch)
    n, V = len(paths), int(mask_arr.sum())
    levels, codes, C, ref, encoder = model.learn_design(
        n, table[batch].to_numpy(), _covariate_frame(table, covariates)
    )
    model.set_design(levels, encoder.spec, ref)
    J, q = len(levels), C.shape[1]
    rows = max(moment_rows(J, q), sum(r.stop - r.start for r in estimate_rows(J, q).values()))
    chunk = _chunk_voxels(rows, V, memory_limit)
    fingerprint = _fingerprint("fit", batch, list(covariates), chunk, mean_only, eb,
                               str(reference_batch), table.to_json(),
                               paths=[*paths, Path(mask)])
    model_file = model_dir / MODEL_FILE
    with dask_client(scheduler, memory_limit=memory_limit) as client:
        work = _Work(output_dir / WORK_NAME, fingerprint)  # nothing is written before this
        mask_file = work.mask(mask_arr)
        if work.done("model") and model_file.is_file():
            if progress is not None:
                progress("read", n, n)
                progress("fit", 1, 1)
        else:
            budget = _MOMENTS_IN_MEMORY if memory_limit is None else min(
                _MOMENTS_IN_MEMORY, memory_limit // 4)
            fit = {"mean_only": mean_only, "ref": ref, "in_memory": budget}
            mom, first = _moments(client, work, paths, codes, C, mask_file, V, chunk, fit,
                                  progress)
            release_memory()
            if progress is not None:
                progress("fit", 0, 1)
            with _timed("priors and EB"):
                estimates, info = fit_moments(mom, codes, len(levels), C.shape[1],
                                              method="parametric" if eb else "none",
                                              mean_only=mean_only, ref=ref, tol=float(model.tol),
                                              max_iter=int(model.max_iter),
                                              first_passes=first)
            with _timed("estimates"):
                stored = _store_estimates(work, estimates)
            del mom, estimates  # moments held in memory are released
            release_memory()
            content = {
                "batch_column": batch, "covariate_columns": list(covariates),
                "shape": list(mask_arr.shape), "affine": affine.tolist(),
                "info": {"n_iter": np.asarray(info["n_iter"]).tolist(),
                         "n_adjusted": int(info["n_adjusted"])},
            }
            with _timed("model file"):
                _save_model(model_file, model, stored, info, content,
                            mask_arr)
            work.mark("model")
            work.drop("moments.npy", "estimates.npy")
            _drop_sums(work, codes)
            if progress is not None:
                progress("fit", 1, 1)
        release_memory()
        loaded, saved = _load_model(model_dir)
        _harmonize(client, work, loaded, saved, codes, C, paths, outs, mask_file, progress)
    with _timed("removing the work folder"):
        shutil.rmtree(work.root, ignore_errors=True)
    logger.info("voxel-wise ComBat: %d images x %d voxels, %d sites; model in %s", n, V,
                len(levels), model_dir)
    info = loaded.content["info"]
    return {"n_images": n, "n_voxels": V, "sites": list(levels), "n_iter": info["n_iter"],
            "n_adjusted": info["n_adjusted"], "outputs": [str(o) for o in outs]}


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
    :class:`~imharmony.errors.UnseenBatchError` before anything is written. Each image is read
    once.

    Returns
    -------
    dict
        ``n_images``, ``n_voxels``, ``outputs``.

    Raises
    ------
    ModelFileError
        If the model folder is missing, edited or corrupted.
    """
    from ..io.images import nifti_grid
    from .cluster import dask_client

    model_dir, output_dir = Path(model_dir).resolve(), Path(output_dir).resolve()
    loaded, model = _load_model(model_dir)
    c = loaded.content
    batch, covariates = c["batch_column"], list(c["covariate_columns"])
    table, paths = _read_manifest(manifest, [batch, *covariates])
    mask_arr = loaded.arrays["mask"]
    where = f"the model's mask in {model_dir / MODEL_FILE}"
    grid = nifti_grid(mask_arr.shape, np.asarray(c["affine"], dtype=np.float64), where)
    _check_grids(paths, grid, where)
    outs = _outputs(paths, output_dir)
    n, V = len(paths), int(c["combat"]["n_features"])
    codes, C = model.encode_samples(n, table[batch].to_numpy(),
                                    _covariate_frame(table, covariates))
    fingerprint = _fingerprint("apply", str(model_dir), table.to_json(),
                               paths=[*paths, model_dir / MODEL_FILE])
    with dask_client(scheduler, memory_limit=memory_limit) as client:
        work = _Work(output_dir / WORK_NAME, fingerprint)  # nothing is written before this
        mask_file = work.mask(mask_arr)
        _harmonize(client, work, loaded, model, codes, C, paths, outs, mask_file, progress)
    shutil.rmtree(work.root, ignore_errors=True)
    return {"n_images": n, "n_voxels": V, "outputs": [str(o) for o in outs]}
