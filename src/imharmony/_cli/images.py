"""``imharmony images``: harmonize the images listed in a manifest (thin over the library).

Exit status: 0 when every row is done or skipped; 2 when a row failed because of its input (or
the manifest is unusable); 1 when a row failed for another reason.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import HarmonizationError
from ..workflows.batch import FORMER_NORMALIZERS, GRIDS, NORMALIZERS, NYUL_MODEL_NAME

__all__ = ["register", "run"]


def _fwhm_arg(values: list[str] | None) -> Any:
    if values is None:
        return "coarsest"
    if len(values) == 1 and values[0].lower() in ("coarsest", "none"):
        return None if values[0].lower() == "none" else "coarsest"
    try:
        numbers = [float(v) for v in values]
    except ValueError as exc:
        raise HarmonizationError(
            f"--target-fwhm: {' '.join(values)!r} is not a FWHM; give one number (mm), one per "
            "axis, 'coarsest' (the default) or 'none'."
        ) from exc
    return numbers[0] if len(numbers) == 1 else numbers


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``images`` sub-command."""
    p = sub.add_parser(
        "images",
        help="harmonize the images of a manifest: resolution, grid, intensities",
        description=(
            "Harmonize every image listed in MANIFEST.csv (columns: path, site, optional mask, "
            "source_fwhm in mm as 'x;y;z' or one number, id, MR metadata; any other column is "
            "an error). Per image: match the resolution to a common target, resample to a "
            "common spacing or onto one common grid (--reference IMAGE, --grid first), "
            "normalize the intensities. At least one step must be selected. Finished rows are "
            "skipped when run again; failed rows are reported in DIR/summary.csv while the "
            "others complete."
        ),
    )
    p.add_argument("manifest", metavar="MANIFEST.csv", help="one row per image")
    p.add_argument("--output-dir", required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument(
        "--spacing", nargs="+", type=float, metavar="MM",
        help="new voxel spacing: one value or one per axis; each image keeps its own extent "
        "and orientation (default: keep each grid)",
    )
    p.add_argument(
        "--reference", metavar="IMAGE",
        help="put every image and mask on the grid of IMAGE: orientation, origin, spacing and "
        "shape (masks by nearest neighbour); instead of --spacing",
    )
    p.add_argument(
        "--grid", choices=GRIDS,
        help="'first': put every image on the grid of the manifest's first image (as "
        "--reference with that image)",
    )
    p.add_argument(
        "--target-fwhm", nargs="+", metavar="MM",
        help="common resolution: one value, one per axis, 'coarsest' (default: the coarsest "
        "source_fwhm of the manifest, when it has that column) or 'none'",
    )
    p.add_argument(
        "--normalize", choices=(*NORMALIZERS, *FORMER_NORMALIZERS), default="none",
        metavar="{" + ",".join(NORMALIZERS) + "}",
        help="intensity normalization inside each row's mask; nyul: the Nyúl standardizer "
        f"fitted on the batch, saved as DIR/{NYUL_MODEL_NAME} (default: none)",
    )
    p.add_argument(
        "--nyul-model", metavar="M.json",
        help="with --normalize nyul: load the standardizer from M.json when it exists (nothing "
        "is fitted), else fit it on the batch and save it there",
    )
    p.add_argument("--contrast", choices=["T1w", "T2w"], default="T1w",
                   help="weighting, for whitestripe (default: T1w)")
    p.add_argument("--interpolation", choices=["linear", "bspline", "nearest"], default="linear",
                   help="image interpolation when resampling (default: linear)")
    p.add_argument("--outside", choices=["keep", "zero", "nan"], default="keep",
                   help="voxels outside the mask after normalization (default: keep)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="parallel worker processes (default: 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="tcp://HOST:PORT of a running Dask scheduler: run the rows on its "
                   "workers (which must see the same files) instead of --workers processes")
    p.add_argument("--ignore-column", action="append", default=[], metavar="COL",
                   help="a manifest column with no meaning here, left alone (repeatable; any "
                   "other unknown column is an error)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute rows that a previous run already finished")
    p.add_argument("--no-harmonizability-check", action="store_true",
                   help="do not check MR metadata columns before processing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch with a progress bar, print the summary; return the exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..workflows.batch import SUMMARY_NAME, harmonize_images

    spacing = args.spacing
    if spacing is not None and len(spacing) == 1:
        spacing = spacing[0]
    target = _fwhm_arg(args.target_fwhm)
    quiet = bool(getattr(args, "quiet", False))
    err = Console(stderr=True)
    out = Console(file=sys.stdout)

    # the bar appears with the first row's result, so that a run refused before any row
    # starts prints its one-line error alone
    bar = Progress(
        TextColumn("[bold]images[/bold]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err, disable=quiet, transient=False,
    )
    task_ids: list[Any] = []

    def progress(res: dict[str, Any]) -> None:
        if not task_ids:
            bar.start()
            task_ids.append(bar.add_task("", total=res["total"]))
        bar.update(task_ids[0], total=res["total"], advance=1,
                   description=f"{res['name']}: {res['status']}")

    try:
        summary = harmonize_images(
            args.manifest,
            args.output_dir,
            spacing=spacing,
            reference=args.reference,
            grid=args.grid,
            target_fwhm=target,
            normalize=args.normalize,
            nyul_model=args.nyul_model,
            contrast=args.contrast,
            interpolation=args.interpolation,
            outside=args.outside,
            workers=args.workers,
            overwrite=args.overwrite,
            check_harmonizable=not args.no_harmonizability_check,
            ignore_columns=args.ignore_column,
            progress=progress,
            scheduler=args.scheduler,
        )
    finally:
        if task_ids:
            bar.stop()

    counts = summary["status"].value_counts()
    failed = summary[summary["status"] == "failed"]
    if not quiet:
        table = Table(title=f"imharmony images: {len(summary)} rows")
        for col in ("status", "count"):
            table.add_column(col)
        for status in ("done", "skipped", "failed"):
            table.add_row(status, str(int(counts.get(status, 0))))
        out.print(table)
        out.print(f"summary: {args.output_dir}/{SUMMARY_NAME}", highlight=False)
    if len(failed):
        for _, row in failed.iterrows():
            err.print(f"failed: {row['name']} ({row['path']}): {row['reason']}", highlight=False,
                      markup=False)
        return 1 if (failed["error_kind"] == "internal").any() else 2
    return 0
