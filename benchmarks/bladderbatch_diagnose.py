"""The over-harmonization guard on public data: Bioconductor's ``bladderbatch``.

57 bladder samples (22,283 genes, RMA expression) in 5 processing batches: batches 1, 3 and 4
hold one class each (cancer; normal; biopsy), batches 2 and 5 mix cancer with normal or biopsy
(Dyrskjøt et al. 2004; the data set of Leek et al.'s ``sva`` vignette). The biology is cancer
vs not. The script runs the command line as a user would:

    imharmony combat fit   (without, then with the cancer label as a covariate)
    imharmony diagnose     (raw vs each harmonized table, --json)

and writes the verdicts to ``benchmarks/results/bladderbatch_diagnose.md``. The expected
answers (issue 9): without the label, site removed and biology erased; with it, site removed and
biology kept (or inflated, explained).

The data are not shipped. Give the table with ``--table PATH`` (columns ``sample``, ``batch``,
``cancer`` and one column per gene), or let the script export it with R (Debian:
``apt-get install r-bioc-bladderbatch``) into ``--workdir``.

Usage::

    python benchmarks/bladderbatch_diagnose.py [--table bladderbatch.csv] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from imharmony import cli

EXPORT_R = r"""
suppressMessages(library(bladderbatch))
data(bladderdata)
e <- exprs(bladderEset)
p <- pData(bladderEset)
out <- data.frame(sample = rownames(p), batch = p$batch, cancer = as.character(p$cancer),
                  t(e), check.names = FALSE)
write.csv(out, commandArgs(trailingOnly = TRUE)[1], row.names = FALSE)
cat(as.character(packageVersion("bladderbatch")))
"""

RESULTS = Path(__file__).resolve().parent / "results" / "bladderbatch_diagnose.md"


def export_with_r(path: Path) -> str:
    """Write the table with R's bladderbatch package; return the package version."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        sys.exit("Rscript not found: install R and r-bioc-bladderbatch, or pass --table.")
    script = path.with_suffix(".R")
    script.write_text(EXPORT_R)
    res = subprocess.run([rscript, str(script), str(path)], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        sys.exit(f"R export failed: {res.stderr.strip()[-500:]}")
    return res.stdout.strip()


def run(*args: str) -> float:
    start = time.perf_counter()
    status = cli.main(["-q", *args])
    if status != 0:
        sys.exit(f"imharmony {' '.join(args[:2])} exited with {status}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, help="bladderbatch as CSV (exported if absent)")
    parser.add_argument("--workdir", type=Path, default=Path("bladderbatch-work"))
    parser.add_argument("--max-features", default="100", help="mixed models (default 100)")
    parser.add_argument("--permutations", default="199", help="guided-PCA shuffles")
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    source = args.table
    if source is None:
        source = work / "bladderbatch.csv"
        if not source.is_file():
            export_with_r(source)
    version = _r_package_version()
    raw = pd.read_csv(source)
    raw.insert(3, "cancer_status", raw["cancer"].map(lambda c: "cancer" if c == "Cancer"
                                                      else "not cancer"))
    table = work / "bladder_raw.csv"
    raw.to_csv(table, index=False)
    counts = pd.crosstab(raw["batch"], raw["cancer"])

    rows = []
    for name, extra in (("without the label", []),
                        ("with the label as covariate", ["--covariate", "cancer_status"])):
        tag = "with" if extra else "without"
        model, out = work / f"model_{tag}.json", work / f"harmonized_{tag}.csv"
        t_fit = run("combat", "fit", str(table), "--batch", "batch", *extra, "--model",
                    str(model), "--output", str(out), "--json", str(work / f"fit_{tag}.json"))
        js = work / f"diagnose_{tag}.json"
        t_diag = run("diagnose", str(table), str(out), "--batch", "batch", "--biology",
                     "cancer_status", "--output", str(work / f"report_{tag}.html"), "--json",
                     str(js), "--max-features", args.max_features, "--n-permutations",
                     args.permutations, "--random-state", "0")
        doc = json.loads(js.read_text())
        rows.append((name, doc, t_fit, t_diag))
        print(f"{name}: {doc['verdicts']}")

    lines = [
        "# bladderbatch: the over-harmonization guard on public data",
        "",
        f"Data: Bioconductor `bladderbatch` ({version}), {len(raw)} samples x "
        f"{raw.shape[1] - 4} genes, 5 batches; biology = cancer vs not. Produced by "
        "`python benchmarks/bladderbatch_diagnose.py` (the data are exported by R, not "
        "shipped).",
        "",
        "Samples per batch and class:",
        "",
        counts.to_markdown() if hasattr(counts, "to_markdown") and _has_tabulate()
        else "```\n" + counts.to_string() + "\n```",
        "",
        "| ComBat | site effect | biology | features with a site effect (before -> after) | "
        "pooled Fisher | within-site Fisher | mixed-model coefficient | fit s | diagnose s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, doc, t_fit, t_diag in rows:
        st = doc["site_tests"]
        bio = doc["biology"]

        def ratio(key: str, bio: dict = bio) -> str:
            return (f"{bio[key]['ratio']:.2f} ({bio[key]['reading']})" if key in bio else "n/a")

        lines.append(
            f"| {name} | {doc['verdicts']['site effect']} | {doc['verdicts']['biology']} | "
            f"{st['before']['frac_site_effect']:.1%} -> {st['after']['frac_site_effect']:.1%} | "
            f"{ratio('pooled Fisher ratio')} | {ratio('within-site Fisher ratio')} | "
            f"{ratio('mixed-model coefficient')} | {t_fit:.1f} | {t_diag:.1f} |")
    lines += [
        "",
        f"Confounding of site and biology: {rows[0][1]['confounding']['biology_level']}; "
        f"single-class batches {rows[0][1]['confounding']['single_class_sites']}, mixed "
        f"{rows[0][1]['confounding']['mixed_sites']}.",
        "",
        "Ratios are after / before, medians over the genes with a biology signal; kept bands: "
        "Fisher 0.8-1.25, mixed-model coefficient 0.9-1.1.",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; timings are wall "
        "clock on a machine shared with other jobs.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print(f"written {RESULTS}")


def _r_package_version() -> str:
    """The installed R package's version, when R can say it (the table may come from it)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return "version unknown"
    res = subprocess.run([rscript, "-e", 'cat(as.character(packageVersion("bladderbatch")))'],
                         capture_output=True, text=True, check=False)
    return f"R package {res.stdout.strip()}" if res.returncode == 0 else "version unknown"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
