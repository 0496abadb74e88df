"""The calibration models on the project's one model envelope (imharmony._persist).

PhantomCalibration, TravellingSubjects and AcquisitionMapping save and load through
HarmonizerMixin like ComBat: one manifest with a checksum per field, the arrays' digest in the
``.npz`` name, no pickle. Tampered files (even re-signed by a stranger) end in ModelFileError,
and on the command line in exit 2 with one line and nothing written.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony._persist import _digest
from imharmony.calibration.cohorts import make_travelling_study
from imharmony.cli import main
from imharmony.errors import ModelFileError

T1 = {"RepetitionTime": 2300, "EchoTime": 2.98}
T2 = {"RepetitionTime": 3200, "EchoTime": 409}


def _phantom(tmp_path: Path) -> tuple[Any, Path]:
    rows = [{"site": s, "ref": v, "hu": o + g * v + e}
            for s, g, o in (("A", 1.0, 3.0), ("B", 1.05, -20.0))
            for v, e in ((-1000.0, 0.4), (0.0, -0.3), (120.0, 0.2), (700.0, -0.1))]
    model = ih.PhantomCalibration().fit(pd.DataFrame(rows), site="site", reference="ref",
                                        measured="hu")
    return model, model.save(tmp_path / "cal.json", metadata={"site_column": "site"})


def _travelling(tmp_path: Path) -> tuple[Any, Path]:
    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=3, random_state=3)
    feats = ["f000", "f001", "f002"]
    t = study.travellers
    model = ih.TravellingSubjects(scale="linear", reference_site="site1").fit(
        t[feats], site=t["site"], subject=t["subject"])
    return model, model.save(tmp_path / "ts.json", metadata={"site_column": "site"})


def _mapping(tmp_path: Path, method: str = "monotone") -> tuple[Any, Path]:
    rng = np.random.default_rng(0)
    src = pd.DataFrame(rng.normal(size=(20, 3)), columns=["a", "b", "c"])
    tgt = 2.0 * src + 1.0 + rng.normal(0, 0.1, src.shape)
    model = ih.AcquisitionMapping(method=method, random_state=0).fit(src, tgt, source=T2,
                                                                       target=T1)
    return model, model.save(tmp_path / "map.json")


MAKERS = {"phantom": _phantom, "travelling": _travelling, "mapping": _mapping}


@pytest.mark.parametrize("which", sorted(MAKERS))
def test_saved_in_the_one_envelope(which: str, tmp_path: Path) -> None:
    model, path = MAKERS[which](tmp_path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "imharmony.model" and doc["kind"] == model._model_kind
    assert doc["kind_version"] == 2 and set(doc["checksums"]) >= set(doc["content"])
    (npz,) = tmp_path.glob(f"{path.stem}.*.npz")
    assert npz.name == doc["arrays"]["file"]
    assert hashlib.sha256(npz.read_bytes()).hexdigest() == doc["arrays"]["sha256"]
    back = type(model).load(path)
    assert back.get_params() == model.get_params()
    assert back.metadata_ == ({} if which == "mapping" else {"site_column": "site"})


def test_round_trips_give_the_same_numbers(tmp_path: Path) -> None:
    cal, p = _phantom(tmp_path)
    back = ih.PhantomCalibration.load(p)
    x = np.array([[-500.0], [0.0], [300.0]])
    np.testing.assert_array_equal(back.transform(x, site="B"), cal.transform(x, site="B"))
    labels_as_text = cal.residuals_.astype({"site": str, "insert": str})
    pd.testing.assert_frame_equal(back.residuals_, labels_as_text, check_dtype=False)
    ts, p = _travelling(tmp_path)
    back = ih.TravellingSubjects.load(p)
    X = np.ones((3, 3))
    np.testing.assert_array_equal(back.transform(X, site=["site0", "site1", "site2"]),
                                  ts.transform(X, site=["site0", "site1", "site2"]))
    assert back.reference_index_ == 1 and back.n_travellers_ == ts.n_travellers_
    for method in ("linear", "monotone"):
        m, p = _mapping(tmp_path, method)
        back = ih.AcquisitionMapping.load(p)
        src = pd.DataFrame(np.linspace(-2, 2, 9).reshape(3, 3), columns=["a", "b", "c"])
        pd.testing.assert_frame_equal(back.transform(src), m.transform(src))


def test_a_random_state_object_is_saved_as_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = pd.DataFrame(rng.normal(size=(12, 2)), columns=["a", "b"])
    m = ih.AcquisitionMapping(random_state=np.random.RandomState(5)).fit(
        src, src * 3, source=T2, target=T1)
    assert ih.AcquisitionMapping.load(m.save(tmp_path / "m.json")).random_state is None


@pytest.mark.parametrize("which", sorted(MAKERS))
def test_tampered_fields_are_refused(which: str, tmp_path: Path) -> None:
    """Every content field replaced by a wrong-typed value, re-signed as a stranger would:
    ModelFileError naming the file, never another exception; unsigned: the checksum says so."""
    model, path = MAKERS[which](tmp_path)
    good = json.loads(path.read_text())
    junk = [None, -1, "x", [1.5, "a"], {"k": []}, [[]], 10**30]
    refused = 0
    for field in sorted(good["content"]):
        for value in junk:
            doc = json.loads(json.dumps(good))
            if doc["content"][field] == value:
                continue
            doc["content"][field] = value
            doc["checksums"][field] = _digest(value)
            path.write_text(json.dumps(doc))
            try:
                type(model).load(path)
            except ModelFileError as exc:
                assert str(path) in str(exc)
                refused += 1
    assert refused >= 5 * len(good["content"])
    doc = json.loads(json.dumps(good))
    doc["content"]["metadata"] = {"site_column": "elsewhere"}
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="'metadata' do not match their checksum"):
        type(model).load(path)


def test_a_tampered_model_exits_2_on_the_command_line(tmp_path: Path, capsys) -> None:
    study = make_travelling_study(n_sites=3, n_travellers=6, n_features=2, random_state=12)
    ts, cohort = tmp_path / "ts.csv", tmp_path / "cohort.csv"
    study.travellers.to_csv(ts, index=False)
    study.cohort.to_csv(cohort, index=False)
    model = tmp_path / "m.json"
    assert main(["-q", "travelling", "fit", str(ts), "--site", "site", "--subject", "subject",
                 "--model", str(model)]) == 0
    doc = json.loads(model.read_text())
    doc["content"]["sites"] = ["site0", "site1", "mars"]  # edited, not re-signed
    model.write_text(json.dumps(doc))
    before = model.read_bytes()
    out = tmp_path / "h.csv"
    capsys.readouterr()
    assert main(["-q", "travelling", "apply", str(cohort), "--model", str(model),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checksum" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and model.read_bytes() == before

    _, cal = _phantom(tmp_path)
    (npz,) = tmp_path.glob("cal.*.npz")
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one byte of the arrays flipped
    npz.write_bytes(bytes(blob))
    table = tmp_path / "t.csv"
    pd.DataFrame({"site": ["A", "B"], "hu": [10.0, 20.0]}).to_csv(table, index=False)
    assert main(["-q", "phantom", "apply", str(table), "--model", str(cal),
                 "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "checksum" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()


def test_a_model_of_the_previous_calibration_format_is_refused(tmp_path: Path) -> None:
    """Before the shared envelope the calibration models had their own JSON layout; loading
    one says to re-fit (no release carried it)."""
    old = {"format": "imharmony.travelling_subjects", "format_version": 1, "params": {},
           "state": {}, "arrays": {"file": "ts.npz", "sha256": "0" * 64}, "metadata": {}}
    (tmp_path / "ts.json").write_text(json.dumps(old))
    with pytest.raises(ModelFileError, match=r"older imharmony.*re-fit"):
        ih.TravellingSubjects.load(tmp_path / "ts.json")
