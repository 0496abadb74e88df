"""``imharmony phantom calibrate`` and ``imharmony phantom apply``: insert-phantom calibration.

``calibrate`` learns each site's gain and offset from a table of insert measurements;
``apply`` maps an image or a feature table onto the inserts' reference scale.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..errors import DataError
from . import add_former_flag, given

logger = logging.getLogger("imharmony.cli")


def add_calibrate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``calibrate`` to the ``phantom`` sub-commands."""
    c = sub.add_parser(
        "calibrate",
        help="learn each site's gain and offset from phantom inserts of known value",
        description=(
            "Fit measured = offset + gain x reference per site (weighted least squares) from "
            "INSERTS (one row per insert measurement) and save the calibration."
        ),
    )
    c.add_argument("inserts", metavar="INSERTS.csv", help="insert table (.csv, .tsv, .parquet)")
    c.add_argument("--site", required=True, metavar="COL", help="column with the site/scanner")
    c.add_argument("--reference", required=True, metavar="COL", help="column of known values")
    c.add_argument("--measured", required=True, metavar="COL", help="column of measured values")
    c.add_argument("--insert", metavar="COL", help="column naming the insert (optional)")
    c.add_argument("--sd", metavar="COL", help="column of each measurement's SD (weights)")
    c.add_argument("--weighted", action=argparse.BooleanOptionalAction,
                   default=argparse.SUPPRESS,
                   help="weighted least squares (default: yes); --no-weighted: ordinary least "
                        "squares")
    add_former_flag(c, "--unweighted", "--no-weighted", dest="weighted", nargs=0, const=False)
    c.add_argument("--model", required=True, metavar="M.json", help="where to save the model")
    c.add_argument("--json", metavar="SUMMARY.json", help="write gains, offsets, SEs, linearity")
    c.set_defaults(func=run_calibrate)


def add_apply(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``apply`` to the ``phantom`` sub-commands."""
    a = sub.add_parser(
        "apply",
        help="map an image or a feature table onto the phantom's reference scale",
        description=(
            "Apply a calibration saved by 'imharmony phantom calibrate' to an IMAGE (NIfTI, "
            "NRRD, MHA or a DICOM series folder; give --site) or a TABLE (.csv/.tsv/.parquet; "
            "sites from --site-column, default the calibration's site column, or --site)."
        ),
    )
    a.add_argument("input", metavar="IMAGE|TABLE", help="image file/folder or feature table")
    a.add_argument("--model", required=True, metavar="M.json", help="calibration model")
    a.add_argument("--output", required=True, metavar="OUT", help="output image or table")
    a.add_argument("--site", metavar="LABEL", help="the site every value was measured at")
    a.add_argument("--site-column", metavar="COL", help="table column with each row's site")
    a.add_argument(
        "--column", action="append", default=[], metavar="COL",
        help="table column to calibrate (repeatable; default every numeric column but the site)",
    )
    a.set_defaults(func=run_apply)


def _is_table(path: str) -> bool:
    from ..io.tables import TABLE_SUFFIXES

    return Path(path).suffix.lower() in TABLE_SUFFIXES


def run_calibrate(args: argparse.Namespace) -> int:
    import json

    from ..calibration.inserts import PhantomCalibration
    from ..io._atomic import atomic_path
    from ..io.tables import read_table

    df = read_table(args.inserts)
    named = [c for c in (args.site, args.reference, args.measured, args.insert, args.sd) if c]
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise DataError(
            f"{args.inserts}: column(s) {missing} not found; columns are {list(df.columns)[:12]}"
        )
    cal = PhantomCalibration(**given(args, "weighted")).fit(
        df, site=args.site, reference=args.reference, measured=args.measured,
        insert=args.insert, sd=args.sd,
    )
    cal.save(args.model, metadata={"site_column": str(args.site), "source": str(args.inserts)})
    summary = _summary(cal)
    for row in summary["sites"]:
        logger.info("%s: gain %.5g ± %.2g, offset %.5g ± %.2g, max |residual| %.3g",
                    row["site"], row["gain"], row["gain_se"], row["offset"], row["offset_se"],
                    row["max_abs_residual"])
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    return 0


def _summary(cal: Any) -> dict[str, Any]:
    import math

    def num(v: Any) -> float | None:
        return float(v) if math.isfinite(float(v)) else None

    rows = []
    for j, site in enumerate(cal.sites_):
        lin = cal.linearity_.iloc[j]
        rows.append({
            "site": str(site), "gain": num(cal.gain_[j]), "gain_se": num(cal.gain_se_[j]),
            "offset": num(cal.offset_[j]), "offset_se": num(cal.offset_se_[j]),
            "n_inserts": int(lin["n_inserts"]), "r2": num(lin["r2"]), "rmse": num(lin["rmse"]),
            "max_abs_residual": num(lin["max_abs_residual"]),
            "range": [num(cal.range_[j, 0]), num(cal.range_[j, 1])],
        })
    return {"sites": rows}


def run_apply(args: argparse.Namespace) -> int:
    from ..calibration.inserts import PhantomCalibration

    cal = PhantomCalibration.load(args.model)
    if not _is_table(args.input):
        from ..io.images import read_image, write_image

        if args.site is None:
            if len(cal.sites_) != 1:
                raise DataError(
                    f"{args.input}: give --site (one of {[str(s) for s in cal.sites_]}): an "
                    "image is calibrated with the gain and offset of the site that acquired it."
                )
            site = cal.sites_[0]
        else:
            site = _site_label(args.site, cal.sites_)
        out = cal.transform(read_image(args.input), site=site)
        write_image(out, args.output)
        logger.info("calibrated image (site %s) written to %s", site, args.output)
        return 0
    return _apply_table(cal, args)


def _site_label(text: str, sites: Any) -> Any:
    """The fitted site label that a command-line string names ("3" names the label 3)."""
    for s in sites:
        if str(s) == text:
            return s
    return text


def _apply_table(cal: Any, args: argparse.Namespace) -> int:
    import numpy as np

    from .._validation import is_numeric_column
    from ..io.tables import read_table, write_table

    df = read_table(args.input)
    site_col = args.site_column or (None if args.site else cal.metadata_.get("site_column"))
    if site_col is not None and site_col not in df.columns:
        raise DataError(
            f"{args.input}: site column {site_col!r} not found; name it with --site-column or "
            "give --site LABEL for a table from one site."
        )
    if site_col is None and args.site is None:
        raise DataError(f"{args.input}: give --site-column COL or --site LABEL.")
    columns = args.column or [
        c for c in df.columns if c != site_col and is_numeric_column(df[c].dtype)
    ]
    missing = [c for c in columns if c not in df.columns]
    if missing or not columns:
        raise DataError(f"{args.input}: column(s) to calibrate {missing or columns} not found.")
    if site_col is not None:
        site = np.array([_site_label(str(s), cal.sites_) for s in df[site_col]], dtype=object)
    else:
        site = _site_label(args.site, cal.sites_)
    calibrated = cal.transform(df[columns], site=site)
    result = df.copy()
    result[columns] = calibrated.to_numpy()
    write_table(result, args.output)
    logger.info("calibrated %d column(s) of %d rows -> %s", len(columns), len(df), args.output)
    return 0
