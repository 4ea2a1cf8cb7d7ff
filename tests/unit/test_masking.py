"""The compiled SCL masks equal the xarray/scipy definition (``scl_clear``)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from payesh.masking import SCL_MASKED, scl_clear, scl_masks


def _scl(seed: int, shape: tuple[int, int] = (61, 47)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # mostly clear classes (4, 5, 6), some clouds and shadows in patches, no data, snow
    scl = rng.choice([4, 5, 6, 7, 2, 11], size=shape).astype("float32")
    for cls in (3, 8, 9, 10, 0, 1):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        scl[y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = cls
    scl[rng.random(shape) < 0.02] = np.nan  # outside the footprint
    scl[0, :3] = 9  # clouds on the edge: the buffer must stop at it
    return scl


@pytest.mark.parametrize("buffer_px", [0, 1, 2, 3])
@pytest.mark.parametrize("mask_snow", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_masks_equal_scl_clear(buffer_px: int, mask_snow: bool, seed: int) -> None:
    scl = _scl(seed)
    bad, observed = scl_masks(scl, mask_snow=mask_snow, buffer_px=buffer_px)
    classes = np.where(np.isnan(scl), 0, scl)
    da = xr.DataArray(classes[None], dims=("time", "y", "x"))
    clear = scl_clear(da, mask_snow=mask_snow, buffer_px=buffer_px).values[0]
    np.testing.assert_array_equal(bad, ~clear)
    np.testing.assert_array_equal(observed, classes != 0)
    assert bad[np.isnan(scl)].all()  # no data is never clear
    assert bad[np.isin(classes, SCL_MASKED)].all()
    assert (~bad).any() and bad.any()


def test_buffer_grows_clouds_by_a_disk() -> None:
    scl = np.full((7, 7), 4, dtype="float32")
    scl[3, 3] = 9
    assert scl_masks(scl, buffer_px=0)[0].sum() == 1
    assert scl_masks(scl, buffer_px=1)[0].sum() == 5  # the centre and its 4 neighbours
    assert scl_masks(scl, buffer_px=2)[0].sum() == 13
    scl[3, 3] = 1  # saturated: masked, but not grown
    assert scl_masks(scl, buffer_px=2)[0].sum() == 1
