"""The ComBat benchmark still runs (quick smoke run) and its libraries still agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_combat.py"


def test_combat_benchmark_quick_run_agrees_with_neurocombat() -> None:
    res = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "non-parametric" in res.stdout and "FAIL" not in res.stdout
