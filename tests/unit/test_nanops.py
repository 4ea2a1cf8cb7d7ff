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


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 16), rows=st.tuples(st.integers(0, 12), st.integers(0, 12)))
def test_median_clear_rows_fills_only_its_rows_with_median_clear(
    t: int, rows: tuple[int, int]
) -> None:
    """The in-place row version (several threads on row ranges of one block) gives
    ``median_clear`` of those rows and leaves every other row as it was."""
    rng = np.random.default_rng(t)
    stack = rng.normal(size=(t, 12, 37)).astype("float32")
    stack[rng.random(stack.shape) < 0.2] = np.nan
    clear = rng.random(stack.shape) < 0.6
    out = np.full((12, 37), -7.0, dtype="float32")
    part = slice(min(rows), max(rows))
    nanops.median_clear_rows(stack, clear, out, part)
    np.testing.assert_array_equal(out[part], nanops.median_clear(stack[:, part], clear[:, part]))
    untouched = np.ones(12, dtype=bool)
    untouched[part] = False
    assert (out[untouched] == -7.0).all()
    with pytest.raises(ValueError, match="do not match"):
        nanops.median_clear_rows(stack, clear[:, :5], out, part)
