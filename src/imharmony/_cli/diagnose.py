"""``imharmony diagnose``: was the site effect removed, and was the biology kept? As an HTML report.

BEFORE and AFTER are the same feature table before and after harmonization (CSV, TSV or
Parquet, one row per sample, in the same order). Column roles follow ``imharmony combat``: the
batch, biology, covariate and id columns are named on the command line; pyradiomics'
``diagnostics_*`` columns and those matched by ``--exclude`` are not diagnosed; every other
numeric column is a feature (missing values are allowed: each feature is analysed on its
complete cases); non-numeric columns are carried along (and must agree between the files).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from typing import TYPE_CHECKING, Any

from .._vocabulary import BIOLOGY_TYPES, MAX_FEATURES, N_PERMUTATIONS, N_SPLITS
from ..errors import DataError
from ..io._atomic import check_outputs
from . import add_former_flag, non_negative_int, positive_int

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("imharmony.cli")

_STYLE = {
    "removed": "bold green", "kept": "bold green",
    "reduced": "bold yellow", "inflated": "bold yellow",
    "not removed": "bold red", "erased": "bold red",
    "not assessed": "bold",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diagnose",
        help="check a harmonization (site effect removed? biology kept?) and write an HTML report",
        description=(
            "Compare a feature table before and after harmonization: per-feature site tests, "
            "multivariate site measures, Fisher ratios and mixed models of the biology, and "
            "confounding. Prints the two verdicts and writes a self-contained HTML report. "
            "Numeric columns are features unless named as batch, biology, covariate or id."
        ),
    )
    p.add_argument("before", metavar="BEFORE", help="feature table before harmonization")
    p.add_argument("after", metavar="AFTER",
                   help="the same table after harmonization (same rows in the same order)")
    p.add_argument("--batch", required=True, metavar="COL", help="column with the site/batch")
    p.add_argument("--biology", required=True, metavar="COL",
                   help="column with the biology to preserve (a class label or a number)")
    p.add_argument("--biology-type", choices=BIOLOGY_TYPES, default=BIOLOGY_TYPES[0],
                   help="how to read the biology (default auto: text, and integers with at most "
                        "10 distinct values, are classes; numbers otherwise)")
    p.add_argument("--covariate", action="append", default=[], metavar="COL",
                   help="further biological covariate (repeatable); non-numeric = categorical")
    p.add_argument("--id", action="append", default=[], metavar="COL",
                   help="numeric column that is an identifier, not a feature (repeatable)")
    p.add_argument("--output", required=True, metavar="report.html", help="HTML report to write")
    p.add_argument("--title", metavar="TEXT", help="heading of the report")
    p.add_argument("--random-state", type=int, default=0, metavar="N",
                   help="seed of the permutations and cross-validation folds (default 0)")
    p.add_argument("--max-features", type=non_negative_int, default=MAX_FEATURES, metavar="N",
                   help=f"mixed models on the N most site-affected features (default "
                        f"{MAX_FEATURES}; 0 skips)")
    p.add_argument("--n-permutations", type=non_negative_int, default=N_PERMUTATIONS,
                   metavar="N", help=f"site shuffles of the guided-PCA p-value (default "
                                     f"{N_PERMUTATIONS}; 0 skips)")
    add_former_flag(p, "--permutations", "--n-permutations", dest="n_permutations",
                    type=non_negative_int)
    p.add_argument("--n-splits", type=positive_int, default=N_SPLITS, metavar="N",
                   help=f"cross-validation folds of the site prediction (default {N_SPLITS})")
    add_former_flag(p, "--folds", "--n-splits", dest="n_splits", type=positive_int)
    p.add_argument("--anderson", action="store_true",
                   help="add the k-sample Anderson-Darling test to the site tests (slow for many "
                        "features)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="numeric columns matching this glob are not diagnosed (repeatable; "
                        "pyradiomics' diagnostics_* columns never are)")
    p.add_argument("--model", metavar="MODEL.json",
                   help="the model that made AFTER (combat fit --model): the report and --json "
                        "name its method and parameters")
    p.add_argument("--json", metavar="PATH",
                   help="also write the verdicts, reasons, thresholds and key numbers as JSON")
    p.set_defaults(func=run)


def _check_same_samples(before: pd.DataFrame, after: pd.DataFrame, cols: list[str],
                        args: argparse.Namespace) -> None:
    """Non-feature columns present in both files must hold the same values, row by row."""
    import numpy as np

    if len(before) != len(after):
        raise DataError(
            f"{args.after}: {len(after)} row(s) but {args.before} has {len(before)}; BEFORE and "
            "AFTER must hold the same samples in the same order."
        )
    for c in cols:
        a = before[c].reset_index(drop=True)
        b = after[c].reset_index(drop=True)
        same = (a == b) | (a.isna() & b.isna())
        if not bool(same.all()):
            row = int(np.flatnonzero(~same.to_numpy())[0])
            raise DataError(
                f"{args.after}: column {c!r} differs from {args.before} at row {row + 1} "
                f"({b.iloc[row]!r} vs {a.iloc[row]!r}); BEFORE and AFTER must hold the same "
                "samples in the same order."
            )


def _check_features(after: pd.DataFrame, features: list[str], args: argparse.Namespace,
                    roles: list[str]) -> None:
    from .._validation import split_feature_table

    feats_after = split_feature_table(after, roles, exclude=args.exclude,
                                      source=args.after).features
    if feats_after != features:
        missing = [c for c in features if c not in feats_after]
        extra = [c for c in feats_after if c not in features]
        if missing or extra:
            detail = []
            if missing:
                detail.append(f"missing or not numeric in AFTER: {missing[:5]}"
                              + (" ..." if len(missing) > 5 else ""))
            if extra:
                detail.append(f"only in AFTER: {extra[:5]}" + (" ..." if len(extra) > 5 else ""))
            raise DataError(
                f"{args.after}: not the same feature columns as {args.before} ("
                + "; ".join(detail) + "). Pass the same features, or name extra numeric "
                "columns with --id or --exclude."
            )
        # same set, other order: follow BEFORE's order
        logger.info("AFTER lists the features in another order; they are matched by name")


def _command_line(args: argparse.Namespace) -> str:
    parts = ["imharmony", "diagnose", args.before, args.after, "--batch", args.batch,
             "--biology", args.biology]
    for c in args.covariate:
        parts += ["--covariate", c]
    for c in args.id:
        parts += ["--id", c]
    for c in args.exclude:
        parts += ["--exclude", c]
    parts += ["--output", args.output, "--random-state", str(args.random_state),
              "--max-features", str(args.max_features), "--n-permutations",
              str(args.n_permutations), "--n-splits", str(args.n_splits),
              "--biology-type", args.biology_type]
    if args.anderson:
        parts.append("--anderson")
    if args.title:
        parts += ["--title", args.title]
    if args.model:
        parts += ["--model", args.model]
    return " ".join(shlex.quote(str(x)) for x in parts)


def _print_verdicts(diagnosis: Any, output: str) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if Console().is_terminal else 110)
    table = Table(title=f"imharmony diagnose: {diagnosis.n_samples} samples, "
                        f"{diagnosis.n_features} features, {diagnosis.n_sites} sites",
                  show_lines=True)
    table.add_column("question")
    table.add_column("verdict")
    table.add_column("why")
    for question in ("site effect", "biology"):
        verdict = diagnosis.verdicts[question]
        table.add_row(question, f"[{_STYLE.get(verdict, 'bold')}]{verdict.upper()}[/]",
                      "\n".join(diagnosis.reasons[question]))
    console.print(table)
    conf = diagnosis.confounding
    console.print(f"confounding of site and biology: {conf.biology_level or 'not assessed'}",
                  highlight=False)
    for f in conf.findings:  # other findings (a covariate, the sample sizes), named as such
        if f.role != "biology" and f.level in ("strong", "complete"):
            console.print(f"note: {f.message}", highlight=False, soft_wrap=True)
    if diagnosis.missing.get("cells"):
        m = diagnosis.missing
        console.print(f"missing values: {m['cells']} cell(s) in {m['features']} feature(s), each "
                      "feature analysed on its complete cases", highlight=False)
    console.print(f"report: {output}", highlight=False, soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    import warnings

    from .._validation import require_columns, split_feature_table
    from ..diagnostics.verdict import diagnose
    from ..errors import HarmonizationWarning
    from ..io.tables import read_table, write_json
    from ..report.html import file_record

    check_outputs([args.before, args.after, *([args.model] if args.model else [])],
                  [args.output, *([args.json] if args.json else [])])
    before = read_table(args.before)
    after = read_table(args.after)
    roles = [args.batch, args.biology, *args.covariate, *args.id]
    dup = sorted({c for c in roles if roles.count(c) > 1})
    if dup:
        raise DataError(f"column(s) {dup} named for more than one role (batch, biology, "
                        "covariate, id); give each column one role.")
    for path, df in ((args.before, before), (args.after, after)):
        require_columns(df, [args.batch], path, "batch (--batch)")
        require_columns(df, [args.biology], path, "biology (--biology)")
        require_columns(df, args.covariate, path, "covariate (--covariate)")
        require_columns(df, args.id, path, "id (--id)")
    cols = split_feature_table(before, roles, exclude=args.exclude, source=args.before)
    features, other = cols.features, cols.passthrough + cols.excluded
    _check_features(after, features, args, roles)
    shared = roles + [c for c in other if c in after.columns]
    _check_same_samples(before, after, shared, args)
    for c in (args.batch, args.biology, *args.covariate):
        if before[c].isna().any():
            raise DataError(
                f"{args.before}: column {c!r} has {int(before[c].isna().sum())} missing "
                "value(s); fill or drop those samples."
            )
    if cols.passthrough:
        logger.info("not features (non-numeric): %s", ", ".join(cols.passthrough))
    if cols.excluded:
        logger.info("not diagnosed (excluded): %s", ", ".join(cols.excluded))
    logger.info("diagnosing %d samples x %d features (batch %r, biology %r)", len(before),
                len(features), args.batch, args.biology)

    covariates = before[args.covariate].reset_index(drop=True) if args.covariate else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HarmonizationWarning)
        diagnosis = diagnose(
            before[features].reset_index(drop=True),
            after[features].reset_index(drop=True),
            batch=before[args.batch].reset_index(drop=True),
            biology=before[args.biology].reset_index(drop=True),
            covariates=covariates,
            random_state=args.random_state,
            biology_type=args.biology_type,
            max_features=args.max_features,
            n_permutations=args.n_permutations,
            n_splits=args.n_splits,
            anderson=args.anderson,
        )
    for w in caught:
        logger.warning("%s", w.message)
    method = None
    if args.model:
        from .combat import _load_model

        # the estimator's repr: its class and every parameter that differs from the defaults
        method = repr(_load_model(args.model))
    provenance = {
        "inputs": {"before": file_record(args.before, "before"),
                   "after": file_record(args.after, "after"),
                   **({"model": file_record(args.model, "model")} if args.model else {})},
        **({"harmonization method": method} if method else {}),
        "command": _command_line(args),
        "columns": (f"batch {args.batch!r}, biology {args.biology!r}, covariates "
                    f"{list(args.covariate)}, ids {list(args.id)}, {len(features)} features"),
    }
    path = diagnosis.to_html(args.output, title=args.title, provenance=provenance)
    if args.json:
        doc = diagnosis.to_dict()
        doc.update(command=provenance["command"], report=str(path), method=method,
                   columns={"batch": args.batch, "biology": args.biology,
                            "covariates": list(args.covariate), "ids": list(args.id),
                            "excluded": cols.excluded, "features": features},
                   warnings=[str(w.message) for w in caught])
        write_json(doc, args.json)
    _print_verdicts(diagnosis, str(path))
    return 0
