"""The one in-memory image type: an array with its physical geometry and metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["Image"]


@dataclass(eq=False)
class Image:
    """An image array with spacing, origin, direction and metadata.

    Parameters
    ----------
    array : array_like, shape (n0, n1[, n2[, ...]])
        Voxel values. Array axis ``i`` has physical spacing ``spacing[i]``. Spatial axes come first;
        a trailing channel or time axis is allowed (``spacing`` then covers the spatial axes, or all
        axes if given with that length).
    spacing : sequence of float, optional
        Voxel size in millimetres along each spatial array axis. Defaults to 1 mm.
    origin : sequence of float, optional
        Physical position (mm) of the centre of the first voxel, one value per spatial axis.
        Defaults to zeros.
    direction : array_like, shape (d, d), optional
        Direction cosines: column ``i`` is the physical direction of array axis ``i``. Defaults to
        the identity.
    meta : mapping, optional
        Free-form metadata (e.g. DICOM keywords such as ``Modality`` or ``RepetitionTime``, the
        units, and ``"history"``: the list of harmonization steps applied).

    Notes
    -----
    The array is stored as given (no copy when it is already a numpy array). Operations in imharmony
    return new ``Image`` objects and never modify their inputs.
    """

    array: np.ndarray
    spacing: tuple[float, ...] = field(default=())
    origin: tuple[float, ...] = field(default=())
    direction: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    meta: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        array: Any,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        arr = np.asarray(array)
        if arr.ndim < 1:
            raise DataError("Image array must have at least one axis; got a scalar.")
        nd = arr.ndim if spacing is None else len(spacing)
        if spacing is None:
            spacing = (1.0,) * nd
        spacing_t = tuple(float(s) for s in spacing)
        if len(spacing_t) > arr.ndim:
            raise DataError(
                f"Image spacing has {len(spacing_t)} values but the array has only "
                f"{arr.ndim} axes; give one spacing per spatial axis."
            )
        if not all(np.isfinite(s) and s > 0 for s in spacing_t):
            raise DataError(f"Image spacing must be positive and finite, got {spacing_t}.")
        origin_t = (0.0,) * nd if origin is None else tuple(float(o) for o in origin)
        if len(origin_t) != nd:
            raise DataError(
                f"Image origin has {len(origin_t)} values; expected {nd} (one per axis)."
            )
        dir_a = np.eye(nd) if direction is None else np.asarray(direction, dtype=float)
        if dir_a.size == nd * nd:
            dir_a = dir_a.reshape(nd, nd)
        if dir_a.shape != (nd, nd):
            raise DataError(f"Image direction must be a {nd}x{nd} matrix, got shape {dir_a.shape}.")
        self.array = arr
        self.spacing = spacing_t
        self.origin = origin_t
        self.direction = dir_a
        self.meta = dict(meta) if meta is not None else {}

    @property
    def ndim(self) -> int:
        """Number of spatial axes (the length of ``spacing``)."""
        return len(self.spacing)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array."""
        return tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes (the array's first ``ndim`` axes)."""
        return tuple(self.array.shape[: self.ndim])

    def grid_difference(self, other: Image, *, rtol: float = 1e-5, atol: float = 1e-4) -> str:
        """How ``other``'s voxel grid differs from this image's, in words; ``""`` when the same.

        The grid is the spatial shape, the spacing, the origin and the direction. Spacing and
        origin (mm) are compared with ``numpy.allclose(rtol, atol)``, direction cosines with
        ``atol``.
        """
        if self.spatial_shape != other.spatial_shape:
            return f"shape {other.spatial_shape} instead of {self.spatial_shape}"
        if not np.allclose(other.spacing, self.spacing, rtol=rtol, atol=atol):
            return f"spacing {other.spacing} instead of {self.spacing}"
        if not np.allclose(other.origin, self.origin, rtol=rtol, atol=atol):
            return f"origin {other.origin} instead of {self.origin}"
        if not np.allclose(other.direction, self.direction, rtol=0.0, atol=atol):
            return (
                f"direction {np.round(other.direction, 4).tolist()} instead of "
                f"{np.round(self.direction, 4).tolist()}"
            )
        return ""

    def same_grid(self, other: Image, *, rtol: float = 1e-5, atol: float = 1e-4) -> bool:
        """Whether ``other`` covers the same voxels: same spatial shape, spacing, origin and
        direction. THE rule for "same grid" everywhere in imharmony (masks, label maps, outputs).
        """
        return not self.grid_difference(other, rtol=rtol, atol=atol)

    def with_array(self, array: Any, **meta_updates: Any) -> Image:
        """Return a new image with the same geometry, a new array and updated metadata."""
        meta = dict(self.meta)
        meta.update(meta_updates)
        return Image(array, self.spacing, self.origin, self.direction.copy(), meta)

    def __repr__(self) -> str:
        return (
            f"Image(shape={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
            f"origin={self.origin})"
        )
