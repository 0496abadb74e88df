"""The README's examples run as written (python blocks in order, then the sh block)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imharmony.io.images import read_image

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_opens_with_make_demo_and_make_test() -> None:
    first = blocks("sh")[0]
    assert first.splitlines()[0].startswith("make demo")
    assert first.splitlines()[1].startswith("make test")


def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(README.parent / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    code = "\n".join(blocks("python"))
    assert code
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "combat_model.json").is_file()


def test_command_line_examples_run(tmp_path: Path) -> None:
    # the command-line section (it writes the demo's output), then the images section's example
    runnable = [b for b in blocks("sh") if b.startswith(("imharmony demo", "imharmony images"))]
    assert [b.split()[1] for b in runnable] == ["images", "demo"]
    script = runnable[1] + runnable[0]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    for name in ("model.json", "harmonized.csv", "applied.csv", "report.html"):
        assert (tmp_path / name).is_file()
    assert len(list(tmp_path.glob("model.*.npz"))) == 1
    assert (tmp_path / "harmonized.csv").read_text() == (tmp_path / "applied.csv").read_text()
    summary = (tmp_path / "on-one-grid" / "summary.csv").read_text().splitlines()
    assert len(summary) > 2 and all(",done," in line for line in summary[1:])
    reference = read_image(tmp_path / "demo-output" / "images" / "raw" / "sub-0000.nii.gz")
    last = read_image(tmp_path / "on-one-grid" / f"{summary[-1].split(',')[0]}.nii.gz")
    assert last.same_grid(reference) and (tmp_path / "nyul.json").is_file()
