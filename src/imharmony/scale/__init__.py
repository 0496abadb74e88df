"""Scale: the same numerical cores on Dask — out-of-core ComBat, voxel-wise harmonization of image
stacks, and work on a local or remote Dask cluster."""

from .._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "ClusterError": ".cluster",
        "apply_dask": ".combat",
        "apply_voxelwise": ".voxelwise",
        "dask_client": ".cluster",
        "fit_dask": ".combat",
        "fit_voxelwise": ".voxelwise",
    },
)
