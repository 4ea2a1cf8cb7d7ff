"""Warning-free NaN reductions: same values as numpy, NaN for all-missing slices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 9),
    n=st.integers(1, 400),
    seed=st.integers(0, 2**16),
    nan_share=st.sampled_from([0.0, 0.2, 1.0]),
)
def test_median_clear_equals_nanmedian_of_the_masked_stack(
    t: int, n: int, seed: int, nan_share: float
) -> None:
    rng = np.random.default_rng(seed)
    stack = (rng.integers(0, 30, (t, n)) / 7).astype("float32")  # ties on purpose
    stack[rng.random(stack.shape) < nan_share] = np.nan
    clear = rng.random(stack.shape) < 0.7
    masked = np.where(clear, stack, np.nan)
    expected = nanops.nanmedian(masked, axis=0).astype("float32")
    got = nanops.median_clear(stack, clear)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
