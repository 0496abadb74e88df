"""Model files with per-voxel arrays (imharmony._persist): written block by block, read lazily."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imharmony import _persist
from imharmony.errors import ModelFileError


def _blocks(a: np.ndarray, width: int):
    return lambda: (a[..., i : i + width] for i in range(0, a.shape[-1], width))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(0, 4), cols=st.integers(1, 300), width=st.integers(1, 120),
       start=st.integers(0, 299), kind=st.sampled_from("fb"), seed=st.integers(0, 2**16))
def test_blocks_round_trip_in_memory_and_lazily(tmp_path_factory, rows, cols, width, start, kind,
                                                seed) -> None:
    rng = np.random.default_rng(seed)
    shape = (rows, cols) if rows else (cols,)
    a = rng.normal(size=shape) if kind == "f" else rng.random(shape) > 0.5
    small = rng.integers(0, 9, (3, 2))
    path = tmp_path_factory.mktemp("m") / "m.json"
    _persist.save_model(path, kind="test", version=1, content={"x": 1},
                        arrays={"a": _persist.ColumnBlocks(shape, a.dtype, _blocks(a, width)),
                                "small": small})
    specs = {"a": _persist.ArraySpec(shape, kind), "small": _persist.ArraySpec((3, 2), "i")}
    full = _persist.load_model(path, kind="test", version=1, validate=lambda c: specs)
    np.testing.assert_array_equal(full.arrays["a"], a)
    np.testing.assert_array_equal(full.arrays["small"], small)
    # what numpy itself reads from the .npz
    with np.load(next(path.parent.glob("m.*.npz"))) as npz:
        np.testing.assert_array_equal(npz["a"], a)
    lazy = _persist.load_model(path, kind="test", version=1, validate=lambda c: specs,
                               lazy={"a"})
    stored = lazy.arrays["a"]
    assert isinstance(stored, _persist.StoredArray)
    lo = min(start, cols - 1)
    hi = min(cols, lo + width)
    np.testing.assert_array_equal(stored.columns(lo, hi), a[..., lo:hi])
    np.testing.assert_array_equal(stored.read(), a)


def test_blocks_that_do_not_cover_the_array_are_refused(tmp_path: Path) -> None:
    a = np.arange(12.0).reshape(2, 6)
    short = _persist.ColumnBlocks((2, 7), a.dtype, _blocks(a, 4))
    with pytest.raises(ModelFileError, match="6 of 7 columns"):
        _persist.save_model(tmp_path / "m.json", kind="t", version=1, content={},
                            arrays={"a": short})
    assert not (tmp_path / "m.json").exists()
    assert not list(tmp_path.glob("*.npz"))


def test_a_lazy_array_is_still_under_the_file_checksum(tmp_path: Path) -> None:
    a = np.arange(40.0).reshape(4, 10)
    path = tmp_path / "m.json"
    _persist.save_model(path, kind="t", version=1, content={},
                        arrays={"a": _persist.ColumnBlocks(a.shape, a.dtype, _blocks(a, 3))})
    npz = next(tmp_path.glob("m.*.npz"))
    raw = bytearray(npz.read_bytes())
    raw[-200] ^= 1  # one bit of the values (the archive's end holds its directory)
    npz.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum"):
        _persist.load_model(path, kind="t", version=1, lazy={"a"},
                            validate=lambda c: {"a": _persist.ArraySpec((4, 10))})
    doc = json.loads(path.read_text())
    assert doc["arrays"]["entries"]["a"] == {"dtype": "<f8", "shape": [4, 10]}


def test_a_c_ordered_array_is_not_read_lazily(tmp_path: Path) -> None:
    # an in-memory array is saved in C order: its columns are not contiguous, so a lazy read
    # (block after block of columns) would read the whole array each time: refused instead
    a = np.arange(40.0).reshape(4, 10)
    path = tmp_path / "m.json"
    _persist.save_model(path, kind="t", version=1, content={}, arrays={"a": a})
    specs = {"a": _persist.ArraySpec((4, 10))}
    np.testing.assert_array_equal(
        _persist.load_model(path, kind="t", version=1, validate=lambda c: specs).arrays["a"], a)
    with pytest.raises(ModelFileError, match="stored in C order"):
        _persist.load_model(path, kind="t", version=1, lazy={"a"}, validate=lambda c: specs)
