"""``imharmony combat fit`` / ``apply`` on wide tables (issue 10: 40 x 100,000 took 237 s).

Writes a table of ``--samples`` rows x ``--features`` columns (two sites, an id column), then
runs the real command line in a child process and reports its wall time and CPU time (user +
system of the child, from ``resource.getrusage``). CPU time is the figure to compare on a
shared machine: wall time there includes waiting for the cores.

    python benchmarks/bench_wide_tables.py [--features 100000] [--samples 40]
        [--output benchmarks/results/wide_tables.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _run(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imharmony.cli", "-q", *args], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, p = args.samples, args.features
    site = np.repeat(["a", "b"], [n // 2, n - n // 2])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        df = pd.DataFrame(rng.normal(size=(n, p)) + (site == "b")[:, None],
                          columns=[f"v{i}" for i in range(p)])
        df.insert(0, "site", site)
        df.insert(0, "id", [f"s{i}" for i in range(n)])
        table = folder / "wide.csv"
        df.to_csv(table, index=False)
        fit = _run(["combat", "fit", str(table), "--batch", "site", "--model",
                    str(folder / "m.json"), "--output", str(folder / "h.csv")])
        apply = _run(["combat", "apply", str(table), "--model", str(folder / "m.json"),
                      "--output", str(folder / "a.csv")])
        same = (folder / "h.csv").read_bytes() == (folder / "a.csv").read_bytes()
    load = os.getloadavg()[0]
    lines = [
        f"# combat on a wide table: {n} samples x {p} features",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the end (shared when above the core count).",
        "",
        "| step | wall (s) | CPU (s) |",
        "| --- | --- | --- |",
        f"| combat fit --output | {fit[0]:.1f} | {fit[1]:.1f} |",
        f"| combat apply | {apply[0]:.1f} | {apply[1]:.1f} |",
        "",
        f"fit's --output and apply's output identical: {same}.",
        "",
        "Before the fix (issue 10): fit 237 s, apply 139 s on 40 x 100,000.",
    ]
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
