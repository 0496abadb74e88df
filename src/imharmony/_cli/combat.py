"""``imharmony combat fit`` and ``imharmony combat apply`` on CSV / Parquet feature tables.

Column roles: the batch column and the covariate columns are named on the command line; every
other numeric column is a feature unless listed with ``--id``; non-numeric columns pass through
unchanged. The output keeps every column, in order, with the features harmonized.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ..errors import DataError
from ..io._atomic import check_outputs

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("imharmony.cli")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "combat",
        help="fit or apply ComBat on a feature table",
        description="Remove site effects from a feature table with ComBat (empirical Bayes).",
    )
    csub = p.add_subparsers(dest="combat_command", metavar="{fit,apply}", required=True)

    f = csub.add_parser(
        "fit",
        help="learn site effects from a feature table (and optionally write it harmonized)",
        description=(
            "Learn ComBat's site effects from FEATURES (CSV or Parquet, one row per sample). "
            "Numeric columns are features unless named as batch, covariate or id."
        ),
    )
    f.add_argument("features", metavar="FEATURES", help="feature table (.csv, .tsv, .parquet)")
    f.add_argument("--batch", required=True, metavar="COL", help="column with the site/batch")
    f.add_argument(
        "--covariate",
        action="append",
        default=[],
        metavar="COL",
        help="biological covariate to preserve (repeatable); numeric = continuous",
    )
    f.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="COL",
        help="treat this covariate as categorical even if numeric (repeatable)",
    )
    f.add_argument(
        "--id",
        action="append",
        default=[],
        metavar="COL",
        help="numeric column that is an identifier, not a feature (repeatable)",
    )
    f.add_argument("--nonparametric", action="store_true", help="non-parametric EB priors")
    f.add_argument("--mean-only", action="store_true", help="adjust location only")
    f.add_argument("--no-eb", action="store_true", help="no empirical Bayes shrinkage")
    f.add_argument("--reference-batch", metavar="VALUE", help="site to leave unchanged")
    f.add_argument("--max-iter", type=int, default=1000, help="EB iteration cap (default 1000)")
    f.add_argument("--model", required=True, metavar="MODEL.json", help="where to save the model")
    f.add_argument("--output", metavar="OUT.csv", help="write the harmonized training table")
    f.set_defaults(func=run_fit)

    a = csub.add_parser(
        "apply",
        help="harmonize a feature table with a saved model",
        description="Harmonize FEATURES with a model saved by 'imharmony combat fit'.",
    )
    a.add_argument("features", metavar="FEATURES", help="feature table (.csv, .tsv, .parquet)")
    a.add_argument("--model", required=True, metavar="MODEL.json", help="model file")
    a.add_argument("--output", required=True, metavar="OUT.csv", help="harmonized table")
    a.set_defaults(func=run_apply)


def _require_columns(df: pd.DataFrame, cols: list[str], path: str, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: {what} column(s) {missing} not found; columns are {list(df.columns)[:12]}"
            + (" ..." if df.shape[1] > 12 else "")
        )


def _covariates(df: pd.DataFrame, cols: list[str], categorical: list[str]) -> pd.DataFrame | None:
    if not cols:
        return None
    cov = df[cols].copy()
    for c in categorical:
        cov[c] = cov[c].astype(str)
    return cov


def _write(df: pd.DataFrame, harmonized: Any, features: list[str], out: str) -> None:
    import numpy as np
    import pandas as pd

    from ..io.tables import write_table

    # one block for the features, put back by position: assigning 10^5 columns by name splits
    # the frame's block once per column (quadratic; minutes on a wide table)
    values = pd.DataFrame(np.asarray(harmonized), index=df.index, columns=features)
    slot = {name: len(df.columns) + k for k, name in enumerate(features)}
    others = [i for i, name in enumerate(df.columns) if name not in slot]
    rank = {i: k for k, i in enumerate(others)}
    n_others = len(others)
    order = [rank[i] if i in rank else slot[name] - len(df.columns) + n_others
             for i, name in enumerate(df.columns)]
    result = pd.concat([df.iloc[:, others], values], axis=1).iloc[:, order]
    write_table(result, out)


def run_fit(args: argparse.Namespace) -> int:
    from ..features.estimators import ComBat, _is_numeric_dtype
    from ..io.tables import read_table

    check_outputs([args.features], [args.model, args.output])
    df = read_table(args.features)
    roles = [args.batch, *args.covariate, *args.id]
    _require_columns(df, roles, args.features, "named")
    unknown_cat = [c for c in args.categorical if c not in args.covariate]
    if unknown_cat:
        raise DataError(f"--categorical {unknown_cat}: give these columns as --covariate too.")
    features = [c for c, dt in df.dtypes.items() if c not in roles and _is_numeric_dtype(dt)]
    if not features:
        raise DataError(
            f"{args.features}: no numeric feature columns besides the batch/covariate/id columns."
        )
    chosen = set(features)  # a set: a list here made this O(columns^2), minutes at 10^5
    passthrough = [c for c in df.columns if c not in roles and c not in chosen]
    if passthrough:
        logger.info("passing through non-numeric columns: %s", ", ".join(map(str, passthrough)))
    model = ComBat(
        nonparametric=args.nonparametric,
        mean_only=args.mean_only,
        reference_batch=args.reference_batch,
        eb=not args.no_eb,
        max_iter=args.max_iter,
    )
    X = df[features]
    batch = df[args.batch]
    cov = _covariates(df, args.covariate, args.categorical)
    model.fit(X, batch=batch, covariates=cov)
    model.save(
        args.model,
        metadata={
            "batch_column": str(args.batch),
            "covariate_columns": [str(c) for c in args.covariate],
            "categorical_columns": [str(c) for c in args.categorical],
            "id_columns": [str(c) for c in args.id],
            "source": str(args.features),
        },
    )
    logger.info(
        "fitted ComBat on %d samples x %d features from %d sites; model saved to %s",
        X.shape[0],
        X.shape[1],
        len(model.batches_),
        args.model,
    )
    if args.output:
        _write(df, model.transform(X, batch=batch, covariates=cov), features, args.output)
        logger.info("harmonized table written to %s", args.output)
    return 0


def run_apply(args: argparse.Namespace) -> int:
    from ..features.estimators import ComBat
    from ..io.tables import read_table

    check_outputs([args.features, args.model], [args.output])
    model = ComBat.load(args.model)
    meta = model.metadata_
    if "batch_column" not in meta:
        raise DataError(
            f"{args.model}: the model does not record its batch column (it was not saved by "
            "'imharmony combat fit'); use the Python API to apply it."
        )
    df = read_table(args.features)
    features = [str(x) for x in model.feature_names_in_]
    _require_columns(df, [meta["batch_column"]], args.features, "batch")
    _require_columns(df, meta.get("covariate_columns", []), args.features, "covariate")
    _require_columns(df, features, args.features, "feature")
    cov = _covariates(df, meta.get("covariate_columns", []), meta.get("categorical_columns", []))
    harmonized = model.transform(df[features], batch=df[meta["batch_column"]], covariates=cov)
    _write(df, harmonized, features, args.output)
    logger.info(
        "harmonized %d samples x %d features -> %s", df.shape[0], len(features), args.output
    )
    return 0
