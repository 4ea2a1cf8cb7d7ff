"""A staged month reads back exactly, whole or by any slice (payesh.staging)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from payesh import staging


def _month(ny: int = 23, nx: int = 17) -> xr.Dataset:
    rng = np.random.default_rng(3)
    prob = rng.random((1, ny, nx), dtype=np.float32)
    prob[0, 2:5, 3:9] = np.nan
    rgb = rng.integers(0, 255, (1, 3, ny, nx), dtype=np.uint8)
    return xr.Dataset(
        {
            "builtup_prob": (("time", "y", "x"), prob, {"units": "1"}),
            "true_colour": (("time", "band", "y", "x"), rgb),
            "clear_count": (("time", "y", "x"), rng.integers(0, 9, (1, ny, nx), dtype=np.int16)),
        },
        coords={
            "time": pd.DatetimeIndex(["2025-03-01"]),
            "band": ["red", "green", "blue"],
            "y": np.arange(ny) * -10.0,
            "x": np.arange(nx) * 10.0,
        },
        attrs={"source_items": ["a", "b"]},
    )


def test_a_staged_month_round_trips_in_blocks_of_files(tmp_path: Path) -> None:
    month = _month()
    path = staging.stage_dataset(month, tmp_path, "s2-2025-03", block=5)
    # one file per spatial block of each spatial variable: 5 × 4 blocks of 5 px
    assert len(list(path.glob("*-*-*.npy"))) == 3 * 5 * 4
    back = staging.open_staged(path)
    assert back["builtup_prob"].chunks == ((1,), (5,) * 4 + (3,), (5,) * 3 + (2,))
    xr.testing.assert_identical(back.compute(), month)
    # rechunked across the block edges, as the store and the year's reads do
    np.testing.assert_array_equal(
        back["true_colour"].chunk({"y": 8, "x": 6}).values, month["true_colour"].values
    )


@settings(max_examples=40, deadline=None)
@given(
    y=st.tuples(st.integers(0, 23), st.integers(0, 23)),
    x=st.tuples(st.integers(0, 17), st.integers(0, 17)),
    step=st.sampled_from([1, 1, 2]),
)
def test_any_slice_of_the_blocks_is_the_slice_of_the_month(
    tmp_path_factory: pytest.TempPathFactory, y: tuple[int, int], x: tuple[int, int], step: int
) -> None:
    month = _month()
    folder = tmp_path_factory.mktemp("stage")
    path = staging.stage_dataset(month, folder, "m", block=4)
    back = staging.open_staged(path)
    blocks = back["true_colour"].data.dask  # the graph's source: the blocks object itself
    source = next(v for v in blocks.values() if isinstance(v, staging._StagedBlocks))
    key = (slice(None), slice(0, 2), slice(min(y), max(y), step), slice(min(x), max(x)))
    np.testing.assert_array_equal(source[key], month["true_colour"].values[key])
    assert source[0, 1, 3, 4] == month["true_colour"].values[0, 1, 3, 4]
