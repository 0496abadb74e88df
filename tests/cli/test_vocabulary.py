"""One vocabulary: every API keyword has its command-line flag, named the same, defaulting the same.

For each command, the keywords of the API callables it wraps (``inspect.signature``) are walked:
each must have the flag ``--name-with-dashes`` (or the positional argument, or the flag named in
``flags`` for a stated reason), or be listed in ``omitted`` with the reason the command line has
no flag for it. A flag's default must be the API's (or ``argparse.SUPPRESS``: nothing is passed
and the API's default applies), unless ``defaults`` says why it differs; a default stated in a
flag's help must be the API's too. The vocabulary itself is the README's "Vocabulary"
section.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from imharmony import cli
from imharmony._vocabulary import (
    BIOLOGY_TYPES,
    EARL_STANDARDS,
    LONGITUDINAL_RANDOM,
    LONGITUDINAL_SIGMA,
    TRAVELLING_SCALES,
)
from imharmony.calibration.earl import earl_filter
from imharmony.calibration.inserts import PhantomCalibration
from imharmony.calibration.nema import nema_recovery
from imharmony.calibration.travelling import TravellingSubjects
from imharmony.demo import run_demo
from imharmony.diagnostics.verdict import diagnose
from imharmony.features.covbat import CovBat
from imharmony.features.estimators import ComBat
from imharmony.features.longitudinal import LongitudinalComBat
from imharmony.io.dicom import DTYPES, UNITS, read_dicom_series
from imharmony.protocols.reference import audit_protocols
from imharmony.protocols.scan import scan_protocols
from imharmony.scale.voxelwise import apply_voxelwise, fit_voxelwise
from imharmony.workflows.batch import harmonize_images

#: Reason shared by the keywords the scikit-learn contract adds.
_Y = "scikit-learn's unused target, there for Pipeline compatibility"
#: Reason shared by the progress callbacks.
_PROGRESS = "a Python callback; the command draws its own progress bar"
#: Reason shared by the repeatable options (a list-valued keyword takes the singular flag).
_REPEATABLE = "repeatable, so named in the singular: one column per flag"


@dataclass(frozen=True)
class Command:
    """A command, the API callables it wraps, and the stated exceptions to the naming rule."""

    path: tuple[str, ...]
    api: tuple[Callable[..., Any], ...]
    positional: dict[str, str] = field(default_factory=dict)  # keyword -> positional argument
    flags: dict[str, str] = field(default_factory=dict)  # keyword -> its flag, named otherwise
    omitted: dict[str, str] = field(default_factory=dict)  # keyword -> why there is no flag
    defaults: dict[str, str] = field(default_factory=dict)  # keyword -> why the default differs

    @property
    def name(self) -> str:
        return " ".join(self.path)


COMMANDS: tuple[Command, ...] = (
    Command(("convert",), (read_dicom_series,), positional={"folder": "dicom_dir"},
            omitted={"pet_options": "SUV body-size overrides (suv_factors keywords); the "
                                    "command reads them from the headers"},
            defaults={"dtype": "the command writes a file: auto stores exact integers as "
                               "integers and anything else as float32, the API returns float64"}),
    Command(("scan",), (scan_protocols,), positional={"paths": "paths"},
            omitted={"progress": _PROGRESS}),
    Command(("audit",), (audit_protocols,), positional={"table": "table"}),
    # _cli/images.py belongs to the images workflow (issue 11, item 4); its names are checked here
    # and its two departures from the rule are stated, not changed.
    Command(("images",), (harmonize_images,), positional={"manifest": "manifest"},
            flags={"check_harmonizable": "--no-harmonizability-check",
                   "ignore_columns": "--ignore-column"},  # _REPEATABLE
            omitted={"suffix": "outputs are NIfTI (.nii.gz)",
                     "base_dir": "relative manifest paths resolve against the manifest's folder",
                     "progress": _PROGRESS},
            defaults={"check_harmonizable": "the flag turns the check off (store_true)",
                      "target_fwhm": "None stands for the API's 'coarsest'; the flag also "
                                     "takes 'coarsest', 'none' or numbers"}),
    Command(("combat", "fit"),
            (ComBat, CovBat, LongitudinalComBat, ComBat.fit, LongitudinalComBat.fit),
            positional={"X": "features"},
            flags={"covariates": "--covariate"},  # _REPEATABLE
            omitted={"y": _Y,
                     "smooth_bounds": "per-covariate (low, high) pairs; the command uses the "
                                      "data's range, the API default",
                     "biology": "a check of site x biology confounding only; imharmony diagnose "
                                "--biology runs it on the tables",
                     "acquisitions": "a table of MR acquisition parameters per sample (Python "
                                     "API; imharmony scan/audit check protocols on the command "
                                     "line)",
                     "mapping": "a fitted AcquisitionMapping object (Python API)"}),
    Command(("combat", "apply"), (ComBat.transform, LongitudinalComBat.transform),
            positional={"X": "features"},
            omitted={k: "read from the model file: combat fit records its columns"
                     for k in ("batch", "covariates", "subject")}),
    Command(("diagnose",), (diagnose,), positional={"before": "before", "after": "after"},
            flags={"covariates": "--covariate"},  # _REPEATABLE
            omitted={"thresholds": "a Thresholds object; the command uses the documented "
                                   "defaults, which the report and --json print",
                     "harmonizer": "a Python estimator refitted inside the folds (the command "
                                   "compares two tables)",
                     "harmonizer_covariates": "goes with harmonizer",
                     "phantom": "three phantom tables (reference, before, after): Python API"},
            defaults={"random_state": "the command is reproducible by default (seed 0); the "
                                      "API leaves None, as scikit-learn does"}),
    Command(("phantom", "nema"), (nema_recovery, earl_filter), positional={"img": "image"},
            defaults={"standard": "without --standard the command measures recovery only; "
                                  "earl_filter's default is EARL1"}),
    Command(("phantom", "calibrate"), (PhantomCalibration, PhantomCalibration.fit),
            positional={"table": "inserts"}, omitted={"y": _Y}),
    Command(("phantom", "apply"), (PhantomCalibration.transform,), positional={"X": "input"}),
    Command(("travelling", "fit"), (TravellingSubjects, TravellingSubjects.fit),
            positional={"X": "table"}, omitted={"y": _Y}),
    Command(("travelling", "apply"), (TravellingSubjects.transform,), positional={"X": "table"},
            omitted={"site": "read from the model file: travelling fit records the column"}),
    Command(("voxelwise", "fit"), (fit_voxelwise,), positional={"manifest": "manifest"},
            flags={"covariates": "--covariate",  # _REPEATABLE
                   "model_dir": "--model"},  # DESIGN.md's command line: --model DIR
            omitted={"progress": _PROGRESS}),
    Command(("voxelwise", "apply"), (apply_voxelwise,), positional={"manifest": "manifest"},
            flags={"model_dir": "--model"},  # DESIGN.md's command line: --model DIR
            omitted={"progress": _PROGRESS}),
    Command(("demo",), (run_demo,),
            flags={"output_dir": "--output"},  # DESIGN.md's command line: demo [--output DIR]
            omitted={"prevalence": "the scenario: the disease's prevalence differs by site on "
                                   "purpose",
                     "fine_shape": "the anatomy's resolution; --quick picks a coarser one",
                     "spacing": "the anatomy's voxel size, part of the scenario",
                     "n_permutations": "--quick lowers it; otherwise the diagnostics' default",
                     "max_features": "--quick sets 0 (no mixed models); otherwise all",
                     "write_reports": "the reports are what the command is for",
                     "progress": _PROGRESS},
            defaults={"output_dir": "required in the API; the command writes ./demo-output"}),
)


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _keywords(api: tuple[Callable[..., Any], ...]) -> dict[str, inspect.Parameter]:
    out: dict[str, inspect.Parameter] = {}
    for func in api:
        for name, param in inspect.signature(func).parameters.items():
            if name != "self" and param.kind is not param.VAR_POSITIONAL:
                out.setdefault(name, param)
    return out


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple) and not value)


def _same(shown: str, value: Any) -> bool:
    """Whether the default a help text states (``default 10``, ``default: yes``) is ``value``."""
    if isinstance(value, bool):
        return shown == ("yes" if value else "no")
    if isinstance(value, tuple) and len(set(value)) == 1:
        value = value[0]  # one number for every site
    try:
        return float(shown) == float(value)
    except (TypeError, ValueError):
        return shown == str(value)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_api_keyword_has_its_flag_with_the_api_default(command: Command) -> None:
    parser = _subparser(command.path)
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    positional = {a.dest: a for a in parser._actions if not a.option_strings}
    keywords = _keywords(command.api)
    listed = {**command.positional, **command.flags, **command.omitted, **command.defaults}
    stale = sorted(set(listed) - set(keywords))
    assert not stale, f"{command.name}: the maps name keywords the API does not have: {stale}"
    problems: list[str] = []
    for name, param in keywords.items():
        flag = command.flags.get(name, "--" + name.replace("_", "-"))
        if name in command.omitted:
            assert command.omitted[name].strip()
            if flag in by_flag:
                problems.append(f"{name}: listed as omitted but {flag} exists")
            continue
        if param.kind is param.VAR_KEYWORD:
            problems.append(f"**{name}: list it in omitted, with the reason")
            continue
        if name in command.positional:
            if command.positional[name] not in positional:
                problems.append(f"{name}: no positional argument {command.positional[name]}")
            continue
        action = by_flag.get(flag)
        if action is None:
            problems.append(f"{name}: no flag {flag} (add it, or list {name!r} in omitted)")
            continue
        api_default = param.default
        if name in command.defaults:
            if action.default == api_default:
                problems.append(f"{name}: same default after all; drop it from defaults")
            continue
        if api_default is param.empty or action.default is argparse.SUPPRESS:
            continue  # required in the API, or not passed unless given (the API's default)
        if not (action.default == api_default or (_empty(action.default)
                                                  and _empty(api_default))):
            problems.append(f"{flag}: default {action.default!r}, the API's is {api_default!r}")
        stated = re.search(r"\(default:? ([^;:),]+)[;:),]", action.help or "")
        if stated and api_default is not None and not _same(stated.group(1), api_default):
            problems.append(f"{flag}: help says default {stated.group(1)!r}, the API's is "
                            f"{api_default!r}")
    assert not problems, f"imharmony {command.name}:\n  " + "\n  ".join(problems)


def test_help_defaults_of_options_left_to_the_api_are_the_apis() -> None:
    """Options defaulting to SUPPRESS may say the API's default in their help: it must be so."""
    checked = 0
    for command in COMMANDS:
        parser = _subparser(command.path)
        keywords = _keywords(command.api)
        for action in parser._actions:
            if action.default is not argparse.SUPPRESS or not action.option_strings:
                continue
            name = action.dest
            stated = re.search(r"\(default:? ([^;:),]+)[;:),]", action.help or "")
            if name not in keywords or not stated or action.help == argparse.SUPPRESS:
                continue
            assert _same(stated.group(1), keywords[name].default), (command.name, name)
            checked += 1
    assert checked >= 10  # --tol, --max-iter, --smooth-df, --percent-var, --n-iter, ...


@pytest.mark.parametrize(("path", "flag", "choices"), [
    (("diagnose",), "--biology-type", BIOLOGY_TYPES),
    (("travelling", "fit"), "--scale", TRAVELLING_SCALES),
    (("combat", "fit"), "--random", LONGITUDINAL_RANDOM),
    (("combat", "fit"), "--sigma", LONGITUDINAL_SIGMA),
    (("phantom", "nema"), "--standard", tuple(s.lower() for s in EARL_STANDARDS)),
    (("phantom", "nema"), "--units", UNITS),
    (("convert",), "--units", UNITS),
    (("convert",), "--dtype", DTYPES),
])
def test_choices_are_the_librarys(path: tuple[str, ...], flag: str,
                                  choices: tuple[str, ...]) -> None:
    parser = _subparser(path)
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert tuple(action.choices) == choices


_REQUIRED = {
    ("diagnose",): ["B.csv", "A.csv", "--batch", "site", "--biology", "d", "--output", "r.html"],
    ("phantom", "calibrate"): ["I.csv", "--site", "s", "--reference", "r", "--measured", "m",
                               "--model", "m.json"],
    ("demo",): [],
}


@pytest.mark.parametrize(("path", "former", "dest", "value", "new"), [
    (("diagnose",), ["--folds", "3"], "n_splits", 3, "--n-splits"),
    (("diagnose",), ["--permutations", "9"], "n_permutations", 9, "--n-permutations"),
    (("phantom", "calibrate"), ["--unweighted"], "weighted", False, "--no-weighted"),
    (("demo",), ["--seed", "3"], "random_state", 3, "--random-state"),
    (("demo",), ["--subjects-per-site", "8"], "n_per_site", 8, "--n-per-site"),
])
def test_former_flags_still_work_and_name_the_new_one(
    path: tuple[str, ...], former: list[str], dest: str, value: Any, new: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv = [*path, *_REQUIRED[path], *former]
    with pytest.warns(DeprecationWarning, match=f"{former[0]} is deprecated; use {new}$"):
        args = cli.build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert f"{former[0]} is deprecated; use {new}" in caplog.text  # what a user sees
    # the new name gives the same value, silently; the former one is not in --help
    new_argv = [*path, *_REQUIRED[path], new, *former[1:]]
    assert getattr(cli.build_parser().parse_args(new_argv), dest) == value
    assert former[0] not in _subparser(path).format_help()


def _table(path: Path) -> Path:
    rows = ["site,d,f1,f2"] + [f"{'ab'[i % 2]},{i % 3},{i * 1.5 + (i % 2)},{(i * 7) % 5}"
                               for i in range(12)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_diagnose_passes_the_new_options_to_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imharmony.diagnostics.verdict as verdict

    class Called(Exception):
        pass

    def spy(*args: Any, **kwargs: Any) -> None:
        raise Called(kwargs)

    monkeypatch.setattr(verdict, "diagnose", spy)
    table = _table(tmp_path / "t.csv")
    args = cli.build_parser().parse_args(
        ["diagnose", str(table), str(table), "--batch", "site", "--biology", "d", "--output",
         str(tmp_path / "r.html"), "--biology-type", "continuous", "--anderson", "--n-splits",
         "3", "--n-permutations", "0"])
    with pytest.raises(Called) as got:
        args.func(args)
    kwargs = got.value.args[0]
    assert (kwargs["biology_type"], kwargs["anderson"], kwargs["n_splits"],
            kwargs["n_permutations"]) == ("continuous", True, 3, 0)


def test_combat_fit_passes_only_the_options_given(tmp_path: Path) -> None:
    table = _table(tmp_path / "t.csv")
    model = tmp_path / "m.json"
    assert cli.main(["-q", "combat", "fit", str(table), "--batch", "site", "--id", "d",
                     "--no-eb", "--tol", "0.001", "--model", str(model)]) == 0
    params = ComBat.load(model).get_params()
    assert (params["eb"], params["tol"]) == (False, 0.001)
    assert params["max_iter"] == inspect.signature(ComBat).parameters["max_iter"].default
    # CovBat's own options reach CovBat
    assert cli.main(["-q", "combat", "fit", str(table), "--batch", "site", "--id", "d",
                     "--method", "covbat", "--n-components", "1", "--no-standardize-scores",
                     "--model", str(model)]) == 0
    params = CovBat.load(model).get_params()
    assert (params["n_components"], params["standardize_scores"]) == (1, False)
    # an option of another method is refused, naming it
    assert cli.main(["-q", "combat", "fit", str(table), "--batch", "site", "--id", "d",
                     "--method", "covbat", "--sigma", "msr", "--model", str(model)]) == 2


def test_thresholds_defaults_are_the_single_measures_defaults() -> None:
    """A threshold has one name and one default, in diagnose's Thresholds and in each measure."""
    from imharmony.diagnostics.biology import fisher_preservation, mixed_effects
    from imharmony.diagnostics.site import site_tests
    from imharmony.diagnostics.verdict import Thresholds

    th = Thresholds()

    def default(func: Callable[..., Any], name: str) -> Any:
        return inspect.signature(func).parameters[name].default

    assert default(site_tests, "alpha") == th.alpha
    assert default(site_tests, "negligible_effect") == th.negligible_effect
    assert default(fisher_preservation, "alpha") == th.alpha
    assert default(fisher_preservation, "erased_below") == th.fisher_erased_below
    assert default(fisher_preservation, "inflated_above") == th.fisher_inflated_above
    assert default(mixed_effects, "alpha") == th.alpha
    assert default(mixed_effects, "kept") == th.shrinkage_kept
    assert default(mixed_effects, "se_inflated_below") == th.se_inflated_below
