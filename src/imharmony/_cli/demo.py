"""``imharmony demo``: the whole path on a built-in multi-site image cohort with known truth.

A procedurally generated cohort of 3-D brain-like images from four sites (each with its own gain,
offset, point-spread function, voxel grid and noise, and its own disease prevalence) is written,
harmonized at the image level, measured (region features), harmonized with ComBat with and
without the disease as a covariate, and diagnosed. The summary shows that leaving the disease out
of ComBat erases it while keeping it preserves it; the HTML reports hold the details. The
pipeline itself is :func:`imharmony.workflows.demo.run_demo`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .._vocabulary import DEMO_RANDOM_STATE
from . import add_former_flag, positive_int

if TYPE_CHECKING:
    from rich.console import Console

    from ..workflows.demo import DemoResult

logger = logging.getLogger("imharmony.cli")

_COLOURS = {
    "removed": "green", "kept": "green", "none detected": "green",
    "reduced": "yellow", "inflated": "yellow", "not assessed": "yellow", "reference": "cyan",
    "not removed": "red", "erased": "red", "present": "red",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on built-in data",
        description=(
            "Generate a multi-site cohort of 3-D images with known site effects and a disease "
            "whose prevalence differs by site; harmonize the images, extract region features, "
            "run ComBat with and without the disease as a covariate, diagnose each step and "
            "write HTML reports."
        ),
    )
    p.add_argument("--output", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--random-state", type=int, default=DEMO_RANDOM_STATE, metavar="N",
                   help=f"seed of the cohort (default {DEMO_RANDOM_STATE})")
    add_former_flag(p, "--seed", "--random-state", dest="random_state", type=int)
    p.add_argument(
        "--n-per-site", type=positive_int, default=argparse.SUPPRESS, metavar="N",
        help="subjects at each of the four sites (default 24; fewer run faster, but below about "
             "16 the verdicts start to depend on the seed)",
    )
    add_former_flag(p, "--subjects-per-site", "--n-per-site", dest="n_per_site",
                    type=positive_int)
    p.add_argument(
        "--quick", action="store_true",
        help="smoke test in seconds: 6 subjects per site, a coarser anatomy, no mixed models "
             "and fewer permutations (the verdicts are not reliable at that size)",
    )
    p.set_defaults(func=run)


def _verdict(text: str) -> str:
    colour = _COLOURS.get(text)
    return f"[{colour}]{text}[/]" if colour else text


def _print_cohort(console: Console, result: DemoResult) -> None:
    from rich.table import Table

    truth = result.cohort.truth
    table = result.cohort.table
    console.print(
        f"\n[bold]imharmony demo[/]: {len(table)} subjects at {len(truth)} sites, 3-D images "
        "with CSF, grey and white matter; the disease lowers the grey matter's intensity inside "
        f"one region (by {abs(result.cohort.disease_effect):g} units, white matter = 100).\n"
    )
    tbl = Table(title="The sites (the truth the demo generated)")
    for col in ("site", "gain", "offset", "PSF FWHM (mm)", "voxel (mm)", "noise SD",
                "disease prevalence"):
        tbl.add_column(col, justify="left" if col == "site" else "right")
    for site, row in truth.iterrows():
        fwhm = " x ".join(f"{row[f'fwhm_{a}']:g}" for a in range(3))
        vox = " x ".join(f"{row[f'spacing_{a}']:g}" for a in range(3))
        tbl.add_row(str(site), f"{row['gain']:g}", f"{row['offset']:g}", fwhm, vox,
                    f"{row['noise_sd']:g}",
                    f"{row['prevalence']:.0%} ({row['n_diseased']}/{row['n_subjects']})")
    console.print(tbl)


def _print_summary(console: Console, result: DemoResult) -> None:
    from rich.table import Table

    chance = 1.0 / len(result.cohort.truth)
    tbl = Table(title="Was the site effect removed, and was the disease kept?")
    tbl.add_column("data", no_wrap=True)
    tbl.add_column("site effect")
    tbl.add_column("features with\na site effect", justify="right")
    tbl.add_column(f"site predicted\n(chance {chance:.2f})", justify="right")
    tbl.add_column("disease")
    tbl.add_column("how much", no_wrap=True)
    for _, row in result.summary.iterrows():
        tbl.add_row(
            row["scenario"],
            _verdict(row["site_effect"]),
            f"{row['site_fraction']:.0%}",
            f"{row['site_prediction']:.2f}",
            _verdict(row["biology"]),
            row["measure"],
        )
    console.print(tbl)
    console.print(
        f"{len(result.feature_columns)} region features per subject (4 regions x 11 first-order "
        "statistics). Site effect: features whose site test stays significant once disease, age "
        "and sex are accounted for (Benjamini-Hochberg 5%, negligible effects ignored). Disease: "
        "(a) its standardized effect d within sites on the region's grey-matter intensity; (b) d "
        "after the image step / d raw (erased below 0.9); (c), (d) r = disease coefficient after "
        "ComBat / before it (mixed model with a random site intercept), kept for 0.9-1.1, as in "
        "the reports.\n"
    )
    for label, messages in result.combat_warnings.items():
        for message in messages:
            console.print(f"[yellow]ComBat ({label}) warned:[/] {message}")
    keep = result.summary.iloc[2]
    drop = result.summary.iloc[3]
    if keep["biology"] == "kept" and drop["biology"] == "erased":
        console.print(
            "\nThe sites differ in disease prevalence, so part of what looks like a site effect "
            f"is the disease. ComBat told to keep the disease: site effect {keep['site_effect']}, "
            f"disease kept (r = {keep['biology_measure']:.2f}). ComBat NOT told: site effect "
            f"{drop['site_effect']}, disease erased (r = {drop['biology_measure']:.2f}): it "
            "removed the disease along with the sites. Always pass the biology you want to keep "
            "as a covariate.\n"
        )
    else:
        console.print(
            f"\n[yellow]At this cohort size the diagnostics do not show the expected story[/] "
            f"(disease with ComBat keeping it: {keep['biology']}; without: {drop['biology']}). "
            "Run the full demo (imharmony demo, 24 subjects per site) to see it.\n"
        )


def _print_files(console: Console, result: DemoResult) -> None:
    out = result.output_dir.resolve()
    console.print(f"Written to {out}:", soft_wrap=True)
    rel = {key: path.resolve().relative_to(out) for key, path in result.files.items()}
    console.print("  images/raw/ and images/manifest.csv   the generated images, labels, masks")
    console.print("  images/harmonized/                    the image-level harmonization")
    for key in ("features_raw", "features_images", "features_combat_with_disease",
                "features_combat_without_disease"):
        console.print(f"  {rel[key]}")
    console.print(f"  {rel['combat_model']} (+ .npz)   ComBat keeping the disease")
    console.print("  cohort/ (subjects and site truth), summary.csv, diagnosis_*.txt")
    if result.reports:
        console.print("\n[bold]Reports:[/]")
        for key, path in result.reports.items():
            console.print(f"  {key.replace('_', ' ')}: {path.resolve()}", soft_wrap=True)
    else:
        console.print(f"\n[yellow]No HTML report:[/] {result.report_error}")
    console.print(
        "\nApply the saved model to new subjects of these sites with:\n"
        f"  imharmony combat apply NEW.csv --model {result.files['combat_model']} --output OUT.csv",
        soft_wrap=True,
    )
    if result.travelling is not None:
        console.print(
            f"\nTravelling subjects (travelling/): error against the truth "
            f"{result.travelling['rmse'].iloc[0]:.3f} vs ComBat "
            f"{result.travelling['rmse'].iloc[1]:.3f}; sites' population differences kept "
            f"x{result.travelling['population_difference_kept'].iloc[0]:.2f} vs ComBat "
            f"x{result.travelling['population_difference_kept'].iloc[1]:.2f}.",
            soft_wrap=True,
        )
    console.print(f"Finished in {result.seconds:.0f} s.")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..workflows.demo import run_demo

    console = Console(width=None if Console().is_terminal else 120)
    kwargs: dict[str, object] = {}
    if hasattr(args, "n_per_site"):  # not given: run_demo's default
        kwargs["n_per_site"] = (args.n_per_site,) * 4
    if args.quick:
        kwargs = {"n_per_site": (6,) * 4, "fine_shape": 40, "n_permutations": 100,
                  "max_features": 0}
    # the progress display tells what runs; the library's INFO messages would break it up
    lib_logger = logging.getLogger("imharmony")
    previous = lib_logger.level
    if lib_logger.getEffectiveLevel() < logging.WARNING:
        lib_logger.setLevel(logging.WARNING)
    tasks: dict[str, int] = {}
    try:
        with Progress(
            TextColumn("{task.description:<38}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=False,
        ) as bar:

            def progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total)
                bar.update(tasks[step], completed=done, total=total)

            result = run_demo(Path(args.output), random_state=args.random_state, progress=progress,
                              **kwargs)  # type: ignore[arg-type]
    finally:
        lib_logger.setLevel(previous)
    _print_cohort(console, result)
    _print_summary(console, result)
    _print_files(console, result)
    return 0
