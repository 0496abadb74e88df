"""Renamed keywords and choices keep working, warn with the new name, and refuse ambiguity."""

from __future__ import annotations

import inspect

import pytest

from imharmony._deprecate import renamed_keywords, renamed_value
from imharmony.errors import DataError


@renamed_keywords(old="new")
def _scaled(x: float, *, new: float = 2.0) -> float:
    return x * new


def test_renamed_keyword_passes_the_value_on_and_warns() -> None:
    assert _scaled(3.0, new=4.0) == 12.0
    with pytest.warns(DeprecationWarning, match=r"_scaled\(\): the keyword 'old' is deprecated; "
                      r"use 'new'\.") as record:
        assert _scaled(3.0, old=5.0) == 15.0
    assert record[0].filename == __file__  # the warning points at the caller, not the wrapper


def test_renamed_keyword_refuses_both_names() -> None:
    with pytest.raises(DataError, match=r"got both 'old' .* and 'new'; pass only 'new'"):
        _scaled(3.0, old=5.0, new=4.0)


def test_signature_shows_only_the_new_name() -> None:
    assert list(inspect.signature(_scaled).parameters) == ["x", "new"]


def test_renamed_value() -> None:
    renames = {"robust": "robust_zscore"}
    assert renamed_value("zscore", renames, "f(normalize=...)") == "zscore"
    assert renamed_value(None, renames, "f(normalize=...)") is None
    with pytest.warns(DeprecationWarning, match=r"f\(normalize=\.\.\.\): 'robust' is deprecated; "
                      r"use 'robust_zscore'\."):
        assert renamed_value("robust", renames, "f(normalize=...)") == "robust_zscore"
