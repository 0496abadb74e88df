"""``imharmony phantom``: calibration from phantom scans.

Each sub-command is added by its own ``_register_<name>`` function, listed in
:data:`_SUBCOMMANDS`; a new one is a new function and one more entry there.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .._vocabulary import EARL_STANDARDS
from ..io.dicom import UNITS
from .phantom_tables import add_apply, add_calibrate

__all__ = ["register", "run_nema"]

logger = logging.getLogger(__name__)


def _register_nema(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``phantom nema``."""
    p = sub.add_parser(
        "nema",
        help="NEMA IEC body phantom: recovery coefficients, FWHM, EARL filter",
        description=(
            "Find the six hot spheres of a NEMA IEC body phantom scan (any orientation), write "
            "their recovery coefficients (RCmax, RCmean of the A50 VOI, RCpeak of the 1 mL ball) "
            "and fit the scanner's effective FWHM. With --standard, also the compliance with the "
            "EARL bands and the Gaussian post-filter that meets them."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="phantom scan: NIfTI/NRRD/MHA or DICOM folder")
    p.add_argument("--background", type=float, required=True, metavar="B",
                   help="true background concentration at scan time, in the image's units")
    p.add_argument("--spheres", type=float, required=True, metavar="S",
                   help="true sphere concentration at scan time, in the image's units")
    p.add_argument("--units", default=None, choices=UNITS, metavar="UNITS",
                   help="value units when IMAGE is a DICOM series folder (as for 'convert': "
                   "bqml, suv, raw, ...; default: bqml, activity concentration in Bq/mL); "
                   "--background and --spheres are in them")
    p.add_argument("--standard", choices=[s.lower() for s in EARL_STANDARDS], type=str.lower,
                   default=None,
                   help="EARL standard to check and meet with a Gaussian post-filter")
    p.add_argument("--bands", metavar="BANDS.csv", default=None,
                   help="custom bands instead of a shipped standard (columns diameter_mm, "
                   "rc_mean_low, rc_mean_high, rc_max_low, rc_max_high), e.g. EARL2's")
    p.add_argument("--output", "-o", required=True, metavar="rc.csv",
                   help="per-sphere table (CSV)")
    p.add_argument("--json", dest="json_path", metavar="summary.json", default=None,
                   help="write the summary (fwhm_mm, filter_fwhm_mm, compliance) as JSON")
    p.add_argument("--filtered", metavar="OUT.nii.gz", default=None,
                   help="write the phantom after the EARL filter (needs --standard)")
    p.set_defaults(func=run_nema)


#: Sub-commands of ``phantom``, in the order ``imharmony phantom --help`` lists them.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _register_nema,
    add_calibrate,
    add_apply,
]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``phantom`` command and its sub-commands."""
    p = sub.add_parser("phantom", help="calibrate from phantom scans (NEMA/EARL PET, ...)")
    inner = p.add_subparsers(dest="phantom_command", metavar="SUBCOMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(inner)


def run_nema(args: argparse.Namespace) -> int:
    """Analyse the phantom and write the outputs; returns the exit status (0)."""
    import pandas as pd

    from ..calibration.earl import earl_filter
    from ..calibration.nema import nema_recovery
    from ..errors import HarmonizationError
    from ..io._atomic import atomic_path
    from ..io.images import read_image, write_image
    from ..io.tables import write_table

    if args.filtered and not (args.standard or args.bands):
        raise HarmonizationError("--filtered needs --standard or --bands: which filter?")
    bands = None
    if args.bands:
        from ..io.tables import read_table

        bands = read_table(args.bands)
        bands.attrs["standard"] = (args.standard or "custom").upper()
        bands.attrs["source"] = f"bands from {args.bands}"
    units = args.units or ("bqml" if Path(args.image).is_dir() else None)
    dicom_options = {"units": units} if units else {}
    img = read_image(args.image, **dicom_options)
    cols = ["diameter_mm", "rc_max", "rc_mean", "rc_peak"]
    if args.standard or bands is not None:
        result = earl_filter(img, background=args.background, spheres=args.spheres,
                             standard=(args.standard or EARL_STANDARDS[0]).upper(), bands=bands)
        rec = result.recovery
        before = result.before.set_index("diameter_mm")
        after = result.after.set_index("diameter_mm")
        table = rec.table[cols].set_index("diameter_mm")
        for c in ("rc_max_low", "rc_max_high", "rc_mean_low", "rc_mean_high"):
            table[c] = before[c]
        table["compliant_before"] = before["compliant"]
        table["rc_max_after"] = after["rc_max"]
        table["rc_mean_after"] = after["rc_mean"]
        table["compliant_after"] = after["compliant"]
        table = table.reset_index()
        summary = result.summary()
    else:
        rec = nema_recovery(img, background=args.background, spheres=args.spheres)
        table = rec.table[cols]
        summary = {
            "fwhm_mm": rec.fwhm_mm,
            "filter_fwhm_mm": 0.0,
            "standard": None,
            "compliant_before": None,
            "compliant_after": None,
            "background_cv": rec.background_cv,
        }
    summary["fwhm_axes_mm"] = list(rec.fwhm_axes_mm)
    summary["background_mean"] = rec.background_mean
    summary["spheres"] = pd.DataFrame(table).to_dict(orient="records")
    if args.filtered:
        write_image(result.filtered, args.filtered, dtype="float32")
    write_table(table, args.output)
    if args.json_path:
        with atomic_path(args.json_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n", encoding="utf-8")
    logger.info(
        "FWHM %.2f mm; %s", rec.fwhm_mm,
        f"{summary['standard']} filter {summary['filter_fwhm_mm']:.2f} mm"
        if summary["standard"] else "no standard checked",
    )
    return 0
