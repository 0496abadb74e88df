"""Protocol scan speed on a 2,000-file collection, and proof that no pixel data is read (issue 3).

A collection of ``--n`` files (default 2,000: 20 series of 100 slices, CT and MR alternating, each
slice ``--size`` × ``--size`` 16-bit, default 512 × 512, explicit VR little endian) is written with
pydicom into a temporary folder. Then, in the same run:

1. ``imharmony.scan_protocols(folder)``: the whole scan (walk, header read, validation of every
   file, grouping into series), best of ``--repeat`` wall times → files/s;
2. the bytes the scan reads, counted by wrapping ``open`` in ``imharmony._dicom.header``:
   per file, against the file size: the header buffer (16 KiB from the start of the file) and
   the Pixel Data element header, never the rest of the pixel data;
3. baseline A: a bare loop of ``pydicom.dcmread(path, stop_before_pixels=True)`` (no validation,
   no grouping): the cost of imharmony's checks on top of pydicom's header parsing;
4. baseline B: ``pydicom.dcmread(path).pixel_array`` for every file: what reading the pixels
   costs, i.e. what a scan that touched pixels would pay at least.

Each measurement is made twice: with the files in the page cache (warm, best of ``--repeat``;
they were just written), and cold, after evicting every file from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` (after ``sync``; one run each). Cold, the scan reads a few
KiB per file from the device while the pixel loop reads every byte. The machine may be shared:
the ratios measured in one run are the meaningful numbers.

Usage::

    python benchmarks/bench_scan.py                               # prints a markdown report
    python benchmarks/bench_scan.py --output benchmarks/results/scan.md
    python benchmarks/bench_scan.py --n 200 --size 64             # quick smoke run
"""

from __future__ import annotations

import argparse
import builtins
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

import imharmony
import imharmony._dicom.header as dicom_header
import imharmony.protocols.scan as protocol


def write_collection(root: Path, n: int, size: int, per_series: int = 100) -> list[Path]:
    """``n`` files in series of ``per_series`` slices; CT and MR alternate by series."""
    pixels = (np.arange(size * size, dtype=np.uint16) % 4096).reshape(size, size).tobytes()
    paths = []
    n_series = (n + per_series - 1) // per_series
    for s in range(n_series):
        modality = "CT" if s % 2 == 0 else "MR"
        series_uid, study_uid = generate_uid(), generate_uid()
        folder = root / f"site{s % 4}" / f"series{s:03d}"
        folder.mkdir(parents=True)
        for k in range(min(per_series, n - s * per_series)):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            sop = CTImageStorage if modality == "CT" else MRImageStorage
            ds.file_meta.MediaStorageSOPClassUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = sop
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            ds.Modality = modality
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = s + 1
            ds.InstanceNumber = k + 1
            ds.Manufacturer = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA"][s % 4]
            ds.ManufacturerModelName = "Model"
            ds.InstitutionName = f"Hospital {s % 4}"
            ds.StationName = f"ST{s % 4}"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [0, 0, 1.25 * k]
            ds.PixelSpacing = [0.7, 0.7]
            ds.SliceThickness = 1.25
            if modality == "CT":
                ds.KVP = 120
                ds.ConvolutionKernel = ["B30f", "STANDARD", "B", "FC13"][s % 4]
                ds.Exposure = 200
                ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            else:
                ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
                ds.RepetitionTime, ds.EchoTime, ds.FlipAngle = 500, 12, 90
                ds.MagneticFieldStrength = 3
            ds.Rows = ds.Columns = size
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            ds.PixelRepresentation = 0
            ds.PixelData = pixels
            path = folder / f"IM{k:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def best_of(repeat: int, fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def evict(paths: list[Path]) -> bool:
    """Drop the files from the page cache; False where the platform cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def count_bytes_read(root: Path) -> tuple[int, object]:
    """Run one scan with ``open`` in the protocol module wrapped to count the bytes read."""
    total = {"bytes": 0}
    real_open = builtins.open

    class Counting:
        def __init__(self, fp):  # type: ignore[no-untyped-def]
            self._fp = fp

        def read(self, *args):  # type: ignore[no-untyped-def]
            data = self._fp.read(*args)
            total["bytes"] += len(data)
            return data

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self._fp, name)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self._fp.close()

    # Files are opened by the one DICOM header reader.
    dicom_header.open = lambda *a, **k: Counting(real_open(*a, **k))  # type: ignore[attr-defined]
    try:
        table = imharmony.protocols.scan_protocols(root)
    finally:
        del dicom_header.open  # type: ignore[attr-defined]
    return total["bytes"], table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of files (default 2000)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best of)")
    parser.add_argument("--output", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="imharmony-bench-scan-"))
    try:
        start = time.perf_counter()
        paths = write_collection(tmp, args.n, args.size)
        t_write = time.perf_counter() - start
        sizes = [p.stat().st_size for p in paths]
        mean_size = statistics.fmean(sizes)
        pixel_bytes = args.size * args.size * 2

        t_scan, table = best_of(args.repeat, lambda: protocol.scan_protocols(tmp))
        n_read, table2 = count_bytes_read(tmp)
        assert len(table) == len(table2) == (args.n + 99) // 100, len(table)
        assert protocol.scan_errors(table).empty
        assert int(table["n_instances"].sum()) == args.n

        def headers_only() -> int:
            for p in paths:
                pydicom.dcmread(p, stop_before_pixels=True)
            return len(paths)

        def with_pixels() -> int:
            total = 0
            for p in paths:
                total += int(pydicom.dcmread(p).pixel_array.shape[0])
            return total

        t_headers, _ = best_of(args.repeat, headers_only)
        t_pixels, _ = best_of(1, with_pixels)
        cold: dict[str, float] = {}
        for name, fn in (("scan", lambda: protocol.scan_protocols(tmp)),
                         ("headers", headers_only), ("pixels", with_pixels)):
            if evict(paths):
                cold[name], _ = best_of(1, fn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.n
    per_file_read = n_read / n
    # The header reader reads one buffer from the start of each file, then the 12-byte header
    # of the Pixel Data element; nothing more may be read.
    buffer = dicom_header._HEADER_BYTES
    assert per_file_read <= min(buffer, mean_size) + 12, per_file_read
    pixels_read = max(0.0, min(buffer, mean_size) - (mean_size - pixel_bytes))
    lines = [
        "# Protocol scan benchmark (issue 3)",
        "",
        f"Collection: {n} files, {len(table)} series (CT and MR), {args.size} × {args.size} × "
        f"16 bit pixels, explicit VR little endian; mean file size {mean_size / 1024:.1f} KiB "
        f"(pixel data {pixel_bytes / 1024:.1f} KiB). Written with pydicom in {t_write:.1f} s. "
        f"Warm: files in the page cache, best of {args.repeat} (pixel loop: 1 run); cold: one "
        "run after evicting the files with posix_fadvise(DONTNEED) (the VM's own disk cache "
        "may still serve them).",
        "",
        f"Python {platform.python_version()}, pydicom {pydicom.__version__}, imharmony "
        f"{imharmony.__version__}, {platform.machine()}.",
        "",
        "| what | cache | time (s) | files/s | time / imharmony scan |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    rows = [
        ("`imharmony.scan_protocols` (walk, read, validate, group)", t_scan, "scan"),
        ("bare `pydicom.dcmread(stop_before_pixels=True)` loop", t_headers, "headers"),
        ("`pydicom.dcmread(path).pixel_array` loop", t_pixels, "pixels"),
    ]
    for label, warm, _key in rows:
        lines.append(
            f"| {label} | warm | {warm:.2f} | {n / warm:,.0f} | {warm / t_scan:.2f} |"
        )
    for label, _, key in rows:
        if key in cold:
            lines.append(
                f"| {label} | cold | {cold[key]:.2f} | {n / cold[key]:,.0f} | "
                f"{cold[key] / cold['scan']:.2f} |"
            )
    lines += [
        "",
        f"Bytes read by the scan (counted by wrapping `open`): {n_read:,} in total, "
        f"{per_file_read:,.0f} per file = {100 * per_file_read / mean_size:.2f} % of the mean "
        f"file size: one read of the first {buffer // 1024} KiB of each file (the header, then "
        "the first bytes of the pixel data) and the 12-byte Pixel Data element header; the "
        f"other {100 - 100 * pixels_read / pixel_bytes:.1f} % of the "
        "pixel data are never read, and no pixel is decoded.",
        "",
    ]
    report = "\n".join(lines)
    sys.stdout.write(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
