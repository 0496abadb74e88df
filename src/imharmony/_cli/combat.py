"""``imharmony combat fit`` and ``imharmony combat apply`` on CSV / Parquet feature tables.

Column roles: the batch column(s) and the covariate columns are named on the command line; every
other numeric column is a feature unless listed with ``--id`` or matched by ``--exclude`` (and
pyradiomics' ``diagnostics_*`` columns, which are never features); non-numeric columns pass
through unchanged. The output keeps every column, in order, with the features harmonized.
``--json`` writes what was done (sites, samples, features, warnings) for pipelines.

Methods (``--method``) come from :data:`METHODS`: each entry names its estimator class (imported
on use), and the command-line options it takes beyond the common ones (from :data:`_OPTIONS`).
An estimator follows ComBat's contract: keyword parameters, ``fit(X, batch=..., covariates=...,
**fit_kwargs)``, ``transform`` with the same keywords, ``save(path, metadata=...)`` and
``load(path)``. Adding a method is one line in ``METHODS``; the model file records the method, so
``imharmony combat apply`` needs only ``--model``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._vocabulary import LONGITUDINAL_RANDOM, LONGITUDINAL_SIGMA, SMOOTH_CRITERIA
from ..errors import DataError
from ..io._atomic import check_outputs
from . import given

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("imharmony.cli")


@dataclass(frozen=True)
class Method:
    """One ``--method``: its estimator class and the method-specific options it takes.

    Attributes
    ----------
    target : str
        ``"module:Class"`` of the estimator, imported only when the method is used.
    help : str
    options : tuple of str
        Keys of :data:`_OPTIONS` this method accepts (constructor parameters, or ``subject``,
        a per-sample column given to ``fit`` / ``transform``).
    required : tuple of str
        Those of ``options`` that must be given.
    several_batches : bool
        Whether a repeated ``--batch`` (several batch variables) is supported.
    """

    target: str
    help: str
    options: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    several_batches: bool = True

    def load_class(self) -> Any:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module, __package__), name)


#: Method-specific options: argparse settings, and whether the value is a column given per
#: sample to fit/transform ("column") or a constructor parameter ("param"). Each defaults to
#: ``argparse.SUPPRESS``: an option not given is not passed, and the estimator's default applies.
_OPTIONS: dict[str, dict[str, Any]] = {
    "smooth": {
        "kind": "param",
        "flags": ("--smooth",),
        "kwargs": {
            "action": "append",
            "metavar": "COL",
            "help": "covariate whose effect is a penalized cubic spline (ComBat-GAM; "
            "repeatable); it is preserved like --covariate",
        },
    },
    "smooth_penalty": {
        "kind": "param",
        "flags": ("--smooth-penalty",),
        "kwargs": {
            "metavar": "|".join(SMOOTH_CRITERIA) + "|ALPHA",
            "help": "spline penalty: chosen per feature by seeded 5-fold cross-validation "
            "(cv, default), generalized cross-validation (gcv), or one number",
        },
    },
    "smooth_df": {
        "kind": "param",
        "flags": ("--smooth-df",),
        "kwargs": {"type": int, "metavar": "N", "help": "B-spline basis size of each smooth "
                   "covariate (default 10)"},
    },
    "smooth_degree": {
        "kind": "param",
        "flags": ("--smooth-degree",),
        "kwargs": {"type": int, "metavar": "N", "help": "degree of the splines (default 3)"},
    },
    "percent_var": {
        "kind": "param",
        "flags": ("--percent-var",),
        "kwargs": {"type": float, "metavar": "P", "help": "CovBat: harmonize the principal "
                   "components explaining this share of the variance (default 0.95)"},
    },
    "n_components": {
        "kind": "param",
        "flags": ("--n-components",),
        "kwargs": {"type": int, "metavar": "N", "help": "CovBat: harmonize exactly N principal "
                   "components (overrides --percent-var)"},
    },
    "standardize_scores": {
        "kind": "param",
        "flags": ("--standardize-scores",),
        "kwargs": {"action": argparse.BooleanOptionalAction, "help": "CovBat: standardize the "
                   "component scores before their ComBat (default: yes)"},
    },
    "random_state": {
        "kind": "param",
        "flags": ("--random-state",),
        "kwargs": {"type": int, "metavar": "N", "help": "seed of the penalty's folds"},
    },
    "subject": {
        "kind": "column",
        "flags": ("--subject",),
        "kwargs": {"metavar": "COL", "help": "column with the subject of every visit"},
    },
    "formula": {
        "kind": "param",
        "flags": ("--formula",),
        "kwargs": {"metavar": "FORMULA", "help": "fixed effects, e.g. 'age + diagnosis*time'"},
    },
    "random": {
        "kind": "param",
        "flags": ("--random",),
        "kwargs": {"choices": LONGITUDINAL_RANDOM, "help": "subject random effects (default "
                   f"{LONGITUDINAL_RANDOM[0]})"},
    },
    "time": {
        "kind": "param",
        "flags": ("--time",),
        "kwargs": {"metavar": "COL", "help": "time column of the random slope (default time)"},
    },
    "sigma": {
        "kind": "param",
        "flags": ("--sigma",),
        "kwargs": {"choices": LONGITUDINAL_SIGMA, "help": "feature scale: REML residual SD or "
                   f"root mean square of the conditional residuals (default "
                   f"{LONGITUDINAL_SIGMA[0]})"},
    },
    "n_iter": {
        "kind": "param",
        "flags": ("--n-iter",),
        "kwargs": {"type": int, "metavar": "N", "help": "empirical Bayes iterations (default 30)"},
    },
}

#: Options of every ComBat-like method (not of every method: --method longitudinal has none).
_COMMON = ("nonparametric", "mean_only", "eb", "reference_batch", "tol", "max_iter")

#: The estimators behind ``--method`` (the first is the default).
METHODS: dict[str, Method] = {
    "combat": Method(
        "..features.estimators:ComBat",
        "ComBat (empirical Bayes); with --smooth, ComBat-GAM",
        ("smooth", "smooth_penalty", "smooth_df", "smooth_degree", "random_state"),
    ),
    "covbat": Method(
        "..features.covbat:CovBat",
        "CovBat: ComBat, then the covariance (PCA)",
        ("percent_var", "n_components", "standardize_scores"),
    ),
    "longitudinal": Method(
        "..features.longitudinal:LongitudinalComBat",
        "longitudinal ComBat: a mixed model per feature with subject random effects",
        ("subject", "formula", "random", "time", "sigma", "n_iter"),
        required=("subject",),
        several_batches=False,
    ),
}


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
    f.add_argument(
        "--batch",
        required=True,
        action="append",
        metavar="COL",
        help="column with the site/batch; repeat for several batch variables (scanner, kernel, "
        "...), corrected one after the other in the order given",
    )
    f.add_argument(
        "--method",
        choices=list(METHODS),
        default=next(iter(METHODS)),
        help="; ".join(f"{k}: {m.help}" for k, m in METHODS.items()),
    )
    used = {o for m in METHODS.values() for o in m.options}
    for key, opt in _OPTIONS.items():
        if key in used:
            f.add_argument(*opt["flags"], dest=key, default=argparse.SUPPRESS, **opt["kwargs"])
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
    # the options of every ComBat-like method; not given, the estimator's defaults apply
    keep = argparse.SUPPRESS
    f.add_argument("--nonparametric", action="store_true", default=keep,
                   help="non-parametric EB priors")
    f.add_argument("--mean-only", action="store_true", default=keep,
                   help="adjust location only")
    f.add_argument("--eb", action=argparse.BooleanOptionalAction, default=keep,
                   help="empirical Bayes shrinkage of the site effects (default: yes)")
    f.add_argument("--reference-batch", metavar="VALUE", default=keep,
                   help="site to leave unchanged")
    f.add_argument("--tol", type=float, metavar="TOL", default=keep,
                   help="convergence tolerance of the EB iterations (default 1e-4)")
    f.add_argument("--max-iter", type=int, metavar="N", default=keep,
                   help="EB iteration cap (default 1000)")
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
    import pandas as pd

    if isinstance(batch, pd.DataFrame):  # several batch variables: the sites of each
        sites: dict[str, Any] = {
            str(c): {str(k): int(v) for k, v in batch[c].astype(str).value_counts(
                sort=False).items()}
            for c in batch.columns
        }
    else:
        counts = batch.astype(str).value_counts(sort=False)
        sites = {str(k): int(v) for k, v in counts.items()}
    return {
        "command": command,
        "input": str(args.features),
        "model": str(args.model),
        "output": None if args.output is None else str(args.output),
        "samples": len(df),
        "sites": sites,
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


def _method_options(args: argparse.Namespace, method: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Constructor parameters and per-sample columns of the method-specific options given."""
    params: dict[str, Any] = {}
    columns: dict[str, str] = {}
    for key, opt in _OPTIONS.items():
        if not hasattr(args, key):
            continue
        value = getattr(args, key)
        if key not in METHODS[method].options:
            raise DataError(f"{opt['flags'][0]} is not an option of --method {method}.")
        if key == "smooth_penalty":
            try:
                value = float(value)
            except ValueError:
                if value not in SMOOTH_CRITERIA:
                    raise DataError(
                        f"--smooth-penalty {value!r}: give {', '.join(SMOOTH_CRITERIA)} or a "
                        "number."
                    ) from None
        (columns if opt["kind"] == "column" else params)[key] = value
    m = METHODS[method]
    missing = [_OPTIONS[k]["flags"][0] for k in m.required if k not in params and k not in columns]
    if missing:
        raise DataError(f"--method {method} needs {', '.join(missing)}.")
    if len(args.batch) > 1 and not m.several_batches:
        raise DataError(f"--method {method} takes one --batch column; got {len(args.batch)}.")
    return params, columns


def _batch(df: pd.DataFrame, cols: list[str]) -> Any:
    return df[cols[0]] if len(cols) == 1 else df[cols]


def run_fit(args: argparse.Namespace) -> int:
    import warnings

    from .._validation import require_columns, split_feature_table
    from ..io.tables import read_table, write_json

    check_outputs([args.features], [args.model, args.output])
    df = read_table(args.features)
    extra, columns = _method_options(args, args.method)
    for col in extra.get("smooth", []):
        if col not in args.covariate:
            args.covariate.append(col)  # a smooth covariate is a covariate
    require_columns(df, args.batch, args.features, "batch (--batch)")
    require_columns(df, args.covariate, args.features, "covariate (--covariate)")
    require_columns(df, args.id, args.features, "id (--id)")
    require_columns(df, list(columns.values()), args.features, "per-sample")
    roles = [*args.batch, *args.covariate, *args.id, *columns.values()]
    unknown_cat = [c for c in args.categorical if c not in args.covariate]
    if unknown_cat:
        raise DataError(f"--categorical {unknown_cat}: give these columns as --covariate too.")
    cols = split_feature_table(df, roles, exclude=args.exclude, source=args.features)
    features = cols.features
    if cols.passthrough:
        logger.info("passing through non-numeric columns: %s", ", ".join(cols.passthrough))
    if cols.excluded:
        logger.info("carried along unharmonized (excluded): %s", ", ".join(cols.excluded))
    estimator = METHODS[args.method].load_class()
    accepted = set(estimator().get_params())
    common = given(args, *_COMMON)
    refused = [k for k in common if k not in accepted]
    if refused:
        flag = "--" + refused[0].replace("_", "-")
        raise DataError(f"{flag} is not an option of --method {args.method}.")
    model = estimator(**common, **extra)
    X = df[features]
    batch = _batch(df, args.batch)
    cov = _covariates(df, args.covariate, args.categorical)
    per_sample = {k: df[c] for k, c in columns.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, batch=batch, covariates=cov, **per_sample)
        harmonized = (
            model.transform(X, batch=batch, covariates=cov, **per_sample) if args.output else None
        )
    _relog(caught)
    model.save(
        args.model,
        metadata={
            "method": args.method,
            "batch_column": str(args.batch[0]),
            "batch_columns": [str(c) for c in args.batch],
            "sample_columns": {k: str(c) for k, c in columns.items()},
            "covariate_columns": [str(c) for c in args.covariate],
            "categorical_columns": [str(c) for c in args.categorical],
            "id_columns": [str(c) for c in args.id],
            "exclude": [str(c) for c in args.exclude],
            "source": str(args.features),
        },
    )
    logger.info(
        "fitted %s on %d samples x %d features (batch %s); model saved to %s",
        args.method,
        X.shape[0],
        X.shape[1],
        ", ".join(map(str, args.batch)),
        args.model,
    )
    if args.output:
        _write(df, harmonized, features, args.output)
        logger.info("harmonized table written to %s", args.output)
    if args.json:
        write_json(_fit_summary("combat fit", args, df, batch, cols, caught), args.json)
    return 0


def _load_model(path: str) -> Any:
    """The model of any registered method, from the kind its file records."""
    import json
    from pathlib import Path

    from ..errors import ModelFileError

    try:
        kind = json.loads(Path(path).read_text()).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        kind = None  # the estimator's loader reports what is wrong with the file
    by_kind = {m.load_class()._model_kind: m for m in METHODS.values()}
    if kind is not None and kind not in by_kind:
        raise ModelFileError(
            f"{path}: holds a {kind!r} model, which no --method of this imharmony fits "
            f"(methods: {', '.join(METHODS)}); apply it with the imharmony that wrote it."
        )
    return by_kind.get(kind, METHODS["combat"]).load_class().load(path)


def run_apply(args: argparse.Namespace) -> int:
    import warnings

    from .._validation import require_columns, split_feature_table
    from ..io.tables import read_table, write_json

    check_outputs([args.features, args.model], [args.output])
    model = _load_model(args.model)
    meta = model.metadata_
    if "batch_column" not in meta:
        raise DataError(
            f"{args.model}: the model does not record its batch column (it was not saved by "
            "'imharmony combat fit'); use the Python API to apply it."
        )
    df = read_table(args.features)
    features = [str(x) for x in model.feature_names_in_]
    batch_cols = meta.get("batch_columns", [meta["batch_column"]])
    sample_cols = meta.get("sample_columns", {})
    require_columns(df, batch_cols, args.features, "batch")
    require_columns(df, list(sample_cols.values()), args.features, "per-sample")
    require_columns(df, meta.get("covariate_columns", []), args.features, "covariate")
    require_columns(df, features, args.features, "feature")
    roles = [*batch_cols, *sample_cols.values(), *meta.get("covariate_columns", []),
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
    per_sample = {k: df[c] for k, c in sample_cols.items()}
    batch = _batch(df, batch_cols)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        harmonized = model.transform(df[features], batch=batch, covariates=cov, **per_sample)
    _relog(caught)
    _write(df, harmonized, features, args.output)
    logger.info(
        "harmonized %d samples x %d features -> %s", df.shape[0], len(features), args.output
    )
    if args.json:
        used = type(cols)(features=features, passthrough=cols.passthrough,
                          excluded=cols.excluded + [c for c in cols.features
                                                    if c not in features])
        write_json(_fit_summary("combat apply", args, df, batch, used, caught), args.json)
    return 0
