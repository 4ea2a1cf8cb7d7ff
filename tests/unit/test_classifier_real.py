"""Real labels (eo-learn Slovenia patch), spatial folds, and the Zagreb check."""

from __future__ import annotations

import numpy as np
import pytest

from payesh.errors import PayeshError
from payesh.features import FEATURE_NAMES, RGBN_FEATURE_NAMES
from payesh.labels import read_eolearn_patch, spatial_folds
from payesh.model import fit_estimator, train_builtup
from payesh.training import eolearn_rows, real_weight, spatial_cv, zagreb_builtup_share


@pytest.fixture(scope="module")
def patch():  # type: ignore[no-untyped-def]
    return read_eolearn_patch()


def test_eolearn_patch_bands_labels_clouds(patch) -> None:  # type: ignore[no-untyped-def]
    assert patch.bands.shape == (5, 101, 100, 6) and patch.labels.shape == (101, 100)
    assert patch.crs == "EPSG:32633" and abs(patch.transform[1] - 10.0) < 0.01
    cloudy = np.isnan(patch.bands[..., 0]).mean(axis=(1, 2))
    assert cloudy[0] == 1.0 and cloudy[1] == 1.0 and (cloudy[2:] < 0.05).all()
    assert int((patch.labels == 1).sum()) == 198  # LULC class 8, artificial surface
    clear = patch.bands[2:][np.isfinite(patch.bands[2:])]
    assert 0.0 < clear.min() and clear.max() < 1.0  # TOA reflectance, unitless


def test_spatial_folds_are_strips() -> None:
    f = spatial_folds((101, 100), 4)
    assert set(np.unique(f)) == {0, 1, 2, 3}
    assert (f == f[:, :1]).all()  # constant along a row
    assert (np.diff(f[:, 0]) >= 0).all()  # contiguous strips, north to south
    with pytest.raises(PayeshError, match="n_folds"):
        spatial_folds((10, 10), 1)


def test_spatial_cv_holds_out_strips(patch) -> None:  # type: ignore[no-untyped-def]
    x, y, fold = eolearn_rows(patch, n_folds=4)
    assert x.shape == (len(y), len(FEATURE_NAMES)) and set(np.unique(y)) == {0, 1}
    assert int(y.sum()) == 3 * 198  # three clear scenes
    base_x, base_y = x[::50], y[::50]  # a stand-in "synthetic" set
    w = real_weight(base_y, y, 0.5)
    assert np.isclose(w[y == 1].sum(), 0.5 * (base_y == 1).sum())
    sub = (np.arange(len(y)) % 6 == 0) | (y == 1)  # keep the test small: ~5 600 rows
    cv = spatial_cv(base_x, base_y, x[sub], y[sub], fold[sub], seed=0, share=0.5, max_iter=10)
    assert cv["n"] == sub.sum() and cv["positives"] == 3 * 198
    assert 0.6 < cv["auc"] <= 1.0  # real neighbours teach it; held-out strips still rank


def test_zagreb_builtup_share_from_real_scenes(patch) -> None:  # type: ignore[no-untyped-def]
    x, y, _ = eolearn_rows(patch, feature_names=RGBN_FEATURE_NAMES)
    model = train_builtup(x[::4], y[::4], feature_names=RGBN_FEATURE_NAMES, max_iter=10)
    z = zagreb_builtup_share(model)
    assert z["clear_pixels"] > 5000  # of the 100 × 100 px window at 120 m
    assert 0.0 <= z["builtup_share"] <= 1.0
    # PROVENANCE.md: SCL "not vegetated" is about 30 % of this window
    assert 0.2 < z["scl_not_vegetated_share"] < 0.4
    assert fit_estimator(x[:200], np.r_[y[:199], 1], max_iter=2).n_iter_ == 2
