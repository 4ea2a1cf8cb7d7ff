"""Stacks kept in DN (uint16) give the float32 stacks' values, pixel for pixel.

A month whose items share each band's scale and offset keeps its Sentinel-2 stacks in
DN and converts at the medians (``payesh.sources.placing.place_first_dn``,
``payesh.nanops.median_clear_dn_rows``); every other month keeps float32 stacks. The
composite must not depend on which: here the DN path is held to the float32 one on
random windows with nodata, saturated values, pixels outside the raster and fused items.
"""

from __future__ import annotations

import numpy as np
import pytest

from payesh import nanops
from payesh.sources.citygrid import AssetGrid, ItemPlan
from payesh.sources.placing import (
    DN_MISSING,
    dn_conversions,
    place_first,
    place_first_dn,
    place_missing,
    place_missing_dn,
)

F = np.float32
CONVERSIONS = [
    # nodata file, nodata item, saturated, scale, offset, physical
    (F(0), F(np.nan), F(65535), F(1e-4), F(-0.1), True),  # L2A since baseline 04.00
    (F(np.nan), F(7), F(60000.5), F(2.75e-5), F(-0.2), True),  # item nodata, odd saturation
    (F(0.5), F(70000), F(3000), F(1e-4), F(0.0), True),  # nodata no uint16 equals
]


def _values(dn: np.ndarray, conv: tuple) -> np.ndarray:
    """DN as the float32 stacks hold them: converted, NaN where missing."""
    out = dn.astype(np.float32) * conv[3] + conv[4]
    return np.where(dn == DN_MISSING, np.float32(np.nan), out)


def _window(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    win = rng.integers(1, 9000, size=shape).astype(np.uint16)
    for special in (0, 7, 3000, 60000, 60001, 65535):
        win[rng.random(shape) < 0.03] = special
    return win


@pytest.mark.parametrize("conv", CONVERSIONS)
@pytest.mark.parametrize("kind", ["10 m", "20 m", "edge"])
def test_placed_dn_are_the_float_values(conv: tuple, kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    n = 96
    if kind == "10 m":
        win, ri, ci = _window(rng, (n, n)), np.arange(n), np.arange(n)
    elif kind == "20 m":
        win, ri, ci = _window(rng, (n // 2, n // 2)), np.arange(n) // 2, np.arange(n) // 2
    else:  # the raster ends inside the block
        win, ri, ci = _window(rng, (n, n - 20)), np.arange(n), np.arange(n) - 20
    as_float = np.empty((n, n), np.float32)
    as_dn = np.empty((n, n), np.uint16)
    place_first(win, ri, ci, as_float, conv)
    place_first_dn(win, ri, ci, as_dn, conv)
    assert np.isnan(as_float).any() and (~np.isnan(as_float)).any()
    np.testing.assert_array_equal(_values(as_dn, conv), as_float)

    # a second item of the same time step fills what is still missing, first valid wins
    other = _window(rng, win.shape)
    place_missing(other, ri, ci, as_float, conv)
    place_missing_dn(other, ri, ci, as_dn, conv)
    np.testing.assert_array_equal(_values(as_dn, conv), as_float)


@pytest.mark.parametrize("conv", CONVERSIONS)
@pytest.mark.parametrize("scenes", [1, 4, 6, 9])
def test_dn_medians_are_the_float_medians(conv: tuple, scenes: int) -> None:
    rng = np.random.default_rng(scenes)
    dn = rng.integers(1, 9000, size=(scenes, 40, 50)).astype(np.uint16)
    dn[rng.random(dn.shape) < 0.2] = DN_MISSING
    dn[:, :3] = DN_MISSING  # rows with nothing valid: NaN
    clear = rng.random(dn.shape) < 0.7
    want = np.empty((40, 50), np.float32)
    got = np.empty((40, 50), np.float32)
    nanops.median_clear_rows(_values(dn, conv), clear, want, slice(0, 40))
    nanops.median_clear_dn_rows(dn, clear, got, slice(0, 40), conv[3], conv[4])
    assert np.isnan(want[:3]).all() and not np.isnan(want[3:]).all()
    np.testing.assert_array_equal(got, want)


def test_dn_placing_refuses_files_that_are_not_uint16() -> None:
    win = np.ones((4, 4), np.int32)
    out = np.empty((4, 4), np.uint16)
    with pytest.raises(ValueError, match="uint16 files, not int32"):
        place_first_dn(win, np.arange(4), np.arange(4), out, CONVERSIONS[0])
    with pytest.raises(ValueError, match="uint16 files, not int32"):
        place_missing_dn(win, np.arange(4), np.arange(4), out, CONVERSIONS[0])


def test_dn_medians_refuse_a_scale_that_reverses_the_order() -> None:
    dn = np.ones((3, 2, 2), np.uint16)
    with pytest.raises(ValueError, match="scale above 0"):
        nanops.median_clear_dn_rows(
            dn, dn > 0, np.empty((2, 2), np.float32), slice(0, 2), -1.0, 0.0
        )


class _Dataset:
    def __init__(self, dtype: str) -> None:
        self.dtypes = (dtype,)


def _plan(item: str, scale_offset: tuple[float, float], dtype: str = "uint16") -> ItemPlan:
    grid = AssetGrid("f.tif", np.arange(2), np.arange(2), 2, 2, 1, 1, 0.0, _Dataset(dtype))
    return ItemPlan(
        item_id=item,
        time=np.datetime64("2025-01-01"),
        grids={"red": grid},
        scale_offset={"red": scale_offset},
        nodata={"red": 0.0},
    )


def test_a_month_is_kept_in_dn_only_when_its_items_convert_alike() -> None:
    same = [_plan("a", (1e-4, -0.1)), _plan("b", (1e-4, -0.1))]
    assert dn_conversions(same, ["red"]) == {"red": (F(1e-4), F(-0.1))}
    # a processing-baseline change inside the month: float32 stacks
    assert dn_conversions([_plan("a", (1e-4, -0.1)), _plan("b", (1e-4, 0.0))], ["red"]) is None
    assert dn_conversions([_plan("a", (1e-4, -0.1), "int16")], ["red"]) is None
    assert dn_conversions([_plan("a", (-1e-4, 0.0))], ["red"]) is None
