"""Warning-free NaN reductions: same values as numpy, NaN for all-missing slices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from payesh import nanops


@pytest.mark.parametrize("name", ["nanmedian", "nanmean", "nanmax"])
@pytest.mark.parametrize("axis", [-1, 0, (-2, -1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_numpy_and_never_warns(name: str, axis: int | tuple[int, ...], dtype: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 5, 6)).astype(dtype)
    a[rng.random(a.shape) < 0.4] = np.nan
    a[1] = np.nan  # all-missing slices along every axis tested
    a[:, 2, :] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = getattr(np, name)(a, axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = getattr(nanops, name)(a, axis=axis)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == expected.dtype
    assert np.isnan(got).any()
