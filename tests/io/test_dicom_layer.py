"""The one DICOM layer: ``scan`` and ``convert`` accept and refuse the same files, other series
never block the chosen one, and hostile DICOM contents are refused with their reason."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest

from _support import dicom
from imharmony import cli
from imharmony._dicom.header import FileRejected, read_header
from imharmony.io.dicom import DicomError, read_dicom_series
from imharmony.physics.mr import MRScalingError
from imharmony.protocols import scan_errors, scan_protocols

RNG = np.random.default_rng(2026)


def _stored(n=3, rows=4, cols=5):
    return RNG.integers(0, 3000, size=(n, rows, cols)).astype(np.int16)


def _meta_end(data: bytes) -> int:
    """Offset of the first data set element after the file meta group of a Part 10 file."""
    assert data[128:132] == b"DICM"
    (group_length,) = struct.unpack("<L", data[140:144])  # (0002,0000) UL, explicit VR
    return 144 + group_length


def _rgb(path: Path, series_uid: str) -> None:
    stored = _stored(n=1)
    rows, cols = stored.shape[1:]
    dicom.write_instance(path, stored, series_uid=series_uid, tags={
        "SamplesPerPixel": 3, "PhotometricInterpretation": "RGB", "PlanarConfiguration": 0,
        "BitsAllocated": 8, "BitsStored": 8, "HighBit": 7, "PixelRepresentation": 0,
        "PixelData": bytes(rows * cols * 3)})


def _one_bit(path: Path, series_uid: str) -> None:
    stored = _stored(n=1)
    n = math.ceil(stored.shape[1] * stored.shape[2] / 8)
    dicom.write_instance(path, stored, series_uid=series_uid, tags={
        "BitsAllocated": 1, "BitsStored": 1, "HighBit": 0, "PixelRepresentation": 0,
        "PixelData": bytes(n + n % 2)})


@pytest.fixture
def mixed(tmp_path):
    """A folder with one good CT series (two of its files without preamble) and hostile others."""
    root = tmp_path / "in"
    stored = _stored(n=4)
    paths = dicom.write_series(root, stored, series_uid="1.2.3.1")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[132:])  # no preamble, file meta kept
    implicit = dicom.write_series(
        tmp_path / "implicit", stored[2:3], series_uid="1.2.3.1",
        transfer_syntax=pydicom.uid.ImplicitVRLittleEndian,
        positions=[[-100.0, -120.0, 35.0]],
    )[0].read_bytes()
    paths[2].write_bytes(implicit[_meta_end(implicit):])  # a bare implicit VR data set
    other = dicom.write_series(tmp_path / "o", _stored(n=2), series_uid="1.2.3.2")
    cut = root / "other_cut.dcm"
    cut.write_bytes(other[0].read_bytes()[:-7])  # another series, cut in its pixels
    big = dicom.write_series(tmp_path / "b", _stored(n=1), series_uid="1.2.3.3",
                           tags={"NumberOfFrames": 10**6})[0]
    (root / "other_big.dcm").write_bytes(big.read_bytes())
    _rgb(root / "other_rgb.dcm", "1.2.3.4")
    _one_bit(root / "other_1bit.dcm", "1.2.3.5")
    (root / "notes.txt").write_text("not an image\n")
    return root, stored


def test_scan_and_convert_accept_and_refuse_the_same_files(mixed):
    root, stored = mixed
    table = scan_protocols(root, max_pixels=2**20)
    errors = scan_errors(table)
    refused = {Path(p).name: r for p, r in zip(errors["path"], errors["reason"], strict=True)}
    assert refused == {
        "other_cut.dcm": "truncated", "other_big.dcm": "too_large", "notes.txt": "not_dicom",
    }
    assert sorted(table["series_uid"]) == ["1.2.3.1", "1.2.3.4", "1.2.3.5"]
    assert table.set_index("series_uid").loc["1.2.3.1", "n_files"] == 4

    # The same policy, file by file, through the reader convert uses.
    for path in sorted(root.iterdir()):
        try:
            read_header(path, path.name, max_pixels=2**20)
        except FileRejected as exc:
            assert refused[path.name] == exc.reason
        else:
            assert path.name not in refused

    img = read_dicom_series(root, series_uid="1.2.3.1", max_pixels=2**20)
    assert sorted(img.meta["files"]) == ["IM_0000.dcm", "IM_0001.dcm", "IM_0002.dcm",
                                          "IM_0003.dcm"]
    np.testing.assert_array_equal(img.array, (stored.astype(float) - 1024).transpose(2, 1, 0))


def test_a_file_of_another_series_never_blocks_the_chosen_one(mixed, caplog):
    root, _ = mixed
    with caplog.at_level("WARNING", logger="imharmony.io.dicom"):
        img = read_dicom_series(root, series_uid="1.2.3.1", max_pixels=2**20)
    assert img.shape == (5, 4, 4)
    assert "other_cut.dcm: skipped, a file of another series" in caplog.text
    # The RGB and 1-bit series themselves are refused with the reason when chosen.
    with pytest.raises(DicomError, match=r"other_rgb.dcm: Samples per Pixel \(0028,0002\) is 3"):
        read_dicom_series(root, series_uid="1.2.3.4", max_pixels=2**20)
    with pytest.raises(DicomError, match=r"other_1bit.dcm: Bits Allocated \(0028,0100\) is 1"):
        read_dicom_series(root, series_uid="1.2.3.5", max_pixels=2**20)
    # A damaged file of the chosen series is the reason it cannot be read.
    with pytest.raises(DicomError, match=r"other_cut.dcm: file truncated"):
        read_dicom_series(root, series_uid="1.2.3.2", max_pixels=2**20)


# --------------------------------------------------------------------------------------------
# Hostile contents: refused with the reason (exit 2 on the command line), never misread
# --------------------------------------------------------------------------------------------


def _patch(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def _implicit_syntax_on_explicit_data(path: Path) -> None:
    _patch(path, b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2\0\0\0")


def _empty_syntax(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<HH", 0x0002, 0x0010) + b"UI")
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    data[at + 8:at + 8 + length] = b"\0" * length
    path.write_bytes(bytes(data))


def _pixels_too_long(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData + bytes(2 * ds.Columns)  # one row more than Rows says
    ds.save_as(path)


def _tag(keyword: str, value: str):
    def edit(path: Path) -> None:
        ds = pydicom.dcmread(path)
        with pydicom.config.disable_value_validation():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return edit


def _null_in_character_set(path: Path) -> None:
    _tag("SpecificCharacterSet", "ISO_IR 100")(path)
    _patch(path, b"ISO_IR 100", b"ISO_IR\x00100")


HOSTILE = {
    "implicit_syntax_on_explicit_data": (
        _implicit_syntax_on_explicit_data, "invalid_value",
        r"says implicit VR but the data set is encoded with explicit VR"),
    "empty_transfer_syntax": (
        _empty_syntax, "invalid_value", r"Transfer Syntax UID \(0002,0010\) is empty"),
    "pixel_data_longer_than_rows_x_columns": (
        _pixels_too_long, "invalid_value", r"Pixel Data \(7FE0,0010\) holds 50 bytes but .* "
        r"need 40"),
    "intercept_1e308": (_tag("RescaleIntercept", "1e308"), None,
                        r"Rescale Intercept \(0028,1052\) is \[1e\+308\].*float32 range"),
    "spacing_1e308": (_tag("PixelSpacing", "1e308\\0.7"), None,
                      r"Pixel Spacing \(0028,0030\) is \[1e\+308, 0.7\].*float32 range"),
    "undefined_value_representation": (  # Manufacturer (0008,0070) LO -> "LG"
        lambda p: _patch(p, b"\x08\x00\x70\x00LO", b"\x08\x00\x70\x00LG"), "unreadable",
        r"element \(0008,0070\) has the Value Representation 'LG', which DICOM does not define"),
    "character_set_with_a_null": (  # the quick framing path gives dcmread's verdict too
        _null_in_character_set, "unreadable",
        r"header cannot be parsed \(ValueError: embedded null character\)"),
    "corrupt_spacing": (lambda p: _patch(p, b"0.8\\0.7", b"0.8\\a.7"), None,
                        r"Pixel Spacing \(0028,0030\) is .*not numbers"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_dicom_contents_exit_2_with_the_reason(tmp_path, kind, capsys):
    mutate, reason, message = HOSTILE[kind]
    paths = dicom.write_series(tmp_path / "in", _stored(n=3))
    mutate(paths[1])
    out = tmp_path / "out.nii.gz"
    assert cli.main(["convert", str(tmp_path / "in"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "IM_0001.dcm" in err
    # one error line; log records (pydicom's warnings among them) also go to stderr
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("INFO", "WARNING", " "))]
    assert len(lines) == 1, err
    import re

    assert re.search(message, err), err
    assert not out.exists()
    table = scan_protocols(tmp_path / "in")
    errors = scan_errors(table)
    if reason is None:  # a value problem: the header is accepted, the series cannot be converted
        assert errors.empty
    else:
        assert list(errors["reason"]) == [reason]
        assert Path(errors["path"].iloc[0]).name == "IM_0001.dcm"


# --------------------------------------------------------------------------------------------
# Compressed transfer syntaxes (decoded by pylibjpeg and its plugins, regular dependencies)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_lossless_compressed_files_give_the_uncompressed_values(tmp_path, name):
    from pydicom.data import get_testdata_file

    for file in ("MR_small.dcm", name):
        (tmp_path / file).mkdir()
        (tmp_path / file / file).write_bytes(Path(get_testdata_file(file)).read_bytes())
    plain = read_dicom_series(tmp_path / "MR_small.dcm", "raw")
    packed = read_dicom_series(tmp_path / name, "raw")
    assert packed.shape == plain.shape == (64, 64, 1)
    assert float(plain.array.std()) > 100  # a real image, not a blank
    np.testing.assert_array_equal(packed.array, plain.array)
    assert packed.origin == plain.origin


# --------------------------------------------------------------------------------------------
# MR units: Rescale Slope/Intercept applied, and Philips floating-point values
# --------------------------------------------------------------------------------------------

PHILIPS_SS = (0x2005, "Philips MR Imaging DD 001", 0x0E)


def test_mr_units_apply_the_rescale_and_the_philips_scale_slope(tmp_path, capsys):
    stored = RNG.integers(0, 4000, size=(3, 4, 5)).astype(np.uint16)
    slopes, scale_slopes = [2.5, 1.25, 0.1], [0.4, 0.2, 1.5]
    dicom.write_series(
        tmp_path / "in", stored, modality="MR",
        tags={"Manufacturer": "Philips Medical Systems", "RescaleIntercept": "-3"},
        per_instance=[
            {"RescaleSlope": str(rs), PHILIPS_SS: ("FL", ss)}
            for rs, ss in zip(slopes, scale_slopes, strict=True)
        ],
    )
    sv = stored.astype(float)
    raw = read_dicom_series(tmp_path / "in")  # MR default: stored values
    np.testing.assert_array_equal(raw.array, sv.transpose(2, 1, 0))
    rescaled = read_dicom_series(tmp_path / "in", "rescaled")
    rs, ss = np.array(slopes)[:, None, None], np.array(scale_slopes, np.float32)[:, None, None]
    np.testing.assert_allclose(rescaled.array, (rs * sv - 3).transpose(2, 1, 0), rtol=1e-12)
    fp = read_dicom_series(tmp_path / "in", "philips_fp")
    np.testing.assert_allclose(
        fp.array, ((rs * sv - 3) / (rs * ss)).transpose(2, 1, 0), rtol=1e-12
    )
    assert fp.meta["units"] == "philips_fp"
    out = tmp_path / "fp.nii.gz"
    assert cli.main(["convert", str(tmp_path / "in"), "-o", str(out), "--units", "philips_fp"]) == 0


def test_philips_units_without_the_private_scale_slope_are_refused(tmp_path):
    dicom.write_series(tmp_path, _stored(n=2).astype(np.uint16), modality="MR",
                     tags={"RescaleSlope": "2"})
    with pytest.raises(MRScalingError, match=r"IM_0000.dcm: no Philips Scale Slope \(2005,xx0E\)"):
        read_dicom_series(tmp_path, "philips_fp")
