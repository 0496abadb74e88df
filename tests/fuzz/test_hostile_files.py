"""Fuzzing the promises on hostile files: tampered models, corrupt images, malformed tables.

Seeded (the same cases every run) and bounded: each test stops after its case count or its time
budget, whichever comes first. The promise checked is the same everywhere: bad input ends in an
``imharmony.HarmonizationError`` (exit 2 from the CLI, one line), never another exception, and
the input files are left untouched.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony._persist import _digest
from imharmony.cli import main
from imharmony.errors import HarmonizationError, ModelFileError

BUDGET_S = 2.5  # per test


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _random_json(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = int(rng.integers(0, 9 if depth < 2 else 6))
    if kind == 6:
        return [_random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if kind == 7:
        return {str(i): _random_json(rng, depth + 1) for i in range(int(rng.integers(0, 3)))}
    return [
        None, True, int(rng.integers(-(2**40), 2**40)), float(rng.normal() * 1e6),
        "x" * int(rng.integers(0, 5)), 10**30, None, None, [1.5, "a", None],
    ][kind]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    site = np.repeat(["a", "b", "c"], 12)
    X = pd.DataFrame(rng.normal(size=(36, 6)), columns=[f"f{i}" for i in range(6)])
    cov = pd.DataFrame({"age": rng.uniform(20, 80, 36), "sex": rng.choice(["F", "M"], 36)})
    folder = tmp_path_factory.mktemp("model")
    ih.ComBat(reference_batch="b").fit(X, batch=site, covariates=cov).save(folder / "m.json")
    return folder


def test_tampered_model_fields_end_in_model_file_errors(model_dir: Path, tmp_path: Path) -> None:
    """Random values in random fields, re-signed (a stranger's file) or not: always refused
    with ModelFileError (or loaded, when the change leaves a valid model), never another error."""
    good = json.loads((model_dir / "m.json").read_text())
    npz = next(model_dir.glob("m.*.npz"))
    (tmp_path / npz.name).write_bytes(npz.read_bytes())
    rng = np.random.default_rng(1)
    start, cases, refused = time.monotonic(), 0, 0
    while cases < 400 and time.monotonic() - start < BUDGET_S:
        doc = json.loads(json.dumps(good))
        content = doc["content"]
        field = str(rng.choice(sorted(content)))
        value = _random_json(rng)
        if isinstance(content[field], dict) and content[field] and rng.random() < 0.5:
            key = str(rng.choice(sorted(content[field])))
            content[field] = {**content[field], key: value}
        else:
            content[field] = value
        if rng.random() < 0.8:
            doc["checksums"][field] = _digest(content[field])
        path = tmp_path / "m.json"
        path.write_text(json.dumps(doc))
        try:
            ih.ComBat.load(path)
        except ModelFileError as exc:
            assert str(path) in str(exc)
            refused += 1
        cases += 1
    assert cases >= 50 and refused >= 0.8 * cases


def test_damaged_model_bytes_end_in_model_file_errors(model_dir: Path, tmp_path: Path) -> None:
    """Bit flips and truncations of the manifest and of the arrays file."""
    files = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    npz_name = next(n for n in files if n.endswith(".npz"))
    rng = np.random.default_rng(2)
    start, cases = time.monotonic(), 0
    while cases < 300 and time.monotonic() - start < BUDGET_S:
        for name, blob in files.items():
            (tmp_path / name).write_bytes(blob)
        target = "m.json" if rng.random() < 0.5 else npz_name
        blob = bytearray(files[target])
        if rng.random() < 0.3:
            blob = blob[: int(rng.integers(0, len(blob)))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                blob[int(rng.integers(0, len(blob)))] ^= int(rng.integers(1, 256))
        (tmp_path / target).write_bytes(bytes(blob))
        if bytes(blob) == files[target]:
            continue
        try:
            ih.ComBat.load(tmp_path / "m.json")
        except ModelFileError:
            pass
        else:  # a flip inside JSON whitespace is harmless; anything else must be caught
            assert target == "m.json"
            assert json.loads(bytes(blob)) == json.loads(files["m.json"])
        cases += 1
    assert cases >= 50


def test_zip_bomb_arrays_are_refused_from_their_sizes(model_dir: Path, tmp_path: Path) -> None:
    """A 'model' whose arrays file is a small compressed member declaring gigabytes."""
    doc = json.loads((model_dir / "m.json").read_text())
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in doc["arrays"]["entries"]:  # the right members, 2 MiB of zeros each
            zf.writestr(f"{member}.npy", b"\0" * (2 * 2**20))
    sha = hashlib.sha256(bomb.read_bytes()).hexdigest()
    name = f"m.{sha[:16]}.npz"
    bomb.rename(tmp_path / name)
    doc["arrays"] = {**doc["arrays"], "file": name, "sha256": sha,
                     "bytes": (tmp_path / name).stat().st_size}
    doc["checksums"]["<arrays>"] = _digest(doc["arrays"])
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="is compressed or oversized"):
        ih.ComBat.load(tmp_path / "m.json")


def test_hostile_json_shapes_end_in_model_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    for text in ["[" * 100_000, '{"a": 1e999999}', '{"format": NaN}', "1" * 5000, "\x00\xff",
                 '{"format": "imharmony.model", "envelope_version": 1, "kind": '
                 '"imharmony.combat", "kind_version": 2, "content": [], "checksums": {}}']:
        path.write_text(text, encoding="latin-1")
        with pytest.raises(ModelFileError):
            ih.ComBat.load(path)
        with pytest.raises(ModelFileError):
            ih.HistogramStandardizer.load(path)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_corrupt_and_truncated_images(tmp_path: Path, suffix: str) -> None:
    """Truncations and byte flips: an Image with the header's shape, or a HarmonizationError."""
    rng = np.random.default_rng(3)
    arr = rng.normal(size=(12, 10, 8)).astype(np.float32)
    good = ih.write_image(ih.Image(arr, spacing=(1.0, 1.5, 2.0)), tmp_path / f"good{suffix}")
    blob = good.read_bytes()
    start, cases, refused = time.monotonic(), 0, 0
    while cases < 60 and time.monotonic() - start < BUDGET_S:
        bad = bytearray(blob)
        if cases % 2 == 0:
            bad = bad[: int(rng.integers(0, len(bad) - 1))]
        else:
            for _ in range(int(rng.integers(1, 6))):
                bad[int(rng.integers(0, min(len(bad), 400)))] ^= int(rng.integers(1, 256))
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(bytes(bad))
        try:
            img = ih.read_image(path)
        except HarmonizationError:
            refused += 1
        else:
            assert cases % 2 == 1  # every truncation is refused
            assert img.array.size > 0
        cases += 1
    assert refused >= cases // 2


# ---------------------------------------------------------------- tables through the CLI


def test_malformed_tables_exit_2_with_one_line_and_leave_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    site = np.repeat(["a", "b"], 10)
    df = pd.DataFrame(rng.normal(size=(20, 4)), columns=list("wxyz"))
    df.insert(0, "site", site)
    text = df.to_csv(index=False)
    mutations = [
        lambda t: t[: int(rng.integers(0, len(t)))],
        lambda t: t.replace(",", ";", int(rng.integers(1, 5))),
        lambda t: t.replace("\n", "\n,,", 1),
        lambda t: t + '"unclosed,' + "\n",
        lambda t: t.replace("a,", "inf,", 3),
        lambda t: "\ufeff" + t.replace("site", "", 1),
        lambda t: "".join(chr(int(c)) for c in rng.integers(0, 256, 200)),
        lambda t: t.replace(t.splitlines()[1], "1e999," * 5, 1),
    ]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(24):
        table = inputs / f"t{k}.csv"
        table.write_text(mutations[k % len(mutations)](text), encoding="utf-8",
                         errors="surrogatepass")
    before = _digests(inputs)
    start = time.monotonic()
    for k in range(24):
        if time.monotonic() - start > BUDGET_S * 2:
            break
        model = tmp_path / f"m{k}.json"
        status = main(["-q", "combat", "fit", str(inputs / f"t{k}.csv"), "--batch", "site",
                       "--model", str(model)])
        err = capsys.readouterr().err
        assert status in (0, 2), err
        if status == 2:
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            assert not model.exists()
    assert _digests(inputs) == before
    assert not [p for p in tmp_path.rglob(".*") if ".part" in p.name]
