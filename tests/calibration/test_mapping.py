"""AcquisitionMapping against generated truth, and the only way it opens ComBat's refusal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import imharmony as ih
from imharmony.errors import DataError, ModelFileError

T1 = {"RepetitionTime": 500.0, "EchoTime": 12.0, "ScanningSequence": "SE"}
T2 = {"RepetitionTime": 4000.0, "EchoTime": 100.0, "ScanningSequence": "SE"}
FLAIR = {"RepetitionTime": 9000.0, "EchoTime": 120.0, "ScanningSequence": "SE"}


def paired(n: int = 40, seed: int = 0, noise: float = 0.05):
    """Biology b of n subjects, measured with T1 (b) and T2 (3 - 0.5 b): a contrast inversion."""
    rng = np.random.default_rng(seed)
    b = rng.normal(0, 1, (n, 3))
    t1 = pd.DataFrame(b + rng.normal(0, noise, b.shape), columns=["f0", "f1", "f2"])
    t2 = pd.DataFrame(3 - 0.5 * b + rng.normal(0, noise, b.shape), columns=["f0", "f1", "f2"])
    return b, t1, t2


def test_linear_mapping_recovers_the_relation_with_honest_cv_error() -> None:
    _, t1, t2 = paired(noise=0.05)
    m = ih.AcquisitionMapping(random_state=0).fit(t2, t1, source=T2, target=T1)
    # t1 = b + e1, t2 = 3 - b/2 + e2  =>  t1 ≈ 6 - 2 t2 (attenuated a little by e2)
    assert np.allclose(m.slope_, -2.0, atol=0.12)  # ~3.5 standard errors
    assert np.allclose(m.intercept_, 6.0, atol=0.38)
    # CV error: e1 plus 2 e2, i.e. sqrt(0.05² + 0.1²) = 0.112
    assert np.allclose(m.cv_rmse_, 0.112, rtol=0.35)
    assert (m.cv_rmse_identity_ > 10 * m.cv_rmse_).all()
    assert m.source_ == {"EchoTime": "100.0", "RepetitionTime": "4000.0", "ScanningSequence": "SE"}


def test_monotone_mapping_beats_linear_on_a_curved_relation() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 3, (80, 2))
    y = np.exp(x) + rng.normal(0, 0.05, x.shape)
    lin = ih.AcquisitionMapping(random_state=0).fit(x, y, source=T2, target=T1)
    mono = ih.AcquisitionMapping(method="monotone", random_state=0).fit(x, y, source=T2,
                                                                        target=T1)
    assert (mono.cv_rmse_ < 0.5 * lin.cv_rmse_).all()
    grid = np.linspace(0.2, 2.8, 7)[:, None].repeat(2, axis=1)
    assert np.abs(mono.transform(grid) - np.exp(grid)).max() < 0.6
    assert (np.diff(mono.transform(grid), axis=0) >= 0).all()


def cohort_with_two_contrasts(seed: int = 2):
    """Sites s0, s1 scan T1; site s2 scans T2. Returns X, site, acquisitions, biology."""
    rng = np.random.default_rng(seed)
    site = np.repeat(["s0", "s1", "s2"], 30)
    b = rng.normal(0, 1, (site.size, 3))
    shift = np.select([site == "s0", site == "s1"], [0.0, 0.4], -0.3)[:, None]
    X = np.where(site[:, None] == "s2", 3 - 0.5 * b, b) + shift + rng.normal(0, 0.05, b.shape)
    acq = pd.DataFrame([T2 if s == "s2" else T1 for s in site])
    return pd.DataFrame(X, columns=["f0", "f1", "f2"]), site, acq, b


def test_combat_accepts_a_fitted_mapping_between_exactly_those_acquisitions() -> None:
    X, site, acq, b = cohort_with_two_contrasts()
    _, t1, t2 = paired(seed=3)
    mapping = ih.AcquisitionMapping(random_state=0).fit(t2, t1, source=T2, target=T1)
    out = ih.ComBat().fit_transform(X, batch=site, acquisitions=acq, mapping=mapping)
    at2 = site == "s2"
    # the T2 site's features now rise with the biology, as the T1 sites' do
    for g in range(3):
        assert np.corrcoef(out.to_numpy()[at2, g], b[at2, g])[0, 1] > 0.95
        assert np.corrcoef(X.to_numpy()[at2, g], b[at2, g])[0, 1] < -0.95
    overall = np.corrcoef(out.to_numpy()[:, 0], b[:, 0])[0, 1]
    assert overall > 0.95
    # mapping first, then ComBat: identical to doing the two steps by hand
    by_hand = X.copy()
    by_hand.loc[at2] = mapping.transform(X.loc[at2])
    np.testing.assert_allclose(ih.ComBat().fit_transform(by_hand, batch=site), out, atol=1e-12)


def test_anything_else_is_refused() -> None:
    from imharmony.physics.compatibility import NotHarmonizableError

    X, site, acq, _ = cohort_with_two_contrasts()
    _, t1, t2 = paired(seed=3)
    with pytest.raises(NotHarmonizableError):
        ih.ComBat().fit(X, batch=site, acquisitions=acq)
    with pytest.raises(DataError, match=r"fitted imharmony\.AcquisitionMapping"):
        ih.ComBat().fit(X, batch=site, acquisitions=acq, mapping=ih.AcquisitionMapping())
    with pytest.raises(DataError, match=r"fitted imharmony\.AcquisitionMapping"):
        ih.ComBat().fit(X, batch=site, acquisitions=acq, mapping={"slope": 1})
    flair = ih.AcquisitionMapping().fit(t2, t1, source=FLAIR, target=T1)
    with pytest.raises(DataError, match=r"exactly two acquisitions.*also"):
        ih.ComBat().fit(X, batch=site, acquisitions=acq, mapping=flair)
    three = acq.copy()
    three.iloc[:5] = pd.DataFrame([FLAIR] * 5)
    good = ih.AcquisitionMapping().fit(t2, t1, source=T2, target=T1)
    with pytest.raises(DataError, match="also"):
        ih.ComBat().fit(X, batch=site, acquisitions=three, mapping=good)
    with pytest.raises(DataError, match="needs acquisitions"):
        ih.ComBat().fit(X, batch=site, mapping=good)
    with pytest.raises(DataError, match="same acquisition"):
        ih.AcquisitionMapping().fit(t2, t1, source=T1, target=T1)
    with pytest.raises(DataError, match="feature columns differ"):
        good.transform(t1.rename(columns={"f0": "other"}))


@pytest.mark.parametrize("method", ["linear", "monotone"])
def test_save_load_round_trip(tmp_path, method: str) -> None:
    _, t1, t2 = paired(seed=4)
    m = ih.AcquisitionMapping(method=method, random_state=0).fit(t2, t1, source=T2, target=T1)
    back = ih.AcquisitionMapping.load(m.save(tmp_path / "map.json"))
    pd.testing.assert_frame_equal(back.transform(t2), m.transform(t2))
    assert back.source_ == m.source_ and back.target_ == m.target_
    np.testing.assert_array_equal(back.cv_rmse_, m.cv_rmse_)
    (tmp_path / "map.json").write_text("{}")
    with pytest.raises(ModelFileError, match="not an imharmony model file"):
        ih.AcquisitionMapping.load(tmp_path / "map.json")
