"""``imharmony voxelwise fit`` and ``imharmony voxelwise apply``: ComBat on image stacks.

Thin over :mod:`imharmony.scale.voxelwise`; the work runs on Dask (``--scheduler`` for an
existing cluster, otherwise a local one) with a progress bar per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import given

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``voxelwise`` command and its ``fit`` / ``apply`` sub-commands."""
    p = sub.add_parser(
        "voxelwise",
        help="voxel-wise ComBat of image stacks (out of core, local or on a Dask cluster)",
        description=(
            "Harmonize every voxel inside a mask across the images of a manifest (column "
            "'image': NIfTI paths relative to the manifest). fit reads each image into its "
            "site's per-voxel sums on disk, then again to write its output; an interrupted run "
            "resumes when started again."
        ),
    )
    vsub = p.add_subparsers(dest="voxelwise_command", metavar="{fit,apply}", required=True)

    f = vsub.add_parser("fit", help="learn voxel-wise site effects and write harmonized images")
    f.add_argument("manifest", metavar="MANIFEST.csv", help="one row per image")
    f.add_argument("--mask", required=True, metavar="MASK", help="mask on the images' grid")
    f.add_argument("--batch", required=True, metavar="COL", help="column with the site/scanner")
    f.add_argument("--covariate", action="append", default=[], metavar="COL",
                   help="biological covariate to preserve (repeatable)")
    f.add_argument("--mean-only", action="store_true", help="correct location only")
    f.add_argument("--eb", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="empirical Bayes shrinkage of the site effects (default: yes)")
    f.add_argument("--reference-batch", metavar="VALUE", help="site left unchanged")
    _common(f)
    f.set_defaults(func=run_fit)

    a = vsub.add_parser("apply", help="harmonize new images of the learned sites with a model")
    a.add_argument("manifest", metavar="MANIFEST.csv", help="one row per image")
    _common(a)
    a.set_defaults(func=run_apply)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model folder")
    p.add_argument("--output-dir", required=True, metavar="DIR",
                   help="folder for the harmonized images (the inputs' file names)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="tcp://HOST:PORT of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="memory of the local Dask worker, e.g. 1GiB (default: Dask's share of "
                   "the machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _progress(quiet: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    console=Console(stderr=True), disable=quiet)


def _run(args: argparse.Namespace, call: Any) -> int:
    with _progress(bool(getattr(args, "quiet", False)) or args.json) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = call(progress)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(f"{result['n_images']} images x {result['n_voxels']} voxels "
                         f"harmonized into {args.output_dir}\n")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from ..scale.cluster import parse_memory
    from ..scale.voxelwise import fit_voxelwise

    memory = parse_memory(args.memory_limit)
    return _run(args, lambda progress: fit_voxelwise(
        args.manifest, mask=args.mask, batch=args.batch, covariates=args.covariate,
        model_dir=args.model, output_dir=args.output_dir, scheduler=args.scheduler,
        memory_limit=memory, mean_only=args.mean_only, reference_batch=args.reference_batch,
        progress=progress, **given(args, "eb"),
    ))


def run_apply(args: argparse.Namespace) -> int:
    from ..scale.cluster import parse_memory
    from ..scale.voxelwise import apply_voxelwise

    memory = parse_memory(args.memory_limit)
    return _run(args, lambda progress: apply_voxelwise(
        args.manifest, model_dir=args.model, output_dir=args.output_dir,
        scheduler=args.scheduler, memory_limit=memory, progress=progress,
    ))
