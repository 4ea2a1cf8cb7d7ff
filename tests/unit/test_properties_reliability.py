"""Reliability properties (Hypothesis): tiling covers a city exactly once; masks never un-mask.

``test_grid.py`` already checks, for cities centred in their own UTM zone 38N with
1 km-ish boxes, that the tile index slices partition the pixel array. The properties
here go further and check *geometry*, not index arithmetic:

- tiling: random rectangular cities (independent width and height) processed in UTM
  38N **or** 39N (also off their own zone), random tile sizes and pixel sizes; every
  pixel centre of the city grid falls inside exactly one tile's bounds, the tiles'
  union contains the city's projected bbox (up to the documented 5 % snap), tile edges
  lie on multiples of ``tile_size``, tile ids are unique, say where the tile is, and a
  fresh computation gives the same id for the same square; coarser aligned grids
  (Landsat 30 m and others) nest in the tiles the same way;
- masks: for random SCL, QA_PIXEL and ``cf_cvg`` arrays, no mask ever calls a pixel
  clear that its own flags say is not; dilating (larger ``buffer_px``), masking snow,
  or adding clouds only removes clear pixels; the Dask-chunked SCL mask equals the
  in-memory one for any chunking; masked values are NaN (never 0) and clear values
  are passed through unchanged.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from odc.geo import geom

from payesh.city import City
from payesh.grid import SNAP_TOLERANCE, aligned_geobox, tile_grid, tile_name
from payesh.masking import (
    QA_PIXEL_MASKED_BITS,
    SCL_MASKED,
    SCL_SNOW,
    landsat_clear,
    mask_landsat,
    mask_s2,
    mask_viirs,
    scl_clear,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "reliability"))
import figures

PROPERTY = settings(
    max_examples=figures.scale(30, 500),
    deadline=None,  # a shared 2-core machine: the first example also pays for imports
    suppress_health_check=[HealthCheck.too_slow],
)

# How many examples each property ran, recorded for the reliability page at the end.
EXAMPLES: dict[str, int] = {}


def _count(test: str) -> None:
    EXAMPLES[test] = EXAMPLES.get(test, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _record_examples() -> object:
    yield
    for test, n in EXAMPLES.items():
        figures.record(
            "properties", f"tests/unit/test_properties_reliability.py::{test}", examples=n
        )


# --------------------------------------------------------------------------- tiling

# Iran's west: UTM 38N is meant for 42-48 E, 39N for 48-54 E; a manifest may use a zone
# a little beyond its own (cities near a zone edge do), far from its centre
_ZONE_WEST = {"EPSG:32638": (42.0, 48.0), "EPSG:32639": (48.0, 54.0)}
_MARGIN = 2.5  # degrees; payesh.city allows 3 beyond a zone's area of use


def _city_params(crs: str) -> st.SearchStrategy[dict]:
    lo, hi = _ZONE_WEST[crs]
    return st.fixed_dictionaries(
        {
            "crs": st.just(crs),
            "west": st.floats(lo - _MARGIN, hi + _MARGIN - 0.5),
            "south": st.floats(25.5, 39.5),
            # the city's size, in tiles (fractional: bboxes do not fall on tile edges);
            # kept to a few hundred tiles so that every example checks every tile quickly
            "tiles_x": st.floats(0.05, 15.0),
            "tiles_y": st.floats(0.05, 15.0),
            "resolution": st.sampled_from([10.0, 20.0, 30.0]),
            "per_tile": st.integers(3, 60),
        }
    )


cities = st.sampled_from(sorted(_ZONE_WEST)).flatmap(_city_params)


def _city(p: dict) -> City:
    tile_deg = p["resolution"] * p["per_tile"] / 111_000  # a tile's side in degrees of latitude
    width = p["tiles_x"] * tile_deg / math.cos(math.radians(p["south"]))
    height = p["tiles_y"] * tile_deg
    return City.model_validate(
        {
            "name": "prop",
            "title": "property test",
            "bbox": (p["west"], p["south"], p["west"] + width, p["south"] + height),
            "crs": p["crs"],
            "resolution": p["resolution"],
            "tile_size": p["resolution"] * p["per_tile"],
        }
    )


def _tile_index(edges_lo: np.ndarray, edges_hi: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """How many [lo, hi) intervals hold each centre: (n_centres,) counts."""
    inside = (centres[:, None] >= edges_lo[None, :]) & (centres[:, None] < edges_hi[None, :])
    return inside.sum(axis=1)


@PROPERTY
@given(p=cities)
def test_tiles_cover_every_pixel_exactly_once(p: dict) -> None:
    _count("test_tiles_cover_every_pixel_exactly_once")
    city = _city(p)
    tg = tile_grid(city)
    rows, cols = tg.shape
    assert rows >= 1 and cols >= 1
    gbox = tg.geobox
    # nothing of the city grid is left outside the tiles (no partial row/column)
    assert gbox.shape == (rows * tg.tile_pixels, cols * tg.tile_pixels)
    t = city.tile_size
    # each tile's own bounds, from its own geobox (geometry, not index slices)
    boxes = {(r, c): tg.tile_geobox(r, c).boundingbox for r in range(rows) for c in range(cols)}
    for b in boxes.values():
        for v in (b.left, b.right, b.bottom, b.top):
            assert math.isclose(v / t, round(v / t), abs_tol=1e-9), (v, t)
        assert math.isclose(b.right - b.left, t) and math.isclose(b.top - b.bottom, t)
    # x and y are separable: a pixel centre is in tile (r, c) iff its x is in column c's
    # interval and its y in row r's, so exactly-once in 2-D is exactly-once per axis
    # plus every tile being the product of its row and column intervals (checked above)
    lefts = np.array([boxes[(0, c)].left for c in range(cols)])
    rights = np.array([boxes[(0, c)].right for c in range(cols)])
    bottoms = np.array([boxes[(r, 0)].bottom for r in range(rows)])
    tops = np.array([boxes[(r, 0)].top for r in range(rows)])
    for r in range(rows):
        for c in range(cols):
            b = boxes[(r, c)]
            assert (b.left, b.right, b.bottom, b.top) == (lefts[c], rights[c], bottoms[r], tops[r])
    xs = gbox.coords["x"].values
    ys = gbox.coords["y"].values
    assert (_tile_index(lefts, rights, xs) == 1).all()
    assert (_tile_index(bottoms, tops, ys) == 1).all()
    # no gaps or overlaps: the tiles' areas add up to the grid's, which they tile
    area = sum(poly.area for _, poly in tg.tile_polygons())
    assert math.isclose(area, gbox.extent.area, rel_tol=1e-9)
    # the union of tiles contains the city's bbox, up to the documented snap tolerance
    city_poly = geom.box(*city.bbox, crs="EPSG:4326").to_crs(city.crs, resolution=math.inf)
    cb = city_poly.boundingbox
    gb = gbox.boundingbox
    tol = SNAP_TOLERANCE * t + 1e-6
    assert gb.left <= cb.left + tol and gb.bottom <= cb.bottom + tol
    assert gb.right >= cb.right - tol and gb.top >= cb.top - tol
    # and it adds no whole row or column of tiles beyond the bbox
    assert gb.left > cb.left - t and gb.bottom > cb.bottom - t
    assert gb.right < cb.right + t and gb.top < cb.top + t


@PROPERTY
@given(p=cities)
def test_tile_ids_unique_positional_and_stable(p: dict) -> None:
    _count("test_tile_ids_unique_positional_and_stable")
    city = _city(p)
    tg = tile_grid(city)
    rows, cols = tg.shape
    names = tg.names
    flat = [str(n) for n in names.ravel()]
    assert len(set(flat)) == len(flat) == rows * cols
    left, _, _, top = tg.geobox.boundingbox
    t = city.tile_size
    for name, poly in tg.tile_polygons():
        r, c = int(name[1:4]), int(name[5:8])
        assert name == tile_name(r, c) == names[r, c]
        b = poly.boundingbox  # a tile's id says where it is: row from the north, col from the west
        assert math.isclose(b.left, left + c * t) and math.isclose(b.top, top - r * t)
    # stable: the same manifest, parsed again, names the same squares the same way
    again = tile_grid(City.model_validate(city.model_dump()))
    assert again.shape == tg.shape
    assert (again.names == names).all()
    assert again.geobox == tg.geobox
    ys, xs = tg.tile_coords()
    ys2, xs2 = again.tile_coords()
    assert np.array_equal(ys, ys2) and np.array_equal(xs, xs2)


@PROPERTY
@given(p=cities, coarse=st.sampled_from([15.0, 20.0, 30.0, 60.0, 100.0, 250.0]))
def test_coarser_grids_nest_in_the_tiles(p: dict, coarse: float) -> None:
    _count("test_coarser_grids_nest_in_the_tiles")
    city = _city(p)
    tg = tile_grid(city)
    g = aligned_geobox(city, coarse)
    assert g.boundingbox == tg.geobox.boundingbox  # the same extent, only coarser
    res = abs(g.resolution.x)
    per_tile = city.tile_size / res
    assert math.isclose(per_tile, round(per_tile), abs_tol=1e-9)
    rows, cols = tg.shape
    left, _, _, top = tg.geobox.boundingbox
    # each coarse pixel centre lies in exactly one tile and no coarse pixel straddles two
    xs = g.coords["x"].values
    ys = g.coords["y"].values
    col_of = np.floor((xs - left) / city.tile_size).astype(int)
    row_of = np.floor((top - ys) / city.tile_size).astype(int)
    assert col_of.min() == 0 and col_of.max() == cols - 1
    assert row_of.min() == 0 and row_of.max() == rows - 1
    assert (np.bincount(col_of, minlength=cols) == round(per_tile)).all()
    assert (np.bincount(row_of, minlength=rows) == round(per_tile)).all()


# --------------------------------------------------------------------------- masks


def _scl(shape: tuple[int, int, int]) -> st.SearchStrategy[np.ndarray]:
    # mostly the real classes 0-11, sometimes anything a uint8 can hold
    classes = st.one_of(st.integers(0, 11), st.integers(0, 255))
    return hnp.arrays(np.uint8, shape, elements=classes)


shapes = st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12))


def _da(arr: np.ndarray) -> xr.DataArray:
    _, y, x = arr.shape
    return xr.DataArray(
        arr,
        dims=("time", "y", "x"),
        coords={"y": np.arange(y) * -10.0, "x": np.arange(x) * 10.0},
    )


@PROPERTY
@given(data=st.data(), shape=shapes, buffer_px=st.integers(0, 4), snow=st.booleans())
def test_scl_mask_never_unmasks(
    data: st.DataObject, shape: tuple[int, int, int], buffer_px: int, snow: bool
) -> None:
    _count("test_scl_mask_never_unmasks")
    scl = data.draw(_scl(shape))
    clear = scl_clear(_da(scl), mask_snow=snow, buffer_px=buffer_px).values
    assert clear.dtype == bool and clear.shape == scl.shape
    masked = set(SCL_MASKED) | ({SCL_SNOW} if snow else set())
    # a pixel whose own class is masked is never clear, whatever the buffer
    assert not clear[np.isin(scl, list(masked))].any()
    # more buffer, or also masking snow, only ever removes clear pixels
    wider = scl_clear(_da(scl), mask_snow=snow, buffer_px=buffer_px + 1).values
    assert not (wider & ~clear).any()
    with_snow = scl_clear(_da(scl), mask_snow=True, buffer_px=buffer_px).values
    assert not (with_snow & ~clear).any()
    # without a buffer, the mask is exactly "class not masked"
    if buffer_px == 0:
        assert np.array_equal(clear, ~np.isin(scl, list(masked)))


@PROPERTY
@given(
    data=st.data(),
    shape=shapes,
    buffer_px=st.integers(0, 3),
    cloud=st.sampled_from([3, 8, 9, 10, 0, 1]),
)
def test_adding_clouds_never_clears_a_pixel(
    data: st.DataObject, shape: tuple[int, int, int], buffer_px: int, cloud: int
) -> None:
    _count("test_adding_clouds_never_clears_a_pixel")
    scl = data.draw(_scl(shape))
    extra = data.draw(hnp.arrays(np.bool_, shape))
    if cloud in (0, 1):
        # no data and saturated pixels are masked but not buffered: turning a cloud
        # into one would shrink its buffer, so they only replace pixels not cloudy yet
        extra &= ~np.isin(scl, [3, 8, 9, 10])
    cloudier = np.where(extra, np.uint8(cloud), scl)
    before = scl_clear(_da(scl), buffer_px=buffer_px).values
    after = scl_clear(_da(cloudier), buffer_px=buffer_px).values
    assert not (after & ~before).any()  # clouds only take clear pixels away
    # the time steps are masked independently: a cloud in one image hides nothing in another
    for t in range(shape[0]):
        if not extra[t].any():
            assert np.array_equal(after[t], before[t])


@settings(PROPERTY, max_examples=figures.scale(10, 300))  # each example builds a Dask graph
@given(
    data=st.data(),
    shape=shapes,
    buffer_px=st.integers(0, 4),
    cy=st.integers(1, 6),
    cx=st.integers(1, 6),
)
def test_chunked_scl_mask_equals_in_memory(
    data: st.DataObject, shape: tuple[int, int, int], buffer_px: int, cy: int, cx: int
) -> None:
    _count("test_chunked_scl_mask_equals_in_memory")
    scl = data.draw(_scl(shape))
    eager = scl_clear(_da(scl), buffer_px=buffer_px).values
    lazy = _da(scl).copy(data=da.from_array(scl, chunks=(1, cy, cx)))
    chunked = scl_clear(lazy, buffer_px=buffer_px)
    assert chunked.chunks is not None  # stays lazy
    # chunk edges neither lose a cloud's buffer nor invent one
    assert np.array_equal(chunked.values, eager)


@PROPERTY
@given(data=st.data(), shape=shapes, buffer_px=st.integers(0, 2))
def test_mask_s2_nans_every_unclear_value(
    data: st.DataObject, shape: tuple[int, int, int], buffer_px: int
) -> None:
    _count("test_mask_s2_nans_every_unclear_value")
    scl = data.draw(_scl(shape))
    red = data.draw(
        hnp.arrays(
            np.float32, shape, elements=st.one_of(st.floats(-0.25, 1.5, width=32), st.just(np.nan))
        )
    )
    ds = xr.Dataset({"scl": _da(scl), "red": _da(red)})
    out = mask_s2(ds, ("red",), buffer_px=buffer_px)
    clear = scl_clear(_da(scl), buffer_px=buffer_px).values
    values = out["red"].values
    assert np.isnan(values[~clear]).all()  # masked means NaN, never 0 or a stale value
    assert np.array_equal(values[clear], red[clear], equal_nan=True)  # clear passes through
    out_clear = out["clear"].values
    assert not (out_clear & ~clear).any()
    assert not (out_clear & np.isnan(red)).any()  # a missing value is never a clear one
    assert np.array_equal(out["observed"].values, scl != 0)


qa = hnp.arrays(np.uint16, shapes, elements=st.integers(0, 2**16 - 1))


@PROPERTY
@given(qa_pixel=qa, data=st.data())
def test_landsat_mask_never_unmasks(qa_pixel: np.ndarray, data: st.DataObject) -> None:
    _count("test_landsat_mask_never_unmasks")
    lst = data.draw(
        hnp.arrays(
            np.float32,
            qa_pixel.shape,
            elements=st.one_of(st.floats(-40, 80, width=32), st.just(np.nan)),
        )
    )
    clear = landsat_clear(_da(qa_pixel)).values
    flagged = np.zeros(qa_pixel.shape, dtype=bool)
    for bit in QA_PIXEL_MASKED_BITS:
        flagged |= (qa_pixel >> bit) & 1 == 1
    assert np.array_equal(clear, ~flagged)  # clear iff none of fill/cloud/shadow bits is set
    # setting any masked bit on a pixel never makes it clear
    bit = data.draw(st.sampled_from(QA_PIXEL_MASKED_BITS))
    worse = landsat_clear(_da(qa_pixel | np.uint16(1 << bit))).values
    assert not worse.any()
    out = mask_landsat(xr.Dataset({"qa_pixel": _da(qa_pixel), "lst": _da(lst)}))
    keep = clear & ~np.isnan(lst)
    assert np.array_equal(out["clear"].values, keep)
    assert np.isnan(out["lst"].values[~keep]).all()
    assert np.array_equal(out["lst"].values[keep], lst[keep])


@PROPERTY
@given(
    cf_cvg=hnp.arrays(np.int16, shapes, elements=st.integers(-5, 40)),
    data=st.data(),
)
def test_viirs_mask_never_unmasks(cf_cvg: np.ndarray, data: st.DataObject) -> None:
    _count("test_viirs_mask_never_unmasks")
    rad = data.draw(
        hnp.arrays(
            np.float32,
            cf_cvg.shape,
            elements=st.one_of(st.floats(0, 500, width=32), st.just(np.nan)),
        )
    )
    out = mask_viirs(xr.Dataset({"radiance": _da(rad), "cf_cvg": _da(cf_cvg)}))
    got = out["radiance"].values
    unseen = cf_cvg <= 0
    assert np.isnan(got[unseen]).all()  # no cloud-free look: missing, not dark
    assert np.isnan(got[np.isnan(rad)]).all()  # a missing radiance stays missing
    seen = ~unseen
    assert np.array_equal(got[seen], rad[seen], equal_nan=True)
