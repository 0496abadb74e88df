"""Seeded, time-bounded fuzzing of DICOM headers: ``convert`` ends in a value or a
HarmonizationError (exit 2), never another exception; ``scan`` records the file and goes on;
and both accept or refuse each mutated file alike."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from _support import dicom
from imharmony._dicom.header import FileRejected, read_header
from imharmony.errors import HarmonizationError
from imharmony.io.dicom import read_dicom_series
from imharmony.protocols import scan_errors, scan_protocols

N_CASES = 60
BUDGET_S = 12.0


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orig")
    stored = np.random.default_rng(5).integers(0, 3000, size=(3, 4, 5)).astype(np.int16)
    paths = dicom.write_series(folder, stored, tags={"PixelPaddingValue": -2000})
    data = paths[1].read_bytes()
    pixel_at = data.rfind(b"\xe0\x7f\x10\x00")
    return [p.read_bytes() for p in paths], pixel_at


def _mutate(data: bytes, pixel_at: int, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # flip bytes in the header
        for at in rng.integers(132, pixel_at + 12, size=rng.integers(1, 6)):
            buf[at] = int(rng.integers(256))
    elif kind == 1:  # cut the file
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 2:  # replace a run of header bytes with digits, letters or dots
        at = int(rng.integers(132, pixel_at))
        run = rng.choice(list(b"0123456789.-+eE\\ AZ"), size=int(rng.integers(1, 12)))
        buf[at:at + len(run)] = bytes(run.tolist())
    else:  # insert or delete bytes in the header
        at = int(rng.integers(132, pixel_at))
        if rng.integers(2):
            buf[at:at] = rng.bytes(int(rng.integers(1, 9)))
        else:
            del buf[at:at + int(rng.integers(1, 9))]
    return bytes(buf)


def test_mutated_headers_never_escape_as_other_errors(tmp_path, original):
    files, pixel_at = original
    rng = np.random.default_rng(20261207)
    start = time.perf_counter()
    outcomes = {"read": 0, "refused": 0}
    for case in range(N_CASES):
        if time.perf_counter() - start > BUDGET_S:
            break
        folder = tmp_path / f"c{case}"
        folder.mkdir()
        for i, data in enumerate(files):
            (folder / f"IM_{i}.dcm").write_bytes(
                _mutate(data, pixel_at, rng) if i == 1 else data
            )
        try:
            img = read_dicom_series(folder)
        except HarmonizationError:
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1
            assert img.array.ndim >= 3
        table = scan_protocols(folder)  # never raises for a bad file
        errors = scan_errors(table)
        scan_reason = dict(zip(errors["path"].map(lambda p: Path(p).name), errors["reason"],
                               strict=True)).get("IM_1.dcm")
        try:
            read_header(folder / "IM_1.dcm", "IM_1.dcm")
        except FileRejected as exc:  # the one policy: scan refuses it for the same reason
            assert scan_reason == exc.reason, case
        else:  # accepted by the policy: scan keeps it unless a value it reports is corrupt
            assert scan_reason in (None, "unreadable"), case
    assert outcomes["read"] > 0 and outcomes["refused"] > 0, outcomes
