"""``imharmony combat fit`` and ``imharmony combat apply`` on CSV / Parquet feature tables.

Column roles: the batch column and the covariate columns are named on the command line; every
other numeric column is a feature unless listed with ``--id`` or matched by ``--exclude`` (and
pyradiomics' ``diagnostics_*`` columns, which are never features); non-numeric columns pass
through unchanged. The output keeps every column, in order, with the features harmonized.
``--json`` writes what was done (sites, samples, features, warnings) for pipelines.
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
    _add_table_options(f)
    f.set_defaults(func=run_fit)

    a = csub.add_parser(
        "apply",
        help="harmonize a feature table with a saved model",
        description="Harmonize FEATURES with a model saved by 'imharmony combat fit'.",
    )
    a.add_argument("features", metavar="FEATURES", help="feature table (.csv, .tsv, .parquet)")
    a.add_argument("--model", required=True, metavar="MODEL.json", help="model file")
    a.add_argument("--output", required=True, metavar="OUT.csv", help="harmonized table")
    _add_table_options(a)
    a.set_defaults(func=run_apply)


def _add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="numeric columns matching this glob are carried along unharmonized "
                        "(repeatable; pyradiomics' diagnostics_* columns always are)")
    p.add_argument("--json", metavar="PATH",
                   help="also write a machine-readable summary (sites, samples, features, "
                        "warnings) as JSON")


def _fit_summary(command: str, args: argparse.Namespace, df: pd.DataFrame, batch: Any,
                 cols: Any, caught: list[Any]) -> dict[str, Any]:
    counts = batch.astype(str).value_counts(sort=False)
    return {
        "command": command,
        "input": str(args.features),
        "model": str(args.model),
        "output": None if args.output is None else str(args.output),
        "samples": len(df),
        "sites": {str(k): int(v) for k, v in counts.items()},
        "features": len(cols.features),
        "feature_columns": cols.features,
        "excluded_columns": cols.excluded,
        "passthrough_columns": cols.passthrough,
        "missing_values": int(df[cols.features].isna().to_numpy().sum()),
        "warnings": [str(w.message) for w in caught],
    }


def _relog(caught: list[Any]) -> None:
    for w in caught:
        logger.warning("%s", w.message)


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
    import warnings

    from .._validation import require_columns, split_feature_table
    from ..features.estimators import ComBat
    from ..io.tables import read_table, write_json

    check_outputs([args.features], [args.model, args.output])
    df = read_table(args.features)
    require_columns(df, [args.batch], args.features, "batch (--batch)")
    require_columns(df, args.covariate, args.features, "covariate (--covariate)")
    require_columns(df, args.id, args.features, "id (--id)")
    roles = [args.batch, *args.covariate, *args.id]
    unknown_cat = [c for c in args.categorical if c not in args.covariate]
    if unknown_cat:
        raise DataError(f"--categorical {unknown_cat}: give these columns as --covariate too.")
    cols = split_feature_table(df, roles, exclude=args.exclude, source=args.features)
    features = cols.features
    if cols.passthrough:
        logger.info("passing through non-numeric columns: %s", ", ".join(cols.passthrough))
    if cols.excluded:
        logger.info("carried along unharmonized (excluded): %s", ", ".join(cols.excluded))
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, batch=batch, covariates=cov)
        harmonized = model.transform(X, batch=batch, covariates=cov) if args.output else None
    _relog(caught)
    model.save(
        args.model,
        metadata={
            "batch_column": str(args.batch),
            "covariate_columns": [str(c) for c in args.covariate],
            "categorical_columns": [str(c) for c in args.categorical],
            "id_columns": [str(c) for c in args.id],
            "exclude": [str(c) for c in args.exclude],
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
        _write(df, harmonized, features, args.output)
        logger.info("harmonized table written to %s", args.output)
    if args.json:
        write_json(_fit_summary("combat fit", args, df, batch, cols, caught), args.json)
    return 0


def run_apply(args: argparse.Namespace) -> int:
    import warnings

    from .._validation import require_columns, split_feature_table
    from ..features.estimators import ComBat
    from ..io.tables import read_table, write_json

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
    require_columns(df, [meta["batch_column"]], args.features, "batch")
    require_columns(df, meta.get("covariate_columns", []), args.features, "covariate")
    require_columns(df, features, args.features, "feature")
    roles = [meta["batch_column"], *meta.get("covariate_columns", []),
             *meta.get("id_columns", [])]
    cols = split_feature_table(df, roles, exclude=[*meta.get("exclude", []), *args.exclude],
                               source=args.features)
    excluded = [c for c in features if c in cols.excluded]
    if excluded:
        raise DataError(
            f"--exclude matches {excluded[:5]}, which the model {args.model} harmonizes; refit "
            "without those columns, or drop the --exclude."
        )
    not_numeric = [c for c in features if c not in cols.features]
    if not_numeric:
        raise DataError(
            f"{args.features}: feature column(s) {not_numeric[:5]} are not numeric here; the "
            "model needs them as numbers."
        )
    cov = _covariates(df, meta.get("covariate_columns", []), meta.get("categorical_columns", []))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        harmonized = model.transform(df[features], batch=df[meta["batch_column"]],
                                     covariates=cov)
    _relog(caught)
    _write(df, harmonized, features, args.output)
    logger.info(
        "harmonized %d samples x %d features -> %s", df.shape[0], len(features), args.output
    )
    if args.json:
        used = type(cols)(features=features, passthrough=cols.passthrough,
                          excluded=cols.excluded + [c for c in cols.features
                                                    if c not in features])
        write_json(_fit_summary("combat apply", args, df, df[meta["batch_column"]], used,
                                caught), args.json)
    return 0
