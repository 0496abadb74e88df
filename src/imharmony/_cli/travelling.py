"""``imharmony travelling fit`` and ``imharmony travelling apply``: travelling subjects.

``fit`` learns each site's measurement bias from a table of travellers' visits (one row per
visit); ``apply`` removes it from any table of samples of those sites. Numeric columns are
features unless named as site, subject or id; other columns pass through unchanged and in order.
"""

from __future__ import annotations

import argparse
import logging

from .._vocabulary import TRAVELLING_SCALES
from ..errors import DataError
from . import given

logger = logging.getLogger("imharmony.cli")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "travelling",
        help="learn or remove site measurement bias with travelling subjects",
        description=(
            "Travelling subjects (participants scanned at several sites) give each site's "
            "measurement bias; removing it keeps the differences between the sites' populations."
        ),
    )
    tsub = p.add_subparsers(dest="travelling_command", metavar="{fit,apply}", required=True)
    f = tsub.add_parser(
        "fit",
        help="learn each site's measurement bias from travellers' visits",
        description="Fit the travelling-subject model (participant + site effects) to TS.",
    )
    f.add_argument("table", metavar="TS.csv", help="one row per visit (.csv, .tsv, .parquet)")
    f.add_argument("--site", required=True, metavar="COL", help="column with the site")
    f.add_argument("--subject", required=True, metavar="COL", help="column with the participant")
    f.add_argument("--scale", choices=TRAVELLING_SCALES, default=TRAVELLING_SCALES[0],
                   help="site offset only (additive, default) or offset and gain (linear)")
    f.add_argument("--reference-site", metavar="VALUE", help="map onto this site's scale")
    # not given, the model's own defaults apply
    f.add_argument("--validate", action=argparse.BooleanOptionalAction,
                   default=argparse.SUPPRESS,
                   help="leave-one-traveller-out check of the agreement (default: yes)")
    f.add_argument("--max-iter", type=int, metavar="N", default=argparse.SUPPRESS,
                   help="Gauss-Newton iteration cap of --scale linear (default 100)")
    f.add_argument("--tol", type=float, metavar="TOL", default=argparse.SUPPRESS,
                   help="relative convergence tolerance of --scale linear (default 1e-10)")
    f.add_argument("--id", action="append", default=[], metavar="COL",
                   help="numeric column that is an identifier, not a feature (repeatable)")
    f.add_argument("--model", required=True, metavar="M.json", help="where to save the model")
    f.add_argument("--json", metavar="SUMMARY.json",
                   help="write the leave-one-traveller-out agreement per feature")
    f.set_defaults(func=run_fit)

    a = tsub.add_parser(
        "apply",
        help="remove the learned measurement bias from a table",
        description="Harmonize TABLE (samples of the fitted sites) with a travelling model.",
    )
    a.add_argument("table", metavar="TABLE", help="table with the site column and the features")
    a.add_argument("--model", required=True, metavar="M.json", help="model file")
    a.add_argument("--output", required=True, metavar="OUT.csv", help="harmonized table")
    a.set_defaults(func=run_apply)


def run_fit(args: argparse.Namespace) -> int:
    import json

    from .._validation import is_numeric_column
    from ..calibration.travelling import TravellingSubjects
    from ..io._atomic import atomic_path
    from ..io.tables import read_table

    df = read_table(args.table)
    roles = [args.site, args.subject, *args.id]
    missing = [c for c in roles if c not in df.columns]
    if missing:
        raise DataError(
            f"{args.table}: column(s) {missing} not found; columns are {list(df.columns)[:12]}"
        )
    features = [c for c in df.columns if c not in roles and is_numeric_column(df[c].dtype)]
    if not features:
        raise DataError(f"{args.table}: no numeric feature columns besides site/subject/id.")
    model = TravellingSubjects(scale=args.scale, reference_site=args.reference_site,
                               **given(args, "validate", "max_iter", "tol"))
    model.fit(df[features], site=df[args.site], subject=df[args.subject])
    model.save(args.model, metadata={"site_column": str(args.site), "source": str(args.table)})
    logger.info("travelling subjects: %d travellers at %d sites, %d features; model saved to %s",
                model.n_travellers_, len(model.sites_), len(features), args.model)
    if model.agreement_ is not None:
        med = model.agreement_.median()
        logger.info("leave-one-traveller-out median ICC(2,1) %.3f -> %.3f, CCC %.3f -> %.3f",
                    med["icc_before"], med["icc_after"], med["ccc_before"], med["ccc_after"])
    if args.json:
        agreement = None
        if model.agreement_ is not None:
            agreement = json.loads(model.agreement_.to_json(orient="index"))
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"sites": [str(s) for s in model.sites_],
                                       "n_travellers": model.n_travellers_,
                                       "scale": args.scale, "agreement": agreement}, indent=2))
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from ..calibration.travelling import TravellingSubjects
    from ..io.tables import read_table, write_table

    model = TravellingSubjects.load(args.model)
    site_col = model.metadata_.get("site_column")
    if site_col is None:
        raise DataError(
            f"{args.model}: the model does not record its site column (it was not saved by "
            "'imharmony travelling fit'); use the Python API to apply it."
        )
    df = read_table(args.table)
    features = [str(x) for x in getattr(model, "feature_names_in_", [])]
    missing = [c for c in [site_col, *features] if c not in df.columns]
    if missing:
        raise DataError(
            f"{args.table}: column(s) {missing} not found; the model needs its site column and "
            "the features it was fitted on."
        )
    harmonized = model.transform(df[features], site=df[site_col].astype(object).to_numpy())
    result = df.copy()
    result[features] = harmonized.to_numpy()
    write_table(result, args.output)
    logger.info("harmonized %d samples x %d features -> %s", len(df), len(features), args.output)
    return 0
